// Frames from the network through the decoder, the connection state machine and the outbound scheduler: whatever
// the bytes, no trap (a precondition such as "sent beyond the window" would be a finding).
import ChatWire
import FuzzDriver
import Glibc
import NIOCore

func fuzzFrames(_ bytes: UnsafeRawBufferPointer) -> CInt {
    guard let first = bytes.first else { return 0 }
    var decoder = FrameDecoder(maxFrameSize: 16_384, expectsPreface: first & 1 == 1)
    var now = NIODeadline.uptimeNanoseconds(1_000_000_000)
    var machine = ServerConnectionStateMachine(now: now)
    var scheduler = OutboundScheduler(budget: OutboundBudget(perStream: 4_096, perConnection: 16_384))
    var buffer = ByteBuffer(bytes: bytes.dropFirst())
    while true {
        let frame: Frame?
        do {
            frame = try decoder.decode(buffer: &buffer)
        } catch {
            _ = machine.connectionError(error as? WireError ?? WireError(.protocolError, "decoder"))
            return 0
        }
        guard let frame else { return 0 }
        now = now + .milliseconds(Int64(first >> 1))
        switch machine.frameReceived(frame, now: now) {
        case .openStream(let id, _):
            scheduler.enqueue(id, ByteBuffer(repeating: 0x61, count: 3_000 + Int(first) * 16))
            scheduler.finish(id, trailers: ByteBuffer(bytes: [0x08, 0x00]))
        case .rejectStream(let id, _):
            scheduler.finish(id, trailers: ByteBuffer(bytes: [0x08, 0x08]))
        case .streamData(let id, let payload, _, _):
            _ = machine.requestConsumed(id, bytes: payload.readableBytes)
        case .cancelStream(let id, _):
            scheduler.remove(id)
            _ = machine.streamClosed(id, now: now)
        case .closeConnection:
            return 0
        case .none, .send, .windowOpened, .maxAgeReached:
            break
        }
        if case .closeConnection = machine.timerFired(now: now) { return 0 }
        let pull = scheduler.pull(&machine, maxDataBytes: 8_192)
        for id in pull.completed {
            scheduler.remove(id)
            if case .closeConnection = machine.streamClosed(id, now: now) { return 0 }
        }
    }
}

/// libFuzzer's entry for one input (its own `main` refers to it; ours runs its driver).
@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    fuzzFrames(fuzzBytes(data, count))
}

exit(runFuzzer(testOneInput))
