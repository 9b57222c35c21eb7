import ChatProto
import ChatTLS
import ChatTestSupport
import ChatWire
import Logging
import NIOCore
import NIOEmbedded
import Synchronization
import Testing

@testable import ChatRPC

/// Handlers for the harness's calls.
private enum Routes {
    /// Streams `afterSeq` messages of 1 KiB.
    static let stream = ChatMethod<WatchThreadRequest, Message>(path: "/t.T/Stream", kind: .serverStreaming)
    /// Waits until the test opens its gate (or the call is cancelled).
    static let gated = ChatMethod<WatchThreadRequest, Message>(path: "/t.T/Gated", kind: .unary)
    /// Streams until cancelled, one message per gate opening.
    static let gatedStream = ChatMethod<WatchThreadRequest, Message>(path: "/t.T/GatedStream", kind: .serverStreaming)
}

/// A gate a handler waits on; the test opens it.
private final class Gate: Sendable {
    private let waiters = Mutex<[CheckedContinuation<Void, Never>]>([])
    private let opened = Mutex(false)

    func wait() async throws {
        await withCheckedContinuation { continuation in
            let open = self.opened.withLock { $0 }
            if open {
                continuation.resume()
            } else {
                self.waiters.withLock { $0.append(continuation) }
            }
        }
        try Task.checkCancellation()
    }

    func open() {
        self.opened.withLock { $0 = true }
        for waiter in self.waiters.withLock({ waiters in
            defer { waiters = [] }; return waiters
        }) { waiter.resume() }
    }

    var waiting: Int { self.waiters.withLock { $0.count } }
}

/// One `ServerConnectionHandler` on a testing channel: no sockets, no TLS, virtual time. Frames go in as values;
/// what the handler writes is decoded back into frames.
private final class Harness {
    let channel: NIOAsyncTestingChannel
    let loop: NIOAsyncTestingEventLoop
    let stats = ServerStats()
    let gate = Gate()
    private var decoder = FrameDecoder(maxFrameSize: 1 << 24 - 1, expectsPreface: false)
    private var pending = ByteBuffer()

    init(
        peer settings: [Setting] = [],
        _ configure: (inout ChatServer.Configuration) -> Void = { _ in }
    ) async throws {
        self.loop = NIOAsyncTestingEventLoop()
        self.channel = NIOAsyncTestingChannel(loop: self.loop)
        let gate = self.gate
        var router = Router()
        router.register(Routes.stream) { request, _, writer in
            let body = String(repeating: "m", count: 1_024)
            for seq in 1...max(1, request.afterSeq) { try await writer.write(Message(seq: seq, body: body)) }
        }
        router.register(Routes.gated) { _, _ in
            try await gate.wait()
            return Message(body: "opened")
        }
        router.register(Routes.gatedStream) { _, _, writer in
            while true {
                try await gate.wait()
                try await writer.write(Message(body: "tick"))
            }
        }
        var configuration = ChatServer.Configuration(host: "127.0.0.1", port: 0, tls: try TestCertificates.server())
        configure(&configuration)
        let handler = ServerConnectionHandler(
            configuration: configuration.handler,
            router: router,
            executor: CallExecutor(interceptors: []),
            logger: Logger(label: "handler-test"),
            callIDs: CallIDGenerator(),
            stats: self.stats
        )
        try await self.channel.pipeline.addHandler(handler)
        try await self.channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1))
        self.channel.pipeline.fireUserInboundEventTriggered(
            TLSEvent.handshakeCompleted(applicationProtocol: "chat/1", peerIdentity: nil)
        )
        try await self.send(.settings(settings))
    }

    func send(_ frames: Frame...) async throws {
        for frame in frames { try await self.channel.writeInbound(frame) }
    }

    func call(_ stream: StreamID, _ method: String, _ request: some ProtoMessage) async throws {
        let header = try CallHeader(method: method).serializedBytes()
        var payload = ByteBuffer()
        try payload.writeEnvelope(request)
        try await self.send(
            .headers(stream: stream, payload: ByteBuffer(bytes: header)),
            .data(stream: stream, payload: payload, endStream: true)
        )
    }

    /// Every frame written since the last call.
    func written() async throws -> [Frame] {
        while let buffer = try await self.channel.readOutbound(as: ByteBuffer.self) {
            var buffer = buffer
            self.pending.writeBuffer(&buffer)
        }
        var frames: [Frame] = []
        while let frame = try self.decoder.decode(buffer: &self.pending) { frames.append(frame) }
        return frames
    }

    /// The socket stops draining, or drains again.
    func setWritable(_ writable: Bool) async {
        self.channel.isWritable = writable
        self.channel.pipeline.fireChannelWritabilityChanged()
        await self.loop.run()
    }

    /// What SIGTERM does to the connection (the handler is not kept: the tests count live handlers).
    func drain() async throws {
        let handler = try await self.channel.pipeline.handler(type: ServerConnectionHandler.self).get()
        try await self.loop.submit { handler.drain() }.get()
    }

    /// Closes the channel if it is still open, lets the calls end, and stops the loop: nothing of the harness is
    /// left behind (the sanitizer run checks).
    func finish() async throws {
        self.gate.open()
        if self.channel.isActive { try await self.channel.close() }
        try await self.until("every handler is freed") { self.stats.liveConnectionHandlers == 0 }
        await self.loop.shutdownGracefully()
    }

    func status(_ frames: [Frame], _ stream: StreamID) throws -> CallStatus? {
        for case .trailers(stream, let payload) in frames {
            return try payload.withUnsafeReadableBytes { try CallStatus(serializedBytes: $0) }
        }
        return nil
    }
}

