public import ChatTLS
public import ChatWire
public import Logging
public import NIOCore
public import NIOPosix
public import ServiceLifecycle
internal import Synchronization

/// A connection closed as it was accepted, for one of chatd's limits.
struct ConnectionRefused: Error {
    let reason: ServerStats.Refusal
}

/// The RPC server: accepts TLS connections, speaks chat/1 on each, and dispatches calls to the router's handlers.
/// A `Service`: it runs until graceful shutdown, then drains (GOAWAY, in-flight calls finish, server streams end with
/// UNAVAILABLE) and returns when every connection has closed.
public final class ChatServer: Service, Sendable {
    /// Where and how to listen.
    public struct Configuration: Sendable {
        /// The address to bind, e.g. `127.0.0.1`.
        public var host: String
        /// The port; 0 picks a free one.
        public var port: Int
        /// The TLS context (server role).
        public var tls: TLSContext
        /// Settings and limits of each connection.
        public var connection: ServerConnectionStateMachine.Configuration
        /// How long in-flight calls may run after a drain starts.
        public var drainGrace: TimeAmount
        /// How long calls in flight may run after a connection reached its maximum age (gRFC A9's
        /// MAX_CONNECTION_AGE_GRACE); server streams then end with UNAVAILABLE and where to resume.
        public var maxAgeGrace: TimeAmount
        /// The maximum age is spread by up to this fraction either way (gRFC A9 suggests ±10%), so that
        /// connections opened together do not all reconnect together.
        public var maxAgeJitter: Double
        /// How long a client may take, after the TLS handshake, to send its preface and SETTINGS.
        public var prefaceTimeout: TimeAmount
        /// Outbound and inbound bytes a stream and a connection may hold, and queued control frames.
        public var budget: OutboundBudget
        /// How long any write waits for a client that does not read before the call ends RESOURCE_EXHAUSTED (a
        /// write may ask for another limit).
        public var stallLimit: Duration
        /// Connections open at once; more are closed as they are accepted.
        public var maxConnections: Int
        /// Connections still in the TLS handshake at once; more are closed as they are accepted.
        public var maxHandshakingConnections: Int
        /// NIO's write-buffer water marks: above `high` bytes not yet written to the socket the channel is not
        /// writable and no DATA is queued to it until it is back under `low`.
        public var writeBufferWaterMark: ChannelOptions.Types.WriteBufferWaterMark
        /// Makes a server span per call (and, through the pool, one per database round trip); nil: no tracing.
        public var tracing: CallTracing?

        /// chatd's defaults: `init` applies them, and the command line shows them as its flags' defaults.
        public enum Defaults {
            public static let drainGrace = TimeAmount.seconds(30)
            public static let maxAgeGrace = TimeAmount.seconds(60)
            public static let stallLimit = Duration.seconds(30)
            public static let maxConnections = 10_000
            public static let maxHandshakingConnections = 256
        }

        /// Creates a configuration with chatd's defaults.
        public init(host: String, port: Int, tls: TLSContext) {
            self.host = host
            self.port = port
            self.tls = tls
            self.connection = .init()
            self.drainGrace = Defaults.drainGrace
            self.maxAgeGrace = Defaults.maxAgeGrace
            self.maxAgeJitter = 0.1
            self.prefaceTimeout = .seconds(10)
            self.budget = OutboundBudget()
            self.stallLimit = Defaults.stallLimit
            self.maxConnections = Defaults.maxConnections
            self.maxHandshakingConnections = Defaults.maxHandshakingConnections
            self.writeBufferWaterMark = .init(low: 64 * 1024, high: 256 * 1024)
        }

        var handler: ServerConnectionHandler.Configuration {
            .init(
                connection: self.connection,
                budget: self.budget,
                stallLimit: self.stallLimit,
                drainGrace: self.drainGrace,
                maxAgeGrace: self.maxAgeGrace,
                maxAgeJitter: self.maxAgeJitter,
                prefaceTimeout: self.prefaceTimeout
            )
        }
    }

    /// What the server holds and has refused, live.
    public let stats = ServerStats()

    private let configuration: Configuration
    private let router: Router
    private let executor: CallExecutor
    private let logger: Logger
    private let group: MultiThreadedEventLoopGroup
    private let callIDs = CallIDGenerator()
    private let state = Mutex<State>(State())
    private let metrics: RPCMetrics?
    /// The TLS context new connections get; `replaceTLS` swaps it (open connections keep theirs).
    private let tls: Mutex<TLSContext>

    private struct State {
        var channel: (any Channel)?
        var connections: [ObjectIdentifier: (any Channel, NIOLoopBound<ServerConnectionHandler>)] = [:]
        var draining = false
    }

