public import ChatAuth
public import ChatRPC
public import ChatServices
public import ChatStore
public import ChatTLS

/// Everything that decides how one chatd instance is assembled, as one value: `chatd serve` builds it from its
/// flags, the tests from their fixtures, and `ChatApplication` assembles the same server from either.
public struct AppConfiguration: Sendable {
    /// The listener, TLS and the connection limits.
    public var server: ChatServer.Configuration
    /// The application role's libpq connection string (the pool and the live hub's LISTEN connection).
    public var databaseURL: String
    /// The pool's size and bounds.
    public var pool: PGPool.Configuration
    /// Verifies bearer tokens.
    public var verifier: TokenVerifier
    /// The JWKS file the verifier's keys come from, re-read when it changes (every `jwksReloadInterval`); nil when
    /// the keys are fixed.
    public var jwksFile: String?
    /// How often the JWKS file is checked for a change.
    public var jwksReloadInterval: Duration
    /// The server's TLS files, re-read on SIGHUP and when they change (every `tlsReloadInterval`); nil when the
    /// pair is fixed (tests: SIGHUP is the whole process's).
    public var tlsFiles: TLSConfiguration?
    /// How often the TLS files are checked for a change.
    public var tlsReloadInterval: Duration
    /// Seals page tokens, resume tokens and stream cursors.
    public var sealer: TokenSealer
    /// The tenants each service principal may act for.
    public var serviceTenants: ServiceTenants
    /// The call rate budgets.
    public var rateLimits: RateLimiter.Configuration
    /// Live streams: heartbeats, stall limit, page size.
    public var live: LiveService.Configuration
    /// The live hub: its LISTEN connection (nil: a single instance, no NOTIFY) and periodic check.
    public var liveHub: LiveHub.Configuration
    /// How long a mutation's idempotency key and outcome are kept.
    public var idempotencyWindow: Duration
    /// Records per export page (one transaction each).
    public var exportPageSize: Int
    /// The retention sweeper of this instance; nil for none.
    public var retention: Retention?
    /// The version the method listing reports.
    public var serverVersion: String
    /// The admin HTTP listener (`/healthz`, `/readyz`, `/metrics`); nil for none.
    public var admin: AdminServer.Configuration?

    /// The retention sweeper's schedule.
    public struct Retention: Sendable {
        /// Time between sweeps of the tenants with a policy.
        public var interval: Duration
        /// Rows per batch (1 to 10000).
        public var batchSize: Int

        /// Creates a schedule.
        public init(interval: Duration, batchSize: Int = 1000) {
            self.interval = interval
            self.batchSize = batchSize
        }
    }

    /// A configuration with chatd's defaults for everything but what has none: where to listen, the database,
    /// the token keys and the sealing keys. Service principals may act for no tenant until `serviceTenants` says.
    public init(
        server: ChatServer.Configuration,
        databaseURL: String,
        verifier: TokenVerifier,
        sealer: TokenSealer
    ) {
        self.server = server
        self.databaseURL = databaseURL
        self.pool = PGPool.Configuration(size: 8)
        self.verifier = verifier
        self.jwksFile = nil
        self.jwksReloadInterval = .seconds(10)
        self.tlsFiles = nil
        self.tlsReloadInterval = .seconds(30)
        self.sealer = sealer
        self.serviceTenants = .none
        self.rateLimits = RateLimiter.Configuration()
        self.live = LiveService.Configuration()
        self.liveHub = LiveHub.Configuration(listenConninfo: databaseURL)
        self.idempotencyWindow = Idempotency.defaultWindow
        self.exportPageSize = 500
        self.retention = Retention(interval: .seconds(3600))
        self.serverVersion = chatdVersion
        self.admin = AdminServer.Configuration(host: "127.0.0.1", port: 9464)
    }
}

/// The version chatd reports in the method listing.
public let chatdVersion = "0.1.0"