private func data(_ frames: [Frame], _ stream: StreamID) -> Int {
    frames.reduce(0) { if case .data(stream, let p, _) = $1 { $0 + p.readableBytes } else { $0 } }
}

private struct GaveUp: Error {
    let what: String
}

extension Harness {
    /// Runs what is due on the testing loop (the calls' tasks run there) until the condition holds; virtual time
    /// does not move.
    func until(_ what: String, _ condition: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(20)
        while true {
            await self.loop.run()
            if try await condition() { return }
            guard ContinuousClock.now < deadline else { throw GaveUp(what: what) }
            try await Task.sleep(for: .milliseconds(2))
        }
    }
}

/// Frames collected from the harness, and the stream's messages reassembled.
private struct Collected {
    var frames: [Frame] = []
    var deframer = MessageDeframer(maxMessageSize: 1 << 20)
    var messages = 0

    mutating func add(_ new: [Frame], stream: StreamID) throws {
        self.frames += new
        for case .data(stream, let payload, _) in new {
            self.deframer.append(payload)
            while try self.deframer.nextMessage() != nil { self.messages += 1 }
        }
    }
}

@Suite("ServerConnectionHandler on a testing channel: pump, stall, drain, floods (no sockets, virtual time)")
struct ServerConnectionHandlerTests {
    @Test("while the socket does not drain no DATA is written and the handler waits at its budget; then it flows")
    func writability() async throws {
        let harness = try await Harness(peer: RawPeer.hugeWindows)
        await harness.setWritable(false)
        try await harness.call(1, Routes.stream.path, WatchThreadRequest(afterSeq: 2_000))
        let budget = OutboundBudget().perStream
        try await harness.until("the stream fills its budget") { harness.stats.bufferedOutboundBytes >= budget }
        await harness.loop.run()
        #expect(harness.stats.bufferedOutboundBytes < budget + 2_048)
        var collected = Collected()
        try collected.add(try await harness.written(), stream: 1)
        #expect(data(collected.frames, 1) == 0)
        await harness.setWritable(true)
        try await harness.until("the call ends") {
            try collected.add(try await harness.written(), stream: 1)
            return try harness.status(collected.frames, 1) != nil
        }
        #expect(try harness.status(collected.frames, 1)?.code == .ok)
        #expect(collected.messages == 2_000)
        #expect(harness.stats.bufferedOutboundBytes == 0)
        try await harness.finish()
    }

    @Test("stall limit: a write waits, then fails RESOURCE_EXHAUSTED; TRAILERS behind unread data give way to CANCEL")
    func stallThenCancel() async throws {
        let harness = try await Harness(peer: RawPeer.hugeWindows) { $0.stallLimit = .seconds(5) }
        await harness.setWritable(false)
        try await harness.call(1, Routes.stream.path, WatchThreadRequest(afterSeq: 2_000))
        let budget = OutboundBudget().perStream
        try await harness.until("the stream fills its budget") { harness.stats.bufferedOutboundBytes >= budget }
        // The handler's write now waits for room (counted: chat_server_flow_control_waits_total).
        try await harness.until("the write waits") { harness.stats.waitedWrites == 1 }
        await harness.loop.advanceTime(by: .seconds(4))
        #expect(harness.stats.stalledWrites == 0)
        await harness.loop.advanceTime(by: .seconds(1))
        try await harness.until("the write stalls") { harness.stats.stalledWrites == 1 }
        // The status waits behind the queued data; nothing is written while the socket does not drain.
        #expect(try harness.status(try await harness.written(), 1) == nil)
        await harness.loop.advanceTime(by: .seconds(5))
        try await harness.until("the stream is cancelled") { harness.stats.stalledWrites == 2 }
        let frames = try await harness.written()
        #expect(frames.contains(.cancel(stream: 1, code: .cancel)))
        #expect(harness.stats.bufferedOutboundBytes == 0)
        try await harness.finish()
    }

