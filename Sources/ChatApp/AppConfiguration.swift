public import ChatAuth
public import ChatRPC
public import ChatServices
public import ChatStore
public import ChatTLS
internal import ChatWire
internal import Foundation
internal import NIOCore
public import ServiceLifecycle

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
    /// Fetches the verifier's keys from the identity provider's JWKS URL (instead of a file); nil for none.
    public var jwksFetcher: JWKSFetcher?
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
    /// Tracing of calls and their database round trips, and the export of the spans; nil for none (calls then
    /// make no spans; their log lines still carry the caller's trace id).
    public var tracing: Tracing?

    /// What traces calls and where the spans go.
    public struct Tracing: Sendable {
        /// The tracer of the server spans and of the database round trips under them.
        public var calls: CallTracing
        /// Batches and sends the spans; it starts first and stops last, so that the last calls' spans still go.
        public var exporter: any Service
        /// Where the spans go, for `--print-config`.
        public var destination: String
        /// The fraction of new traces recorded, for `--print-config`.
        public var sampleRatio: Double

        /// Creates a tracing setup.
        public init(calls: CallTracing, exporter: any Service, destination: String, sampleRatio: Double) {
            self.calls = calls
            self.exporter = exporter
            self.destination = destination
            self.sampleRatio = sampleRatio
        }
    }

    /// The retention sweeper's schedule.
    public struct Retention: Sendable {
        /// Time between sweeps of the tenants with a policy.
        public var interval: Duration
        /// Rows per batch (1 to 10000).
        public var batchSize: Int
        /// How long outbox events are kept, the resume window of WatchInbox and SubscribeEvents; nil: for ever.
        public var outboxWindow: Duration?

        /// The default resume window: seven days.
        public static let defaultOutboxWindow: Duration = .seconds(7 * 86_400)

        /// Creates a schedule.
        public init(
            interval: Duration,
            batchSize: Int = 1000,
            outboxWindow: Duration? = Retention.defaultOutboxWindow
        ) {
            self.interval = interval
            self.batchSize = batchSize
            self.outboxWindow = outboxWindow
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
        self.jwksFetcher = nil
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
        self.tracing = nil
    }
}

/// The version chatd reports in the method listing.
public let chatdVersion = "0.1.0"

