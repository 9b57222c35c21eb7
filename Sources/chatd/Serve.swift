import ArgumentParser
import ChatApp
import ChatAuth
import ChatProto
import ChatRPC
import ChatServices
import ChatStore
import ChatTLS
import ChatTelemetry
import ChatWire
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import UnixSignals

/// Serves RPCs until SIGINT or SIGTERM, then drains.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the server (the default).")

    @OptionGroup var options: CommonOptions

    @Option(name: .customLong("listen"), help: "Address to listen on, host:port.")
    var listen: String = "127.0.0.1:7443"

    @Flag(
        name: .customLong("print-config"),
        help: "Print the effective configuration (flags, CHATD_ variables, defaults; secrets redacted) and exit."
    )
    var printConfig = false

    @Option(
        name: .customLong("admin-listen"),
        help: "Address of the admin HTTP listener (/healthz, /readyz, /metrics), host:port; \"off\" for none."
    )
    var adminListen: String = "127.0.0.1:9464"

    @Option(
        name: .customLong("otlp-traces-endpoint"),
        help: "URL spans are posted to over OTLP/HTTP, e.g. http://collector:4318/v1/traces; none: no tracing."
    )
    var otlpTracesEndpoint: String?

    @Option(
        name: .customLong("trace-sample-ratio"),
        help: "Fraction (0 to 1) of new traces recorded; a caller's sampled flag decides for the traces it started."
    )
    var traceSampleRatio: Double = 1

    @Option(name: .customLong("tls-certificate"), help: "PEM certificate chain of the server.")
    var certificate: String

    @Option(name: .customLong("tls-key"), help: "PEM private key of the certificate.")
    var key: String

    @Option(
        name: .customLong("tls-reload-interval"),
        help: "Seconds between checks of the TLS files for a new certificate (SIGHUP reloads at once)."
    )
    var tlsReloadInterval: Double = 30

    @Option(name: .customLong("tls-client-ca"), help: "PEM CA that signs client certificates (enables mTLS).")
    var clientCA: String?

    @Flag(name: .customLong("tls-require-client-certificate"), help: "Refuse clients without a certificate.")
    var requireClientCertificate = false

    @Option(
        name: .customLong("auth-jwks"),
        help: "The keys bearer tokens are signed with: a JWKS file, or the identity provider's https:// JWKS URL."
    )
    var jwks: String

    @Option(
        name: .customLong("auth-jwks-ca"),
        help: "PEM CA certificates to verify an https --auth-jwks server with (default: the system's trust store)."
    )
    var jwksCA: String?

    @Option(
        name: .customLong("auth-jwks-refresh-interval"),
        help: "Seconds between fetches of an https --auth-jwks URL."
    )
    var jwksRefreshInterval: Double = Double(JWKSFetcher.Configuration.Defaults.refreshInterval.components.seconds)

    @Option(
        name: .customLong("auth-jwks-min-refresh-interval"),
        help:
            "The least seconds between two fetches of an https --auth-jwks URL (a token with an unknown key id asks for one)."
    )
    var jwksMinimumRefreshInterval: Double = Double(
        JWKSFetcher.Configuration.Defaults.minimumInterval.components.seconds
    )

    @Option(
        name: .customLong("token-seal-keys"),
        help:
            "File of the keys that seal page tokens and resume cursors: lines \"<id 1-255> <base64, 32+ bytes>\", the sealing key first."
    )
    var sealKeys: String

    @Option(
        name: .customLong("service-tenants"),
        help:
            "File of the tenants each service principal may act for: lines \"<service> <tenant>[,<tenant>...]\" or \"<service> *\" (default: none may)."
    )
    var serviceTenants: String?

    @Option(
        name: .customLong("auth-jwks-reload-interval"),
        help: "Seconds between checks of the --auth-jwks file for new keys (a rotation needs no restart)."
    )
    var jwksReloadInterval: Double = 10

    @Option(name: .customLong("auth-issuer"), help: "The required iss of bearer tokens.")
    var issuer: String

    @Option(name: .customLong("auth-audience"), help: "The required aud of bearer tokens.")
    var audience: String = "chatd"

    @Option(name: .customLong("auth-leeway"), help: "Clock skew tolerated on exp and nbf, seconds.")
    var leeway: Int64 = 30

    @Option(name: .customLong("rate-per-user"), help: "Calls per second of one user (burst: twice that).")
    var ratePerUser: Double = 50

    @Option(name: .customLong("rate-per-service"), help: "Calls per second of one service principal.")
    var ratePerService: Double = 2_000

    @Option(name: .customLong("rate-per-tenant"), help: "Calls per second of one tenant, all principals together.")
    var ratePerTenant: Double = 5_000

    @Option(name: .customLong("live-heartbeat"), help: "Seconds a live stream stays quiet before a heartbeat.")
    var liveHeartbeat: Double = 15

    @Option(
        name: .customLong("live-stall-limit"),
        help: "Seconds a live stream waits for a client that does not read before ending it (RESOURCE_EXHAUSTED)."
    )
    var liveStallLimit: Double = 30

    @Option(
        name: .customLong("live-check-interval"),
        help: "Seconds between checks for changes whose notification was lost."
    )
    var liveCheckInterval: Double = 1

    @Option(
        name: .customLong("retention-interval"),
        help: "Seconds between retention sweeps of the tenants with a policy (0: no sweeper in this instance)."
    )
    var retentionInterval: Double = 3600

    @Flag(
        name: .customLong("database-pooler"),
        help: ArgumentHelp(
            "The database URL leads to a connection pooler in transaction mode (pgbouncer): statements are sent "
                + "unnamed, never prepared by name. Needs a listen database URL."
        )
    )
    var databasePooler = false

    @Option(
        name: .customLong("listen-database-url"),
        help: ArgumentHelp(
            "libpq connection string for the one LISTEN connection of the live hub, straight to PostgreSQL "
                + "(default: the database URL). LISTEN holds a session, which a pooler in transaction mode cannot give."
        )
    )
    var listenDatabaseURL: String?

    @Option(
        name: .customLong("nats-url"),
        help: ArgumentHelp(
            "NATS servers, comma-separated (nats://host:4222, tls://host:4222): the live hub's wake-ups and the "
                + "instances' presence go over NATS instead of LISTEN/NOTIFY (default: off, LISTEN/NOTIFY)."
        )
    )
    var natsURL: String?

    @Option(name: .customLong("nats-ca-file"), help: "CA certificate (PEM) to verify tls:// NATS servers with.")
    var natsCAFile: String?

    @Option(name: .customLong("retention-batch-size"), help: "Rows per retention batch (1 to 10000).")
    var retentionBatchSize: Int = 1000

    @Option(
        name: .customLong("outbox-resume-window"),
        help: ArgumentHelp(
            "Seconds outbox events are kept, the resume window of WatchInbox and SubscribeEvents; older ones are "
                + "trimmed by the retention sweeper (default 604800, 7 days; 0: keep every event)."
        )
    )
    var outboxResumeWindow: Int = 604_800

    @Option(name: .customLong("threads"), help: "Event-loop threads (default: one per core).")
    var threads: Int = System.coreCount

    @Option(name: .customLong("max-connections"), help: "Connections open at once; more are closed as accepted.")
    var maxConnections: Int = ChatServer.Configuration.Defaults.maxConnections

    @Option(
        name: .customLong("max-handshaking-connections"),
        help: "Connections in the TLS handshake at once; more are closed as accepted."
    )
    var maxHandshaking: Int = ChatServer.Configuration.Defaults.maxHandshakingConnections

    @Option(
        name: .customLong("idle-timeout"),
        help: "Seconds without a call before a connection gets GOAWAY (0: never)."
    )
    var idleTimeout: Double = seconds(ServerConnectionStateMachine.Configuration.defaultIdleTimeout)

    @Option(
        name: .customLong("max-connection-age"),
        help: "Seconds (±10% jitter) after which a connection is drained so clients rebalance (0: never)."
    )
    var maxConnectionAge: Double = 0

    @Option(
        name: .customLong("max-connection-age-grace"),
        help: "Seconds calls in flight may run after the maximum age; streams then end UNAVAILABLE with resume info."
    )
    var maxConnectionAgeGrace: Double = seconds(ChatServer.Configuration.Defaults.maxAgeGrace)

    @Option(name: .customLong("drain-grace"), help: "Seconds calls in flight may run after SIGTERM.")
    var drainGrace: Double = seconds(ChatServer.Configuration.Defaults.drainGrace)

    @Option(
        name: .customLong("stream-buffer-bytes"),
        help: "Response bytes queued for one stream before its handler's writes wait."
    )
    var streamBufferBytes: Int = OutboundBudget().perStream

    @Option(
        name: .customLong("connection-buffer-bytes"),
        help: "Response bytes queued for one connection before every handler's writes wait."
    )
    var connectionBufferBytes: Int = OutboundBudget().perConnection

    @Option(
        name: .customLong("connection-inbound-bytes"),
        help: "Partly received request bytes one connection may hold; beyond, the stream ends RESOURCE_EXHAUSTED."
    )
    var connectionInboundBytes: Int = OutboundBudget().inboundPerConnection

    @Option(
        name: .customLong("max-queued-control-frames"),
        help: "Control frames queued for a peer that does not read before GOAWAY ENHANCE_YOUR_CALM."
    )
    var maxQueuedControlFrames: Int = OutboundBudget().queuedControlFrames

    @Option(
        name: .customLong("stall-limit"),
        help: "Seconds any write waits for a client that does not read before the call ends RESOURCE_EXHAUSTED."
    )
    var stallLimit: Double = Double(ChatServer.Configuration.Defaults.stallLimit.components.seconds)

    @Option(
        name: .customLong("db-max-queued"),
        help: "Calls that may wait for a database connection (default: 32 per connection); more fail at once."
    )
    var dbMaxQueued: Int?

    @Option(
        name: .customLong("db-queue-timeout"),
        help: "Seconds a call without an earlier deadline waits for a database connection before UNAVAILABLE."
    )
    var dbQueueTimeout: Double = 5

    @Option(
        name: .customLong("statement-timeout"),
        help: "Seconds a database statement of a call without an earlier deadline may run before it is cancelled."
    )
    var statementTimeout: Double = 30

    @Option(
        name: .customLong("idempotency-window"),
        help:
            "Seconds a mutation's idempotency key and its outcome are kept (a retry within it gets the first outcome)."
    )
    var idempotencyWindow: Int = Int(Idempotency.defaultWindow.components.seconds)

    /// The pool's bounds from the flags.
    func poolConfiguration(size: Int) throws -> PGPool.Configuration {
        guard size > 0 else { throw ValidationError("--pool-size must be at least 1") }
        guard self.dbMaxQueued.map({ $0 >= 0 }) ?? true, self.dbQueueTimeout > 0, self.statementTimeout > 0 else {
            throw ValidationError("--db-max-queued must not be negative; the database timeouts must be positive")
        }
        return PGPool.Configuration(
            size: size,
            maxQueued: self.dbMaxQueued,
            queueTimeout: .milliseconds(Int64(self.dbQueueTimeout * 1000)),
            statementTimeout: .milliseconds(Int64(self.statementTimeout * 1000))
        )
    }

    /// The server's limits from the flags.
    func serverConfiguration(host: String, port: Int, tls: TLSContext) throws -> ChatServer.Configuration {
        guard self.maxConnections > 0, self.maxHandshaking > 0, self.streamBufferBytes > 0,
            self.connectionBufferBytes > 0, self.connectionInboundBytes > 0, self.maxQueuedControlFrames > 0
        else {
            throw ValidationError("connection limits and buffer sizes must be positive")
        }
        guard self.idleTimeout >= 0, self.maxConnectionAge >= 0, self.maxConnectionAgeGrace >= 0,
            self.drainGrace >= 0, self.stallLimit > 0
        else {
            throw ValidationError("timeouts must not be negative; --stall-limit must be positive")
        }
        func time(_ seconds: Double) -> TimeAmount { .milliseconds(Int64(seconds * 1000)) }
        var configuration = ChatServer.Configuration(host: host, port: port, tls: tls)
        configuration.maxConnections = self.maxConnections
        configuration.maxHandshakingConnections = self.maxHandshaking
        configuration.connection.idleTimeout = self.idleTimeout > 0 ? time(self.idleTimeout) : nil
        configuration.connection.maxAge = self.maxConnectionAge > 0 ? time(self.maxConnectionAge) : nil
        configuration.maxAgeGrace = time(self.maxConnectionAgeGrace)
        configuration.drainGrace = time(self.drainGrace)
        configuration.budget = OutboundBudget(
            perStream: self.streamBufferBytes,
            perConnection: self.connectionBufferBytes,
            inboundPerConnection: self.connectionInboundBytes,
            queuedControlFrames: self.maxQueuedControlFrames
        )
        configuration.stallLimit = .milliseconds(Int64(self.stallLimit * 1000))
        return configuration
    }

    /// The instance's configuration from the flags (and the files they name).
    func appConfiguration(logger: Logger) throws -> AppConfiguration {
        let databaseURL = try self.options.resolvedDatabaseURL()
        let (host, port) = try Self.hostAndPort(self.listen, "--listen")
        let tlsFiles = TLSConfiguration.server(
            certificate: self.certificate,
            privateKey: self.key,
            clientCA: self.clientCA,
            requireClientCertificate: self.requireClientCertificate
        )
        let tls = try TLSContext(configuration: tlsFiles)
        let keys: JWKSet
        if self.jwksIsURL {
            // Fetched before serving (`run`).
            keys = JWKSet(keys: [])
        } else {
            guard let jwksData = FileManager.default.contents(atPath: self.jwks) else {
                throw ValidationError("cannot read --auth-jwks \(self.jwks)")
            }
            keys = try JWKSet(json: Array(jwksData))
        }
        let verifier = TokenVerifier(
            keyRing: KeyRing(keys),
            issuer: self.issuer,
            audience: self.audience,
            leewaySeconds: self.leeway
        )
        guard
            let sealKeyText = FileManager.default.contents(atPath: self.sealKeys).flatMap({
                String(data: $0, encoding: .utf8)
            })
        else {
            throw ValidationError("cannot read --token-seal-keys \(self.sealKeys)")
        }
        var configuration = AppConfiguration(
            server: try self.serverConfiguration(host: host, port: port, tls: tls),
            databaseURL: databaseURL,
            verifier: verifier,
            sealer: try TokenSealer(keyFile: sealKeyText)
        )
        configuration.pool = try self.poolConfiguration(size: self.options.poolSize)
        if let natsURL = self.natsURL {
            let urls = natsURL.split(separator: ",").map { String($0.filter { $0 != " " }) }
            guard !urls.isEmpty, urls.allSatisfy({ $0.hasPrefix("nats://") || $0.hasPrefix("tls://") }) else {
                throw ValidationError(
                    "--nats-url: comma-separated nats:// or tls:// URLs, got "
                        + urls.map(AppConfiguration.redacted).joined(separator: ",")
                )
            }
            configuration.liveHub.natsURLs = urls
            configuration.liveHub.natsCAFile = self.natsCAFile
        } else if self.natsCAFile != nil {
            throw ValidationError("--nats-ca-file needs --nats-url")
        }
        if self.databasePooler && self.listenDatabaseURL == nil && self.natsURL == nil {
            throw ValidationError(
                "--database-pooler needs --listen-database-url (LISTEN needs a session, straight to PostgreSQL) "
                    + "or --nats-url"
            )
        }
        configuration.pool.preparesStatements = !self.databasePooler
        if let listen = self.listenDatabaseURL { configuration.liveHub.listenConninfo = listen }
        guard self.tlsReloadInterval > 0 else { throw ValidationError("--tls-reload-interval must be positive") }
        configuration.tlsFiles = tlsFiles
        configuration.tlsReloadInterval = .milliseconds(Int64(self.tlsReloadInterval * 1000))
        guard self.jwksReloadInterval > 0 else { throw ValidationError("--auth-jwks-reload-interval must be positive") }
        configuration.jwksFile = self.jwksIsURL ? nil : self.jwks
        configuration.jwksReloadInterval = .milliseconds(Int64(self.jwksReloadInterval * 1000))
        if let path = self.serviceTenants {
            guard let text = FileManager.default.contents(atPath: path).flatMap({ String(data: $0, encoding: .utf8) })
            else {
                throw ValidationError("cannot read --service-tenants \(path)")
            }
            configuration.serviceTenants = try ServiceTenants(file: text)
        } else {
            logger.notice("no --service-tenants: service principals may act for no tenant")
        }
        configuration.rateLimits = RateLimiter.Configuration(
            perPrincipal: (self.ratePerUser, self.ratePerUser * 2),
            perService: (self.ratePerService, self.ratePerService * 2),
            perTenant: (self.ratePerTenant, self.ratePerTenant * 2)
        )
        guard self.liveHeartbeat > 0, self.liveStallLimit > 0, self.liveCheckInterval > 0 else {
            throw ValidationError("--live-heartbeat, --live-stall-limit and --live-check-interval must be positive")
        }
        configuration.live.heartbeatInterval = .milliseconds(Int64(self.liveHeartbeat * 1000))
        configuration.live.stallLimit = .milliseconds(Int64(self.liveStallLimit * 1000))
        configuration.liveHub.checkInterval = .milliseconds(Int64(self.liveCheckInterval * 1000))
        guard self.outboxResumeWindow >= 0 else { throw ValidationError("--outbox-resume-window must not be negative") }
        guard self.retentionInterval >= 0, (1...10_000).contains(self.retentionBatchSize) else {
            throw ValidationError("--retention-interval must not be negative; --retention-batch-size is 1 to 10000")
        }
        configuration.retention =
            self.retentionInterval > 0
            ? AppConfiguration.Retention(
                interval: .milliseconds(Int64(self.retentionInterval * 1000)),
                batchSize: self.retentionBatchSize,
                outboxWindow: self.outboxResumeWindow > 0 ? .seconds(self.outboxResumeWindow) : nil
            ) : nil
        guard self.idempotencyWindow >= 1 else { throw ValidationError("--idempotency-window must be at least 1") }
        configuration.idempotencyWindow = .seconds(self.idempotencyWindow)
        if self.adminListen == "off" {
            configuration.admin = nil
        } else {
            let (adminHost, adminPort) = try Self.hostAndPort(self.adminListen, "--admin-listen")
            configuration.admin = AdminServer.Configuration(host: adminHost, port: adminPort)
        }
        guard (0...1).contains(self.traceSampleRatio) else { throw ValidationError("--trace-sample-ratio is 0 to 1") }
        if let endpoint = self.otlpTracesEndpoint {
            guard endpoint.hasPrefix("http://") || endpoint.hasPrefix("https://") else {
                throw ValidationError("--otlp-traces-endpoint must be an http:// or https:// URL, not \(endpoint)")
            }
            let settings = OTLPTracing.Settings(endpoint: endpoint, sampleRatio: self.traceSampleRatio)
            let (calls, exporter) = try OTLPTracing.make(settings, logger: logger)
            configuration.tracing = AppConfiguration.Tracing(
                calls: calls,
                exporter: exporter,
                destination: endpoint,
                sampleRatio: self.traceSampleRatio
            )
        }
        return configuration
    }

    /// Whether `--auth-jwks` is a URL (fetched) rather than a file (watched).
    var jwksIsURL: Bool { self.jwks.hasPrefix("https://") || self.jwks.hasPrefix("http://") }

    /// `host:port` (an IPv6 host in brackets) as its parts.
    static func hostAndPort(_ text: String, _ flag: String) throws -> (String, Int) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65535).contains(port)
        else {
            throw ValidationError("\(flag) must be host:port, not \(text)")
        }
        var host = Substring(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        return (String(host), port)
    }

    func run() async throws {
        let logger = try self.options.bootstrapLogging()
        var configuration = try self.appConfiguration(logger: logger)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, self.threads))
        if self.jwksIsURL {
            guard self.jwksRefreshInterval > 0, self.jwksMinimumRefreshInterval > 0 else {
                throw ValidationError(
                    "--auth-jwks-refresh-interval and --auth-jwks-min-refresh-interval must be positive"
                )
            }
            var source = JWKSFetcher.Configuration(url: self.jwks, trustRoots: self.jwksCA)
            source.refreshInterval = .milliseconds(Int64(self.jwksRefreshInterval * 1000))
            source.minimumInterval = .milliseconds(Int64(self.jwksMinimumRefreshInterval * 1000))
            let fetcher: JWKSFetcher
            do {
                fetcher = try JWKSFetcher(
                    configuration: source,
                    ring: configuration.verifier.keyRing,
                    group: group,
                    logger: logger
                )
            } catch {
                throw ValidationError("--auth-jwks \(self.jwks): \(error)")
            }
            configuration.jwksFetcher = fetcher
            if !self.printConfig {
                // Without keys no token verifies: chatd does not serve until it has them.
                do {
                    try await fetcher.fetchNow()
                } catch {
                    try? await group.shutdownGracefully()
                    throw ValidationError("cannot fetch --auth-jwks \(self.jwks): \(error)")
                }
            }
        }
        if self.printConfig {
            for line in configuration.printed { print(line) }
            try await group.shutdownGracefully()
            return
        }
        let application = ChatApplication(configuration: configuration, group: group, logger: logger)
        defer { application.shutdown() }
        let services = ServiceGroup(
            configuration: .init(
                services: application.services.map { .init(service: $0) },
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        try await services.run()
        try await group.shutdownGracefully()
    }
}

/// A default duration as the seconds a flag takes.
private func seconds(_ amount: TimeAmount) -> Double {
    Double(amount.nanoseconds) / 1e9
}