    @Test("drain: GOAWAY and PING; a unary call in flight gets the grace, then is cancelled; the connection closes")
    func drainGrace() async throws {
        let harness = try await Harness { $0.drainGrace = .seconds(10) }
        try await harness.call(1, Routes.gated.path, WatchThreadRequest())
        try await harness.until("the call waits at the gate") { harness.gate.waiting == 1 }
        try await harness.drain()
        let frames = try await harness.written()
        #expect(frames.contains(.goAway(lastStream: WireConstants.maxStreamID, code: .noError, debug: "draining")))
        #expect(frames.contains(.ping(payload: ServerConnectionStateMachine.drainPingPayload, ack: false)))
        await harness.loop.advanceTime(by: .seconds(9))
        #expect(harness.channel.isActive)
        await harness.loop.advanceTime(by: .seconds(1))
        // Cancelled at the end of the grace: the gate's waiter sees the cancellation when it is let go.
        harness.gate.open()
        try await harness.until("the call ends UNAVAILABLE") {
            try harness.status(try await harness.written(), 1)?.code == .unavailable
        }
        await harness.loop.advanceTime(by: .seconds(1))
        try await harness.until("the connection closes") { !harness.channel.isActive }
        try await harness.finish()
    }

    @Test("drain with no call in flight closes at once")
    func drainIdle() async throws {
        let harness = try await Harness()
        try await harness.drain()
        try await harness.until("the connection closes") { !harness.channel.isActive }
        #expect(try await harness.written().contains(.goAway(lastStream: 0, code: .noError, debug: "draining")))
        try await harness.finish()
    }

    @Test("refused streams while the socket does not drain: past the allowance, GOAWAY ENHANCE_YOUR_CALM")
    func refusedStreamFlood() async throws {
        let harness = try await Harness { $0.budget.queuedControlFrames = 50 }
        for index in 0..<100 {
            try await harness.call(StreamID(2 * index + 1), Routes.gated.path, WatchThreadRequest())
        }
        try await harness.until("100 calls wait at the gate") { harness.gate.waiting == 100 }
        await harness.setWritable(false)
        var stream: StreamID = 201
        for _ in 0..<50 {
            try await harness.call(stream, Routes.gated.path, WatchThreadRequest())
            stream += 2
        }
        #expect(harness.channel.isActive)
        _ = try? await harness.call(stream, Routes.gated.path, WatchThreadRequest())
        try await harness.until("the connection closes") { !harness.channel.isActive }
        let frames = try await harness.written()
        #expect(frames.filter { if case .cancel(_, .refusedStream) = $0 { true } else { false } }.count >= 50)
        #expect(goAway(in: frames)?.code == .enhanceYourCalm)
        try await harness.finish()
    }

    @Test("idle timeout and maximum age run on the loop's clock")
    func idleAndAge() async throws {
        let idle = try await Harness { $0.connection.idleTimeout = .seconds(60) }
        await idle.loop.advanceTime(by: .seconds(59))
        #expect(idle.channel.isActive)
        await idle.loop.advanceTime(by: .seconds(2))
        try await idle.until("the idle connection closes") { !idle.channel.isActive }
        #expect(goAway(in: try await idle.written())?.debug == "idle")

        let aged = try await Harness {
            $0.connection.maxAge = .seconds(100)
            $0.maxAgeJitter = 0
            $0.maxAgeGrace = .seconds(30)
            $0.connection.keepaliveInterval = .seconds(3_600)  // no keepalive ping in the way: the timer ticks at 25 s
        }
        try await aged.call(1, Routes.gatedStream.path, WatchThreadRequest())
        try await aged.until("the stream waits at the gate") { aged.gate.waiting == 1 }
        await aged.loop.advanceTime(by: .seconds(99))
        #expect(goAway(in: try await aged.written()) == nil)
        await aged.loop.advanceTime(by: .seconds(1))
        let agedFrames = try await aged.written()
        #expect(goAway(in: agedFrames)?.code == .noError)
        // The stream runs on through the grace, then ends UNAVAILABLE.
        await aged.loop.advanceTime(by: .seconds(29))
        #expect(aged.channel.isActive)
        #expect(try aged.status(try await aged.written(), 1) == nil)
        await aged.loop.advanceTime(by: .seconds(1))
        aged.gate.open()
        try await aged.until("the stream ends UNAVAILABLE") {
            try aged.status(try await aged.written(), 1)?.code == .unavailable
        }
        try await idle.finish()
        try await aged.finish()
    }
}
