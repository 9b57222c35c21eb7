import ChatWire
import NIOCore
import Testing

private typealias Client = ClientConnectionStateMachine

private let local = ChatSettings.client

private func client(_ server: [Setting] = []) -> Client {
    var machine = Client(local: local)
    _ = machine.frameReceived(.settings(server))
    return machine
}

private func envelope(_ size: Int) -> ByteBuffer {
    var buffer = ByteBuffer()
    buffer.writeInteger(UInt8(0))
    buffer.writeInteger(UInt32(size))
    buffer.writeRepeatingByte(0x61, count: size)
    return buffer
}

private func opened(_ output: Client.Output) -> [StreamID] {
    output.frames.compactMap { if case .headers(let id, _) = $0 { id } else { nil } }
}

@Suite("Client connection state machine")
struct ClientConnectionStateMachineTests {
    @Test("SETTINGS is acknowledged; calls beyond MAX_CONCURRENT_STREAMS wait and open as streams end")
    func queueing() {
        var machine = Client(local: local)
        let ack = machine.frameReceived(.settings([Setting(id: ChatSettings.ID.maxConcurrentStreams, value: 2)]))
        #expect(ack.frames == [.settingsAck])
        #expect(opened(machine.startCall(1, header: ByteBuffer(), request: envelope(1))) == [1])
        #expect(opened(machine.startCall(2, header: ByteBuffer(), request: envelope(1))) == [3])
        #expect(opened(machine.startCall(3, header: ByteBuffer(), request: envelope(1))).isEmpty)
        #expect(machine.queuedCalls == 1)
        let ended = machine.frameReceived(.trailers(stream: 1, payload: ByteBuffer(bytes: [0x08, 0x00])))
        #expect(ended.ended.map(\.token) == [1])
        #expect(opened(ended) == [5])
        #expect(machine.openStreams == 2 && machine.queuedCalls == 0)
    }

    @Test("a request larger than the window goes out as credit arrives, END_STREAM on its last bytes")
    func requestWithinWindows() {
        var machine = client()
        let first = machine.startCall(1, header: ByteBuffer(), request: envelope(100_000))
        let sent = first.frames.reduce(0) { if case .data(_, let p, _) = $1 { $0 + p.readableBytes } else { $0 } }
        #expect(sent == 65_535)
        #expect(!first.frames.contains { if case .data(_, _, true) = $0 { true } else { false } })
        _ = machine.frameReceived(.windowUpdate(stream: 0, increment: 50_000))
        let rest = machine.frameReceived(.windowUpdate(stream: 1, increment: 50_000))
        let more = rest.frames.reduce(0) { if case .data(_, let p, _) = $1 { $0 + p.readableBytes } else { $0 } }
        #expect(more == 100_005 - 65_535)
        #expect(rest.frames.last.map { if case .data(1, _, true) = $0 { true } else { false } } == true)
    }

    @Test("GOAWAY: streams above the last id and queued calls are not processed; the connection closes when idle")
    func goAway() {
        var machine = client([Setting(id: ChatSettings.ID.maxConcurrentStreams, value: 2)])
        _ = machine.startCall(1, header: ByteBuffer(), request: envelope(1))
        _ = machine.startCall(2, header: ByteBuffer(), request: envelope(1))
        _ = machine.startCall(3, header: ByteBuffer(), request: envelope(1))
        let away = machine.frameReceived(.goAway(lastStream: 1, code: .noError, debug: "draining"))
        #expect(machine.isGoingAway && !away.close)
        #expect(
            away.ended.map(\.token) == [2, 3]
                && away.ended.allSatisfy { if case .notProcessed = $0.ending { true } else { false } }
        )
        let refused = machine.startCall(4, header: ByteBuffer(), request: envelope(1))
        #expect(refused.ended.map(\.token) == [4])
        let last = machine.frameReceived(.trailers(stream: 1, payload: ByteBuffer(bytes: [0x08, 0x00])))
        #expect(last.close && machine.isClosed)
    }

    @Test("credit: consumed bytes go back in quarter windows; a message larger than the window is prepaid")
    func credit() {
        var machine = client()
        _ = machine.startCall(1, header: ByteBuffer(), request: envelope(1))
        let small = machine.frameReceived(.data(stream: 1, payload: envelope(1_000), endStream: false))
        #expect(small.messages.count == 1 && small.frames.isEmpty)
        #expect(machine.consumed(1, bytes: 1_005).frames.isEmpty)
        #expect(machine.consumed(1, bytes: 64 * 1024).frames == [.windowUpdate(stream: 1, increment: 66_541)])
        // A 1 MiB message: its partial bytes are credited as they come, or it could never complete.
        var big = envelope(1 << 20)
        let part = big.readSlice(length: 16_384)!
        let prepaid = machine.frameReceived(.data(stream: 1, payload: part, endStream: false))
        #expect(prepaid.frames == [.windowUpdate(stream: 1, increment: 16_384)])
        #expect(prepaid.messages.isEmpty)
    }

    @Test("a response over MAX_MESSAGE_SIZE: CANCEL and the call ends too large")
    func tooLarge() {
        var machine = client()
        _ = machine.startCall(1, header: ByteBuffer(), request: envelope(1))
        var prefix = ByteBuffer()
        prefix.writeInteger(UInt8(0))
        prefix.writeInteger(UInt32(5 << 20))
        let output = machine.frameReceived(.data(stream: 1, payload: prefix, endStream: false))
        #expect(output.frames == [.cancel(stream: 1, code: .cancel)])
        #expect(output.ended.count == 1 && { if case .tooLarge = output.ended[0].ending { true } else { false } }())
    }

    @Test("the client closes: CANCEL for open calls, queued ones end too, and the connection closes")
    func closeRequested() {
        var machine = client([Setting(id: ChatSettings.ID.maxConcurrentStreams, value: 1)])
        _ = machine.startCall(1, header: ByteBuffer(), request: envelope(1))
        _ = machine.startCall(2, header: ByteBuffer(), request: envelope(1))
        let output = machine.closeRequested()
        #expect(output.frames == [.cancel(stream: 1, code: .cancel)])
        #expect(Set(output.ended.map(\.token)) == [1, 2] && output.close)
    }

    @Test("the connection closes under open and queued calls: interrupted, and not processed")
    func connectionClosed() {
        var machine = client([Setting(id: ChatSettings.ID.maxConcurrentStreams, value: 1)])
        _ = machine.startCall(1, header: ByteBuffer(), request: envelope(1))
        _ = machine.startCall(2, header: ByteBuffer(), request: envelope(1))
        let output = machine.connectionClosed()
        #expect(output.ended.count == 2)
        #expect({ if case .interrupted = output.ended[0].ending { true } else { false } }())
        #expect({ if case .notProcessed = output.ended[1].ending { true } else { false } }())
        #expect(machine.startCall(3, header: ByteBuffer(), request: envelope(1)).ended.map(\.token) == [3])
    }
}
