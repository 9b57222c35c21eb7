internal import ChatAuth
internal import ChatProto
public import ChatRPC
public import ChatServices
public import ChatStore
public import CoreMetrics
public import Logging
public import NIOPosix
public import ServiceLifecycle

/// The one place a chatd instance is assembled (grpc-swift-2 keeps one such place too): the pool, the live hub,
/// every service on one router, the interceptors in their order, and the server with its limits, all from one
/// `AppConfiguration`. `chatd serve` runs it; every test that needs a server builds it here, so that what is
/// tested is what ships.
public final class ChatApplication: Sendable {
    /// The configuration it was built from.
    public let configuration: AppConfiguration
    /// The application role's connections.
    public let pool: PGPool
    /// Live delivery: wakes the streams of this instance, tells the others over the bus (NOTIFY or NATS).
    public let hub: LiveHub
    /// The rate limits, this instance's share of them.
    public let limiter: RateLimiter
    /// The RPC server (not listening until started or run).
    public let server: ChatServer
    /// The metrics registry `/metrics` renders.
    public let metrics: ServerMetrics
    /// The admin listener, when configured.
    public let admin: AdminServer?
    /// What `/readyz` checks.
    public let readiness: Readiness
    /// The retention runs' metrics (the sweeper's and RunRetentionSweep's).
    let retentionMetrics: RetentionMetrics?
    let logger: Logger

    /// Assembles an instance; nothing runs until `services` run (or, in tests, the server starts).
    public init(configuration: AppConfiguration, group: MultiThreadedEventLoopGroup, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        let metrics = ServerMetrics()
        self.metrics = metrics
        // Without an admin listener nothing can scrape: the calls then pay for no metrics at all.
        let factory: (any MetricsFactory)? = configuration.admin == nil ? nil : metrics.factory
        let pool = PGPool(
            conninfo: configuration.databaseURL,
            configuration: configuration.pool,
            logger: logger,
            metrics: factory.map(PoolMetrics.init(factory:)),
            tracer: configuration.tracing?.calls.tracer
        )
        let liveMetrics = factory.map(LiveMetrics.init(factory:))
        // The rate limits are global: each instance enforces its share, from the instances the hub hears.
        let limiter = RateLimiter(configuration: configuration.rateLimits)
        self.limiter = limiter
        let hub = LiveHub(
            pool: pool,
            configuration: configuration.liveHub,
            logger: logger,
            metrics: liveMetrics,
            instancesChanged: { limiter.setInstances($0) }
        )
        self.pool = pool
        self.hub = hub
        let retentionMetrics = factory.map(RetentionMetrics.init(factory:))
        self.retentionMetrics = retentionMetrics
        let router = Self.router(
            configuration,
            pool: pool,
            hub: hub,
            retentionMetrics: retentionMetrics,
            liveMetrics: liveMetrics
        )
        var serverConfiguration = configuration.server
        serverConfiguration.tracing = configuration.tracing?.calls
        let server = ChatServer(
            configuration: serverConfiguration,
            router: router,
            interceptors: Self.interceptors(configuration, limiter: limiter, metrics: factory),
            group: group,
            logger: logger,
            metrics: factory.map { RPCMetrics(router: router, factory: $0) }
        )
        self.server = server
        let readiness = Readiness(server: server, pool: pool)
        self.readiness = readiness
        self.admin = configuration.admin.map {
            AdminServer(
                configuration: $0,
                endpoints: AdminServer.Endpoints(
                    readiness: { await readiness.check() },
                    metrics: { metrics.scrape(server: server.stats, pool: pool, tls: server.currentTLS) }
                ),
                group: group,
                logger: logger
            )
        }
    }

    /// Every method of the contract, each registered by its service.
    static func router(
        _ configuration: AppConfiguration,
        pool: PGPool,
        hub: LiveHub,
        retentionMetrics: RetentionMetrics?,
        liveMetrics: LiveMetrics?
    ) -> Router {
        let tokens = SealedTokens(sealer: configuration.sealer)
        let window = configuration.idempotencyWindow
        var router = Router()
        HealthService(services: ChatMethods.all.map { String($0.path.split(separator: "/")[0]) })
            .register(in: &router)
        ThreadService(pool: pool, live: hub, tokens: tokens, idempotencyWindow: window).register(in: &router)
        MessageService(pool: pool, live: hub, tokens: tokens, idempotencyWindow: window).register(in: &router)
        LiveService(pool: pool, hub: hub, tokens: tokens, configuration: configuration.live, metrics: liveMetrics)
            .register(in: &router)
        PrivacyService(
            pool: pool,
            live: hub,
            tokens: tokens,
            exportPageSize: configuration.exportPageSize,
            idempotencyWindow: window,
            retentionMetrics: retentionMetrics
        )
        .register(in: &router)
        MethodListService.register(in: &router, serverVersion: configuration.serverVersion)
        return router
    }

    /// The interceptors, outermost first: who is calling (and may they), then how often, then the call's
    /// database budget.
    static func interceptors(
        _ configuration: AppConfiguration,
        limiter: RateLimiter,
        metrics: (any MetricsFactory)?
    ) -> [any ServerInterceptor] {
        [
            AuthInterceptor(
                verifier: configuration.verifier,
                serviceTenants: configuration.serviceTenants,
                metrics: metrics
            ),
            RateLimitInterceptor(limiter: limiter, metrics: metrics),
            DatabaseBudgetInterceptor(),
        ]
    }

    /// The lifecycle services in start order, for a `ServiceGroup` (which stops them in reverse): the span
    /// exporter when tracing (last to stop: the last calls' spans still go), the database probe, the admin listener, the hub before the server (so it stops after it, and draining streams still get woken), the server,
    /// the JWKS fetcher or file watcher, the TLS reloader and the retention sweeper when configured.
    public var services: [any Service] {
        var services: [any Service] = []
        if let tracing = self.configuration.tracing { services.append(tracing.exporter) }
        services.append(DatabaseProbe(pool: self.pool, logger: self.logger))
        // The admin listener stops after the server, so that /readyz says "draining" while the server drains.
        if let admin = self.admin { services.append(admin) }
        services += [self.hub, self.server]
        if let fetcher = self.configuration.jwksFetcher { services.append(fetcher) }
        if let path = self.configuration.jwksFile {
            services.append(
                JWKSFileWatcher(
                    path: path,
                    ring: self.configuration.verifier.keyRing,
                    interval: self.configuration.jwksReloadInterval,
                    logger: self.logger
                )
            )
        }
        if let tls = self.configuration.tlsFiles {
            services.append(
                TLSReloader(
                    configuration: tls,
                    server: self.server,
                    interval: self.configuration.tlsReloadInterval,
                    logger: self.logger
                )
            )
        }
        if let retention = self.configuration.retention {
            services.append(
                RetentionScheduler(
                    pool: self.pool,
                    interval: retention.interval,
                    batchSize: retention.batchSize,
                    outboxWindow: retention.outboxWindow,
                    logger: self.logger,
                    metrics: self.retentionMetrics
                )
            )
        }
        return services
    }

    /// Closes the pool's connections (after the services have stopped).
    public func shutdown() {
        self.pool.shutdown()
    }
}
