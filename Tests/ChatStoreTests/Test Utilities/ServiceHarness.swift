import ChatAuth
import ChatClient
import ChatProto
import ChatRPC
import ChatServices
import ChatStore
import ChatTLS
import Foundation
import Logging
import NIOCore
import NIOPosix

/// chatd's thread and message services on a migrated database, over real TLS, with real token authentication;
/// clients are made per role.
final class ServiceHarness: Sendable {
    let database: MigratedDatabase
    let pool: PGPool
    let server: ChatServer
    let port: Int
    let group: MultiThreadedEventLoopGroup
    let signer: JWSSigningKey

    init(rateLimit: RateLimiter.Configuration? = nil, extraKeys: [JWSVerificationKey] = []) async throws {
        self.database = try await TestDatabase.makeMigrated()
        self.pool = self.database.makePool(size: 8)
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        self.signer = JWSSigningKey.hmac(id: "k", secret: Array("service-harness-secret-0123456789".utf8))
        let verifier = TokenVerifier(
            keys: JWKSet(keys: [try self.signer.verificationKey()] + extraKeys),
            issuer: "test",
            audience: "chatd"
        )
        var router = Router()
        ThreadService(pool: self.pool).register(in: &router)
        MessageService(pool: self.pool).register(in: &router)
        let directory = ProcessInfo.processInfo.environment["CHAT_TEST_TLS_DIR"] ?? ""
        let tls = try TLSContext(
            configuration: .server(certificate: "\(directory)/server.pem", privateKey: "\(directory)/server.key")
        )
        self.server = ChatServer(
            configuration: .init(host: "127.0.0.1", port: 0, tls: tls),
            router: router,
            interceptors: [AuthInterceptor(verifier: verifier)]
                + (rateLimit.map { [RateLimitInterceptor(limiter: RateLimiter(configuration: $0))] } ?? []),
            group: self.group,
            logger: Logger(label: "service-harness")
        )
        self.port = try await self.server.start()
    }

    /// A client for a principal.
    func client(_ role: ChatAuth.Role, tenant: String = Fixture.tenantA, user: String? = nil, scope: [String] = [])
        throws -> ChatClient
    {
        let now = Int64(Date().timeIntervalSince1970)
        let token = try self.signer.sign(claims: [
            "iss": "test", "aud": "chatd", "sub": user ?? "\(role.rawValue)-1", "tenant_id": tenant,
            "role": role.rawValue, "learner_scope": scope, "exp": now + 3600,
        ])
        let directory = ProcessInfo.processInfo.environment["CHAT_TEST_TLS_DIR"] ?? ""
        return ChatClient(
            host: "127.0.0.1",
            port: self.port,
            tls: try TLSContext(configuration: .client(trustRoots: "\(directory)/ca.pem")),
            authorization: "Bearer \(token)",
            group: self.group
        )
    }

    func stop() async throws {
        await self.server.drain()
        self.pool.shutdown()
        try await self.group.shutdownGracefully()
    }
}
