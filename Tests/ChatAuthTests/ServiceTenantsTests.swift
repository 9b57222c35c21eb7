import ChatAuth
import ChatProto
import ChatRPC
import ChatTestSupport
import Logging
import Testing

@Suite("Service tenants: which tenants each service principal may act for")
struct ServiceTenantsTests {
    static let a = "a0000000-0000-4000-8000-000000000001"
    static let b = "b0000000-0000-4000-8000-000000000002"

    @Test("the file: one service a line, tenants or *, comments; mistakes name their line")
    func file() throws {
        let tenants = try ServiceTenants(
            file: """
                # who may act for whom
                indexer *
                mailer \(Self.a),\(Self.b.uppercased())   # two districts
                reporter \(Self.a)
                """
        )
        #expect(tenants.allows("indexer", tenant: Self.b))
        #expect(tenants.allows("mailer", tenant: Self.b) && tenants.allows("mailer", tenant: Self.a))
        #expect(tenants.allows("reporter", tenant: Self.a) && !tenants.allows("reporter", tenant: Self.b))
        #expect(!tenants.allows("stranger", tenant: Self.a))
        #expect(
            tenants.isCrossTenant("indexer") && tenants.isCrossTenant("mailer") && !tenants.isCrossTenant("reporter")
        )
        for bad in ["indexer", "indexer a b", "indexer district-9", "x *\nx *"] {
            #expect(throws: AuthError.self, "\(bad)") { try ServiceTenants(file: bad) }
        }
        #expect(!ServiceTenants.none.allows("indexer", tenant: Self.a))
    }

    @Test("a service acting for several tenants: each call logged with its tenant; a refused one too")
    func logging() async throws {
        let signer = JWSSigningKey.hmac(id: "k", secret: Array("service-tenants-secret-0123456789".utf8))
        let interceptor = AuthInterceptor(
            verifier: TokenVerifier(keys: JWKSet(keys: [try signer.verificationKey()]), issuer: "t", audience: "chatd"),
            serviceTenants: ServiceTenants(allowances: [
                "mailer": .tenants([Self.a, Self.b]), "one": .tenants([Self.a]),
            ]),
            clock: { 1_800_000_000 }
        )
        let log = RecordingLog()
        func call(_ sub: String, _ tenant: String) async -> Bool {
            let token = try! signer.sign(claims: [
                "iss": "t", "aud": "chatd", "sub": sub, "tenant_id": tenant, "role": "service", "exp": 1_800_000_600,
            ])
            let context = CallContext(
                method: ChatMethods.EventService.subscribeEvents.path,
                callID: 1,
                header: CallHeader(
                    method: ChatMethods.EventService.subscribeEvents.path,
                    authorization: "Bearer \(token)"
                ),
                peerIdentity: nil,
                deadline: nil,
                logger: log.logger()
            )
            do {
                try await interceptor.intercept(context) { _ in }
                return true
            } catch {
                return false
            }
        }
        #expect(await call("mailer", Self.b))
        #expect(await call("one", Self.a))
        #expect(!(await call("one", Self.b)))
        let logged = log.lines.map { "\($0.message) \($0.metadata.sorted { $0.key < $1.key })" }
        #expect(logged.filter { $0.hasPrefix("cross-tenant service call") }.count == 1)
        #expect(
            logged.contains {
                $0.hasPrefix("cross-tenant service call") && $0.contains(Self.b) && $0.contains("mailer")
            }
        )
        #expect(logged.contains { $0.hasPrefix("service refused") && $0.contains(Self.b) })
    }
}
