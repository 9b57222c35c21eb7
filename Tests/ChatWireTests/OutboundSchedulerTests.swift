import ChatWire
import NIOCore
import Testing

/// A machine whose peer advertised `window` for every stream and the connection.
private func machine(window: UInt32 = 1 << 31 - 1, streams: [StreamID]) -> ServerConnectionStateMachine {
    var machine = activeMachine(
        peer: [
            Setting(id: ChatSettings.ID.initialWindowSize, value: window),
            Setting(id: ChatSettings.ID.connectionWindow, value: max(window, 65_535)),
        ]
    )
    for stream in streams {
        _ = machine.frameReceived(.headers(stream: stream, payload: header()), now: t0)
    }
    return machine
}

private func bytes(_ count: Int, _ value: UInt8 = 0x61) -> ByteBuffer {
    ByteBuffer(repeating: value, count: count)
}

private func dataBytes(_ frames: [Frame], stream: StreamID? = nil) -> Int {
    frames.reduce(0) { total, frame in
        if case .data(let id, let payload, _) = frame, stream == nil || id == stream {
            return total + payload.readableBytes
        }
        return total
    }
}

@Suite("Outbound scheduler: chatd's budgets, whatever window the peer advertises")
struct OutboundSchedulerTests {
    let budget = OutboundBudget(perStream: 1_000, perConnection: 3_000)

    @Test("a stream over its budget has no room; the connection over its budget leaves no stream room")
    func budgets() {
        var scheduler = OutboundScheduler(budget: self.budget)
        #expect(scheduler.hasRoom(1))
        scheduler.enqueue(1, bytes(999))
        #expect(scheduler.hasRoom(1))
        scheduler.enqueue(1, bytes(1))
        #expect(!scheduler.hasRoom(1))
        #expect(scheduler.hasRoom(3))
        scheduler.enqueue(3, bytes(2_000))
        #expect(scheduler.bufferedBytes == 3_000)
        #expect(!scheduler.connectionHasRoom)
        #expect(!scheduler.hasRoom(5))
    }

    @Test("pull sends no more DATA than maxDataBytes (0 while the socket does not drain), then says there is more")
    func sliceAndWritability() {
        var scheduler = OutboundScheduler(budget: self.budget)
        var machine = machine(streams: [1])
        scheduler.enqueue(1, bytes(100_000))
        let blocked = scheduler.pull(&machine, maxDataBytes: 0)
        #expect(blocked.frames.isEmpty && !blocked.reachedLimit)
        let slice = scheduler.pull(&machine, maxDataBytes: 40_000)
        #expect(slice.dataBytes == 40_000 && dataBytes(slice.frames) == 40_000)
        #expect(slice.reachedLimit)
        #expect(
            slice.frames.allSatisfy { if case .data(_, let p, _) = $0 { p.readableBytes <= 16_384 } else { false } }
        )
        #expect(scheduler.bufferedBytes == 60_000)
    }

    @Test("streams take turns, one frame each; TRAILERS follow a stream's last DATA")
    func roundRobinThenTrailers() {
        var scheduler = OutboundScheduler(budget: self.budget)
        var machine = machine(streams: [1, 3])
        scheduler.enqueue(1, bytes(40_000, 1))
        scheduler.enqueue(3, bytes(20_000, 3))
        scheduler.finish(3, trailers: ByteBuffer(bytes: [0x08, 0x00]))
        let pull = scheduler.pull(&machine, maxDataBytes: 1 << 30)
        let order: [String] = pull.frames.map {
            switch $0 {
            case .data(let id, _, _): "D\(id)"
            case .trailers(let id, _): "T\(id)"
            default: "?"
            }
        }
        #expect(order == ["D1", "D3", "D1", "D3", "D1", "T3"])
        #expect(pull.completed == [3])
        #expect(scheduler.bufferedBytes == 0)
    }

    @Test("DATA stops at the peer's window; TRAILERS wait behind it; credit lets both go")
    func windowThenTrailers() {
        var scheduler = OutboundScheduler(budget: self.budget)
        var machine = machine(window: 65_535, streams: [1])
        scheduler.enqueue(1, bytes(70_000))
        scheduler.finish(1, trailers: ByteBuffer(bytes: [0x08, 0x00]))
        let first = scheduler.pull(&machine, maxDataBytes: 1 << 30)
        #expect(first.dataBytes == 65_535 && first.completed.isEmpty && !first.reachedLimit)
        _ = machine.frameReceived(.windowUpdate(stream: 1, increment: 10_000), now: t0)
        _ = machine.frameReceived(.windowUpdate(stream: 0, increment: 10_000), now: t0)
        let second = scheduler.pull(&machine, maxDataBytes: 1 << 30)
        #expect(second.dataBytes == 70_000 - 65_535 && second.completed == [1])
    }

    @Test("TRAILERS of a stream with nothing to send go out even while the socket does not drain")
    func trailersWhileBlocked() {
        var scheduler = OutboundScheduler(budget: self.budget)
        var machine = machine(streams: [1])
        scheduler.finish(1, trailers: ByteBuffer(bytes: [0x08, 0x05]))
        let pull = scheduler.pull(&machine, maxDataBytes: 0)
        #expect(pull.completed == [1] && pull.frames.count == 1)
    }

    @Test("nothing is queued after TRAILERS; discarding and removing free the bytes")
    func discardAndRemove() {
        var scheduler = OutboundScheduler(budget: self.budget)
        scheduler.enqueue(1, bytes(500))
        scheduler.enqueue(3, bytes(700))
        let discarded = scheduler.discardData(1)
        #expect(discarded == 500)
        scheduler.finish(1, trailers: ByteBuffer(bytes: [0x08, 0x04]))
        let accepted = scheduler.enqueue(1, bytes(10))
        #expect(!accepted)
        #expect(scheduler.isFinishing(1))
        let removed = scheduler.remove(3)
        #expect(removed == 700)
        #expect(scheduler.bufferedBytes == 0)
        scheduler.enqueue(5, bytes(10))
        let all = scheduler.removeAll()
        #expect(all == 10)
    }
}

@Suite("Control frames queued for a peer that does not read")
struct ControlFrameAllowanceTests {
    @Test("frames written while the socket drains do not count; past the limit while it does not, refused")
    func allowance() {
        var allowance = ControlFrameAllowance(limit: 3)
        var results: [Bool] = []
        for _ in 0..<100 { results.append(allowance.wrote(1, socketDrains: true)) }
        #expect(results.allSatisfy { $0 })
        results = [
            allowance.wrote(1, socketDrains: false), allowance.wrote(2, socketDrains: false),
            allowance.wrote(1, socketDrains: false),
        ]
        #expect(results == [true, true, false])
        allowance.drained()
        #expect(allowance.queued == 0)
        let afterDrain = allowance.wrote(3, socketDrains: false)
        #expect(afterDrain)
    }
}
