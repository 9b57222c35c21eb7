import ChatProto
import ChatTLS
import ChatWire
import NIOCore
import NIOPosix
import Synchronization

/// A client that speaks raw frames over TLS, for hostile-peer tests: it sends whatever it is told and records every
/// frame the server sends, and when the connection closes.
final class RawPeer: Sendable {
    let channel: any Channel
    private let frames: AsyncStream<Frame>

    /// Connects and completes the TLS handshake; sends nothing of chat/1 yet.
    ///
    /// - Parameter receiveBuffer: SO_RCVBUF for the socket, so that a peer that stops reading fills it soon.
    init(port: Int, group: any EventLoopGroup, receiveBuffer: Int? = nil) async throws {
        let (frames, continuation) = AsyncStream.makeStream(of: Frame.self)
        self.frames = frames
        let ready = group.next().makePromise(of: Void.self)
        let tls = try TestCertificates.client()
        var bootstrap = ClientBootstrap(group: group)
        if let receiveBuffer {
            bootstrap = bootstrap.channelOption(.socketOption(.so_rcvbuf), value: SocketOptionValue(receiveBuffer))
        }
        self.channel =
            try await bootstrap
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(TLSHandler(context: tls, serverName: "127.0.0.1"))
                    try sync.addHandler(
                        ByteToMessageHandler(FrameDecoder(maxFrameSize: 1 << 24 - 1, expectsPreface: false))
                    )
                    try sync.addHandler(FrameCollector(continuation: continuation, ready: ready))
                }
            }
            .connect(host: "127.0.0.1", port: port)
            .get()
        try await ready.futureResult.get()
    }

    /// Sends raw bytes.
    func send(_ bytes: ByteBuffer) async throws {
        try await self.channel.writeAndFlush(bytes)
    }

    /// Sends frames.
    func send(_ frames: [Frame]) async throws {
        var buffer = ByteBuffer()
        for frame in frames { buffer.writeFrame(frame) }
        try await self.send(buffer)
    }

    /// The preface and an empty SETTINGS.
    func greet() async throws {
        var buffer = ByteBuffer(bytes: WireConstants.preface)
        buffer.writeFrame(.settings([]))
        try await self.send(buffer)
    }

    /// A SETTINGS frame with these entries, after the preface.
    func greet(_ settings: [Setting]) async throws {
        var buffer = ByteBuffer(bytes: WireConstants.preface)
        buffer.writeFrame(.settings(settings))
        try await self.send(buffer)
    }

    /// Windows of 2³¹−1 for every stream and the connection: the peer asks the server to send without limit.
    static let hugeWindows = [
        Setting(id: ChatSettings.ID.initialWindowSize, value: UInt32(WireConstants.maxWindow)),
        Setting(id: ChatSettings.ID.connectionWindow, value: UInt32(WireConstants.maxWindow)),
    ]

    /// Stops reading the socket: what the server sends piles up in the kernel's buffers, then in the server's.
    func stopReading() async throws {
        try await self.channel.setOption(.autoRead, value: false)
    }

    /// Reads again.
    func resumeReading() async throws {
        try await self.channel.setOption(.autoRead, value: true)
        self.channel.read()
    }

    /// Closes the TCP connection without TLS close_notify (an unclean shutdown).
    func abort() async throws {
        // A connection the server closed already (its preface timeout, say) has nothing left to abort.
        guard self.channel.isActive, let tls = try? await self.channel.pipeline.handler(type: TLSHandler.self).get()
        else { return }
        try? await self.channel.pipeline.removeHandler(tls).get()
        try? await self.channel.close()
    }

    /// Every frame the server sends until it closes the connection (at most `limit` seconds).
    func collectUntilClosed(limit: Duration = .seconds(10)) async throws -> [Frame] {
        try await withThrowingTaskGroup(of: [Frame]?.self) { group in
            group.addTask {
                var all: [Frame] = []
                for await frame in self.frames { all.append(frame) }
                return all
            }
            group.addTask {
                try await Task.sleep(for: limit)
                return nil
            }
            let first = try await group.next()!
            group.cancelAll()
            guard let frames = first else {
                struct StillOpen: Error {}
                throw StillOpen()
            }
            return frames
        }
    }

    /// Frames until one matches `predicate` (or the connection closes).
    func next(where predicate: (Frame) -> Bool) async -> Frame? {
        for await frame in self.frames where predicate(frame) {
            return frame
        }
        return nil
    }

    /// A HEADERS frame for `method` on `stream`.
    static func headers(_ stream: StreamID, method: String, timeoutMicros: UInt64 = 0) throws -> Frame {
        let header = try CallHeader(method: method, timeoutUs: timeoutMicros).serializedBytes()
        return .headers(stream: stream, payload: ByteBuffer(bytes: header))
    }

    /// A DATA frame with one request envelope and END_STREAM.
    static func request(_ stream: StreamID, _ message: some ProtoMessage) throws -> Frame {
        var payload = ByteBuffer()
        try payload.writeEnvelope(message)
        return .data(stream: stream, payload: payload, endStream: true)
    }
}

/// Feeds decoded frames to a stream and finishes it when the connection closes.
final class FrameCollector: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = Frame
    let continuation: AsyncStream<Frame>.Continuation
    let ready: EventLoopPromise<Void>

    init(continuation: AsyncStream<Frame>.Continuation, ready: EventLoopPromise<Void>) {
        self.continuation = continuation
        self.ready = ready
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is TLSEvent { self.ready.succeed() }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.continuation.yield(self.unwrapInboundIn(data))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        struct Closed: Error {}
        self.ready.fail(Closed())
        self.continuation.finish()
    }
}

/// The GOAWAY among `frames`, if any.
func goAway(in frames: [Frame]) -> (code: ErrorCode, debug: String)? {
    for frame in frames {
        if case .goAway(_, let code, let debug) = frame { return (code, debug) }
    }
    return nil
}