extension AppConfiguration {
    /// The effective settings, one `name: value` each, as `chatd serve --print-config` shows them: secrets are
    /// redacted (the database URL's password; key files are named, never read out).
    public var printed: [String] {
        func seconds(_ duration: Duration) -> String {
            let (whole, fraction) = duration.components
            return fraction == 0 ? "\(whole)s" : "\(Double(whole) + Double(fraction) / 1e18)s"
        }
        func time(_ amount: TimeAmount?) -> String {
            amount.map { seconds(.nanoseconds($0.nanoseconds)) } ?? "off"
        }
        let server = self.server
        var lines = [
            "listen: \(server.host):\(server.port)",
            "admin-listen: \(self.admin.map { "\($0.host):\($0.port)" } ?? "off")",
            "otlp-traces-endpoint: \(self.tracing.map { Self.redacted($0.destination) } ?? "off")",
            "trace-sample-ratio: \(self.tracing.map { "\($0.sampleRatio)" } ?? "off")",
            "database-url: \(Self.redacted(self.databaseURL))",
            "database-pooler: \(self.pool.preparesStatements ? "off" : "transaction mode")",
            "listen-database-url: \(self.liveHub.natsURLs.isEmpty ? self.liveHub.listenConninfo.map(Self.redacted) ?? "off" : "off (NATS)")",
            "live-bus: \(self.liveHub.busName)",
            "nats-url: \(self.liveHub.natsURLs.isEmpty ? "off" : self.liveHub.natsURLs.map(Self.redacted).joined(separator: ","))",
            "pool-size: \(self.pool.size)",
            "db-max-queued: \(self.pool.maxQueued)",
            "db-queue-timeout: \(seconds(self.pool.queueTimeout))",
            "statement-timeout: \(seconds(self.pool.statementTimeout))",
            "tls-certificate: \(self.tlsFiles?.certificatePath ?? "(fixed)")",
            "tls-key: \(self.tlsFiles?.privateKeyPath ?? "(fixed)")",
            "tls-client-ca: \(self.tlsFiles?.trustRootsPath ?? "none")",
            "tls-reload-interval: \(seconds(self.tlsReloadInterval))",
            "auth-jwks: \(self.jwksSource)",
            "auth-jwks-reload-interval: \(seconds(self.jwksReloadInterval))",
            "auth-issuer: \(self.verifier.issuer)",
            "auth-audience: \(self.verifier.audience)",
            "auth-leeway: \(self.verifier.leewaySeconds)s",
            "token-seal-keys: (\(self.sealer.keyCount) keys; not shown)",
            "service-tenants: \(self.serviceTenants.summary)",
            "rate-per-user: \(self.rateLimits.perPrincipal.rate)",
            "rate-per-service: \(self.rateLimits.perService.rate)",
            "rate-per-tenant: \(self.rateLimits.perTenant.rate)",
            "live-heartbeat: \(seconds(self.live.heartbeatInterval))",
            "live-stall-limit: \(seconds(self.live.stallLimit))",
            "live-check-interval: \(seconds(self.liveHub.checkInterval))",
            "idempotency-window: \(seconds(self.idempotencyWindow))",
            "max-connections: \(server.maxConnections)",
            "max-handshaking-connections: \(server.maxHandshakingConnections)",
            "idle-timeout: \(time(server.connection.idleTimeout))",
            "max-connection-age: \(time(server.connection.maxAge))",
            "max-connection-age-grace: \(time(server.maxAgeGrace))",
            "drain-grace: \(time(server.drainGrace))",
            "stall-limit: \(seconds(server.stallLimit))",
            "stream-buffer-bytes: \(server.budget.perStream)",
            "connection-buffer-bytes: \(server.budget.perConnection)",
            "connection-inbound-bytes: \(server.budget.inboundPerConnection)",
            "max-queued-control-frames: \(server.budget.queuedControlFrames)",
        ]
        if let retention = self.retention {
            lines += [
                "retention-interval: \(seconds(retention.interval))", "retention-batch-size: \(retention.batchSize)",
                "outbox-resume-window: \(retention.outboxWindow.map(seconds) ?? "0")",
            ]
        } else {
            lines.append("retention-interval: off")
        }
        return lines
    }

    /// Where the token keys come from, for `--print-config`.
    var jwksSource: String {
        if let fetcher = self.jwksFetcher {
            let configuration = fetcher.configuration
            return "\(configuration.url) (trust roots \(configuration.trustRoots ?? "of the system"); fetched every "
                + "\(configuration.refreshInterval), and on an unknown key id at most every \(configuration.minimumInterval))"
        }
        let kids = self.verifier.keys.keys.keys.sorted().joined(separator: ",")
        return "\(self.jwksFile ?? "(fixed)") with kids \(kids)"
    }

    /// A libpq connection string or URI with its password replaced by `***`.
    public static func redacted(_ conninfo: String) -> String {
        if conninfo.contains("://") {
            // postgresql://user:password@host/db?...
            guard let schemeEnd = conninfo.range(of: "://"),
                let at = conninfo[schemeEnd.upperBound...].firstIndex(of: "@")
            else { return Self.redactedParameter(conninfo) }
            let userInfo = conninfo[schemeEnd.upperBound..<at]
            guard let colon = userInfo.firstIndex(of: ":") else { return Self.redactedParameter(conninfo) }
            return Self.redactedParameter(
                String(conninfo[..<colon]) + ":***" + String(conninfo[at...])
            )
        }
        return Self.redactedParameter(conninfo)
    }

    /// `password=...` (key=value form, or a URI's query) replaced by `password=***`.
    private static func redactedParameter(_ text: String) -> String {
        var result = ""
        var rest = Substring(text)
        while let range = rest.range(of: "password=") {
            result += rest[..<range.upperBound] + "***"
            rest = rest[range.upperBound...]
            if rest.first == "'" {
                // A quoted value: up to the closing quote (backslash escapes).
                var index = rest.index(after: rest.startIndex)
                while index < rest.endIndex, rest[index] != "'" {
                    if rest[index] == "\\" { index = rest.index(after: index) }
                    if index < rest.endIndex { index = rest.index(after: index) }
                }
                rest = index < rest.endIndex ? rest[rest.index(after: index)...] : ""
            } else {
                rest = rest.drop { $0 != " " && $0 != "&" }
            }
        }
        return result + rest
    }
}
