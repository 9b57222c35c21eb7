internal import Logging
public import NIOCore
internal import NIOHTTP1
public import NIOPosix
public import ServiceLifecycle
internal import Synchronization

/// The admin HTTP listener, on its own address (loopback unless configured otherwise): `GET /healthz` (the process
/// is up), `GET /readyz` (200 or 503 with the reasons, one a line) and `GET /metrics` (Prometheus text format). It
/// has its own small limits: a few connections at once, at most 8 KiB from a client before each answer, no request
/// bodies, and an idle timeout.
public final class AdminServer: Service, Sendable {
    /// Where it listens and its limits.
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        /// Connections open at once; more are closed as accepted.
        public var maxConnections: Int = 16
        /// A connection with no request for this long is closed.
        public var idleTimeout: TimeAmount = .seconds(30)
        /// Bytes a connection may send before the answer to its request goes out (a request is a GET line and a few
        /// headers); more and it is closed. NIO's HTTP parser sets no limit of its own.
        public var maxRequestBytes: Int = 8 * 1024

        /// Listens on `host:port` (port 0: one the kernel picks).
        public init(host: String = "127.0.0.1", port: Int) {
            self.host = host
            self.port = port
        }
    }

    /// What the listener answers with.
    struct Endpoints: Sendable {
        let readiness: @Sendable () async -> Readiness.Report
        let metrics: @Sendable () -> String
    }

    let configuration: Configuration
    let endpoints: Endpoints
    let group: MultiThreadedEventLoopGroup
    let logger: Logger
    private let channel = Mutex<(any Channel)?>(nil)
    private let open = Atomic<Int>(0)

    init(configuration: Configuration, endpoints: Endpoints, group: MultiThreadedEventLoopGroup, logger: Logger) {
        self.configuration = configuration
        self.endpoints = endpoints
        self.group = group
        self.logger = logger
    }

    /// Admin connections open now.
    public var openConnections: Int { self.open.load(ordering: .relaxed) }

    /// Binds and starts answering; returns the bound port.
    @discardableResult
    public func start() async throws -> Int {
        let endpoints = self.endpoints
        let configuration = self.configuration
        let channel = try await ServerBootstrap(group: self.group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [self] channel in
                guard self.open.add(1, ordering: .relaxed).newValue <= configuration.maxConnections else {
                    self.open.subtract(1, ordering: .relaxed)
                    return channel.close()
                }
                channel.closeFuture.whenComplete { _ in self.open.subtract(1, ordering: .relaxed) }
                let bound = channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        AdminRequestBound(maxBytes: configuration.maxRequestBytes)
                    )
                }
                return bound.flatMap {
                    channel.pipeline.configureHTTPServerPipeline(withErrorHandling: true)
                }.flatMap {
                    channel.eventLoop.makeCompletedFuture {
                        let sync = channel.pipeline.syncOperations
                        try sync.addHandler(IdleStateHandler(allTimeout: configuration.idleTimeout))
                        try sync.addHandler(AdminHTTPHandler(endpoints: endpoints))
                    }
                }
            }
            .bind(host: configuration.host, port: configuration.port)
            .get()
        self.channel.withLock { $0 = channel }
        let port = channel.localAddress?.port ?? configuration.port
        self.logger.info(
            "admin listening",
            metadata: ["admin.host": "\(configuration.host)", "admin.port": "\(port)"]
        )
        return port
    }

    /// Stops listening (open admin connections close with it).
    public func stop() async {
        let channel = self.channel.withLock { $0 }
        try? await channel?.close()
    }

    /// Serves until graceful shutdown; it is stopped after the RPC server, so `/readyz` says "draining" meanwhile.
    public func run() async throws {
        try await self.start()
        try? await gracefulShutdown()
        await self.stop()
    }
}

/// One admin connection: a request head in, a response out; bodies are refused.
final class AdminHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let endpoints: AdminServer.Endpoints
    private var head: HTTPRequestHead?
    private var bodyBytes = 0

    init(endpoints: AdminServer.Endpoints) {
        self.endpoints = endpoints
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            self.bodyBytes = 0
        case .body(let body):
            self.bodyBytes += body.readableBytes
        case .end:
            guard let head = self.head else { return }
            self.head = nil
            self.respond(to: head, context: context)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let keepAlive = head.isKeepAlive
        guard head.method == .GET || head.method == .HEAD else {
            self.write(.methodNotAllowed, "only GET\n", keepAlive: false, head: head, context: context)
            return
        }
        guard self.bodyBytes == 0 else {
            self.write(.payloadTooLarge, "no request body\n", keepAlive: false, head: head, context: context)
            return
        }
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        switch path {
        case "/healthz":
            self.write(.ok, "ok\n", keepAlive: keepAlive, head: head, context: context)
        case "/metrics":
            self.write(
                .ok,
                self.endpoints.metrics(),
                contentType: "text/plain; version=0.0.4; charset=utf-8",
                keepAlive: keepAlive,
                head: head,
                context: context
            )
        case "/readyz":
            let readiness = self.endpoints.readiness
            let loop = context.eventLoop
            let bound = NIOLoopBound((self, context), eventLoop: loop)
            Task {
                let report = await readiness()
                loop.execute {
                    let (handler, context) = bound.value
                    handler.write(
                        report.ready ? .ok : .serviceUnavailable,
                        report.ready ? "ready\n" : report.problems.joined(separator: "\n") + "\n",
                        keepAlive: keepAlive,
                        head: head,
                        context: context
                    )
                }
            }
        default:
            self.write(
                .notFound,
                "not found: /healthz, /readyz, /metrics\n",
                keepAlive: keepAlive,
                head: head,
                context: context
            )
        }
    }

    private func write(
        _ status: HTTPResponseStatus,
        _ body: String,
        contentType: String = "text/plain; charset=utf-8",
        keepAlive: Bool,
        head request: HTTPRequestHead,
        context: ChannelHandlerContext
    ) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: String(body.utf8.count))
        headers.add(name: "Cache-Control", value: "no-store")
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        let head = HTTPResponseHead(version: request.version, status: status, headers: headers)
        context.write(self.wrapOutboundOut(.head(head)), promise: nil)
        if request.method != .HEAD {
            context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        }
        let done = context.writeAndFlush(self.wrapOutboundOut(.end(nil)))
        if !keepAlive { done.whenComplete { _ in context.close(promise: nil) } }
    }
}

/// Below the HTTP parser: closes a connection that sends more than `maxBytes` before the answer to its request is
/// written (each write toward the client starts the count again), so a request head cannot grow without end.
final class AdminRequestBound: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    private let maxBytes: Int
    private var received = 0

    init(maxBytes: Int) {
        self.maxBytes = maxBytes
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.received += self.unwrapInboundIn(data).readableBytes
        guard self.received <= self.maxBytes else {
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        self.received = 0
        context.write(data, promise: promise)
    }
}
