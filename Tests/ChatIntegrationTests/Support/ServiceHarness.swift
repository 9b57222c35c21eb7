import ChatApp
import ChatAuth
import ChatClient
import ChatDomain
import ChatProto
import ChatRPC
import ChatServices
import ChatStore
import ChatStoreTestSupport
import ChatTLS
import Foundation
import Logging
import NIOCore
import NIOPosix

/// One chatd instance, assembled by `ChatApplication` exactly as `chatd serve` assembles it, on a migrated database,
/// over real TLS, with real token authentication; clients are made per role. Several instances may share one
/// database (`sharing:`), as several chatd processes do.
final class ServiceHarness: Sendable {
    let database: MigratedDatabase
    let application: ChatApplication
    let port: Int
    /// The admin listener's port, when the harness has one.
    let adminPort: Int?
    let group: MultiThreadedEventLoopGroup
    let signer: JWSSigningKey
    let hubTask: Task<Void, Never>

    var pool: PGPool { self.application.pool }
    var server: ChatServer { self.application.server }
    var hub: LiveHub { self.application.hub }

    /// Rate budgets no suite reaches unless it sets its own (the interceptor runs either way).
    static let unlimited = RateLimiter.Configuration(
        perPrincipal: (1e9, 1e9),
        perService: (1e9, 1e9),
        perTenant: (1e9, 1e9)
    )

    init(
        rateLimit: RateLimiter.Configuration = ServiceHarness.unlimited,
        extraKeys: [JWSVerificationKey] = [],
        live: LiveService.Configuration = LiveService.Configuration(),
        hub hubConfiguration: ((String) -> LiveHub.Configuration)? = nil,
        sharing database: MigratedDatabase? = nil,
        poolSize: Int = 8,
        exportPageSize: Int = 500,
        sealer: TokenSealer? = nil,
        idempotencyWindow: Duration = Idempotency.defaultWindow,
        logger: Logger = Logger(label: "service-harness"),
        // The admin listener (on a port the kernel picks; `adminPort`), when asked for.
        admin: Bool = false,
        // The service names the suites use; each may act for the two fixture tenants.
        serviceTenants: ServiceTenants = ServiceTenants(allowances: [
            "indexer": .tenants([Fixture.tenantA, Fixture.tenantB]),
            "indexer-2": .tenants([Fixture.tenantA, Fixture.tenantB]),
            "caller-service": .tenants([Fixture.tenantA, Fixture.tenantB]),
            "service-1": .tenants([Fixture.tenantA, Fixture.tenantB]),
        ])
    ) async throws {
        if let database {
            self.database = database
        } else {
            self.database = try await TestDatabase.makeMigrated()
        }
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        self.signer = JWSSigningKey.hmac(id: "k", secret: Array("service-harness-secret-0123456789".utf8))
        let directory = ProcessInfo.processInfo.environment["CHAT_TEST_TLS_DIR"] ?? ""
        let tls = try TLSContext(
            configuration: .server(certificate: "\(directory)/server.pem", privateKey: "\(directory)/server.key")
        )
        var configuration = AppConfiguration(
            server: .init(host: "127.0.0.1", port: 0, tls: tls),
            databaseURL: self.database.app,
            verifier: TokenVerifier(
                keys: JWKSet(keys: [try self.signer.verificationKey()] + extraKeys),
                issuer: "test",
                audience: "chatd"
            ),
            sealer: sealer ?? Self.sealer
        )
        configuration.pool = PGPool.Configuration(size: poolSize)
        configuration.serviceTenants = serviceTenants
        configuration.rateLimits = rateLimit
        configuration.live = live
        configuration.liveHub = hubConfiguration?(self.database.app) ?? .init(listenConninfo: self.database.app)
        configuration.idempotencyWindow = idempotencyWindow
        configuration.exportPageSize = exportPageSize
        configuration.retention = nil
        configuration.admin = admin ? AdminServer.Configuration(host: "127.0.0.1", port: 0) : nil
        self.application = ChatApplication(
            configuration: configuration,
            group: self.group,
            logger: logger
        )
        let hub = self.application.hub
        self.hubTask = Task { try? await hub.run() }
        self.port = try await self.application.server.start()
        self.adminPort = try await self.application.admin?.start()
    }

    /// The token keys every harness shares (instances of one deployment share them): a token from one instance
    /// opens on another.
    static let sealer = try! TokenSealer(
        keys: [TokenSealer.Key(id: 1, secret: Array("service-harness-token-seal-key-0123456789".utf8))]
    )

    /// The outbox position inside a cursor this harness sealed for `user` of `tenant` (`purpose`: "inbox" for
    /// WatchInbox, "events" for SubscribeEvents); nil when it does not open.
    static func position(
        of cursor: String,
        _ purpose: String,
        user: String,
        tenant: String = Fixture.tenantA
    ) -> OutboxCursor? {
        guard let payload = try? Self.sealer.open(cursor, purpose: purpose, binding: [tenant, user, ""]) else {
            return nil
        }
        return OutboxCursor(token: String(decoding: payload, as: UTF8.self))
    }

    /// A client for a principal.
    func client(
        _ role: Role,
        tenant: String = Fixture.tenantA,
        user: String? = nil,
        scope: [String] = [],
        lifetime: Int64 = 3600,
        retry: RetryPolicy = RetryPolicy()
    ) throws -> ChatClient {
        let now = Int64(Date().timeIntervalSince1970)
        let token = try self.signer.sign(claims: [
            "iss": "test", "aud": "chatd", "sub": user ?? "\(role.claimName)-1", "tenant_id": tenant,
            "role": role.claimName, "learner_scope": scope, "exp": now + lifetime,
        ])
        let directory = ProcessInfo.processInfo.environment["CHAT_TEST_TLS_DIR"] ?? ""
        return ChatClient(
            host: "127.0.0.1",
            port: self.port,
            tls: try TLSContext(configuration: .client(trustRoots: "\(directory)/ca.pem")),
            authorization: "Bearer \(token)",
            retry: retry,
            group: self.group
        )
    }

    /// Graceful shutdown: drains the server (streams end with UNAVAILABLE and their resume position).
    func stop() async throws {
        await self.server.drain()
        await self.application.admin?.stop()
        self.hubTask.cancel()
        await self.hubTask.value
        self.pool.shutdown()
        try await self.group.shutdownGracefully()
    }

    /// An abrupt end, as when the process is killed: connections close without GOAWAY or trailers.
    func kill() async throws {
        await self.application.admin?.stop()
        self.hubTask.cancel()
        try await self.group.shutdownGracefully()
        await self.hubTask.value
        self.pool.shutdown()
    }
}