    /// Creates a server; `start()` or `run()` binds it.
    public init(
        configuration: Configuration,
        router: Router,
        interceptors: [any ServerInterceptor] = [],
        group: MultiThreadedEventLoopGroup,
        logger: Logger,
        metrics: RPCMetrics? = nil
    ) {
        self.configuration = configuration
        self.router = router
        self.executor = CallExecutor(interceptors: interceptors, tracing: configuration.tracing)
        self.group = group
        self.logger = logger
        self.metrics = metrics
        self.tls = Mutex(configuration.tls)
    }

    /// Gives new connections another certificate and key (a rotation): connections open now keep the pair they
    /// were accepted with, streams included.
    public func replaceTLS(_ context: TLSContext) {
        self.tls.withLock { $0 = context }
    }

    /// The TLS context a connection accepted now gets.
    public var currentTLS: TLSContext { self.tls.withLock { $0 } }

    /// True once `drain()` began: the server takes no new connections (readiness reports it).
    public var isDraining: Bool { self.state.withLock { $0.draining } }

    /// Binds and starts accepting connections.
    ///
    /// - Returns: the bound port.
    @discardableResult
    public func start() async throws -> Int {
        let configuration = self.configuration
        let router = self.router
        let executor = self.executor
        let logger = self.logger
        let metrics = self.metrics
        let callIDs = self.callIDs
        let stats = self.stats
        let channel = try await ServerBootstrap(group: self.group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 1024)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.writeBufferWaterMark, value: configuration.writeBufferWaterMark)
            .childChannelInitializer { [weak self] channel in
                if let refusal = stats.admit(
                    maxConnections: configuration.maxConnections,
                    maxHandshaking: configuration.maxHandshakingConnections
                ) {
                    logger.debug("connection refused", metadata: ["reason": "\(refusal)"])
                    return channel.eventLoop.makeFailedFuture(ConnectionRefused(reason: refusal))
                }
                return channel.eventLoop.makeCompletedFuture {
                    let handler = ServerConnectionHandler(
                        configuration: configuration.handler,
                        router: router,
                        executor: executor,
                        logger: logger,
                        callIDs: callIDs,
                        stats: stats,
                        metrics: metrics
                    )
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(TLSHandler(context: self?.currentTLS ?? configuration.tls))
                    try sync.addHandler(
                        ByteToMessageHandler(
                            FrameDecoder(
                                maxFrameSize: configuration.connection.local.maxFrameSize,
                                expectsPreface: true
                            )
                        )
                    )
                    try sync.addHandler(handler)
                    self?.register(channel, NIOLoopBound(handler, eventLoop: channel.eventLoop))
                }
            }
            .bind(host: configuration.host, port: configuration.port)
            .get()
        self.state.withLock { $0.channel = channel }
        let port = channel.localAddress?.port ?? configuration.port
        self.logger.info("listening", metadata: ["server.host": "\(configuration.host)", "server.port": "\(port)"])
        return port
    }

    private func register(_ channel: any Channel, _ handler: NIOLoopBound<ServerConnectionHandler>) {
        let id = ObjectIdentifier(channel)
        let draining = self.state.withLock { state in
            state.connections[id] = (channel, handler)
            return state.draining
        }
        if draining {
            channel.eventLoop.execute { handler.value.drain() }
        }
        channel.closeFuture.whenComplete { [weak self] _ in
            _ = self?.state.withLock { $0.connections.removeValue(forKey: id) }
        }
    }

    /// The number of open connections.
    public var connectionCount: Int { self.state.withLock { $0.connections.count } }

    /// Stops accepting, drains every connection, and returns when all have closed.
    public func drain() async {
        let (listener, connections) = self.state.withLock { state in
            state.draining = true
            return (state.channel, Array(state.connections.values))
        }
        try? await listener?.close()
        await Self.drain(connections)
        self.logger.info("drained")
    }

    /// Drains every current connection gracefully (GOAWAY; calls in flight finish) while still accepting new ones:
    /// clients reconnect, which rebalances them across instances behind a load balancer.
    public func recycleConnections() async {
        await Self.drain(self.state.withLock { Array($0.connections.values) })
    }

    /// Drains each connection on its event loop and waits until all have closed.
    private static func drain(_ connections: [(any Channel, NIOLoopBound<ServerConnectionHandler>)]) async {
        for (channel, handler) in connections {
            channel.eventLoop.execute { handler.value.drain() }
        }
        for (channel, _) in connections {
            try? await channel.closeFuture.get()
        }
    }

    /// Runs until graceful shutdown, then drains.
    public func run() async throws {
        try await self.start()
        try? await gracefulShutdown()
        await self.drain()
    }
}
