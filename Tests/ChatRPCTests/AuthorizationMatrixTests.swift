import ChatAuth
import ChatClient
import ChatDomain
import ChatProto
import ChatRPC
import Testing

/// One method of the contract, as something to register and to call.
struct MethodProbe: Sendable {
    let path: String
    let register: @Sendable (inout Router) -> Void
    let call: @Sendable (ChatClient, CallOptions) async throws -> Void

    init<Request: ProtoMessage, Response: ProtoMessage>(_ method: ChatMethod<Request, Response>) {
        self.path = method.path
        if method.kind == .unary {
            self.register = { router in router.register(method) { _, _ in Response() } }
            self.call = { client, options in _ = try await client.unary(method, Request(), options: options) }
        } else {
            self.register = { router in
                router.register(method) { (_: Request, _: CallContext, _: ResponseWriter<Response>) in }
            }
            self.call = { client, options in
                for try await _ in try await client.serverStream(method, Request(), options: options) {}
            }
        }
    }
}

/// Every method of the contract that needs credentials.
let protectedMethods: [MethodProbe] = [
    MethodProbe(ChatMethods.ThreadService.createThread), MethodProbe(ChatMethods.ThreadService.getThread),
    MethodProbe(ChatMethods.ThreadService.listThreads), MethodProbe(ChatMethods.ThreadService.updateThread),
    MethodProbe(ChatMethods.ThreadService.deleteThread), MethodProbe(ChatMethods.MessageService.sendMessage),
    MethodProbe(ChatMethods.MessageService.getMessage), MethodProbe(ChatMethods.MessageService.listMessages),
    MethodProbe(ChatMethods.MessageService.editMessage), MethodProbe(ChatMethods.MessageService.deleteMessage),
    MethodProbe(ChatMethods.MessageService.listMessageEdits), MethodProbe(ChatMethods.MessageService.markRead),
    MethodProbe(ChatMethods.LiveService.watchThread), MethodProbe(ChatMethods.LiveService.watchInbox),
    MethodProbe(ChatMethods.EventService.subscribeEvents), MethodProbe(ChatMethods.PrivacyService.exportLearnerData),
    MethodProbe(ChatMethods.PrivacyService.eraseLearnerData), MethodProbe(ChatMethods.PrivacyService.placeLegalHold),
    MethodProbe(ChatMethods.PrivacyService.releaseLegalHold), MethodProbe(ChatMethods.PrivacyService.listLegalHolds),
    MethodProbe(ChatMethods.PrivacyService.getRetentionPolicy),
    MethodProbe(ChatMethods.PrivacyService.setRetentionPolicy),
    MethodProbe(ChatMethods.PrivacyService.runRetentionSweep), MethodProbe(ChatMethods.PrivacyService.listAuditRecords),
    MethodProbe(ChatMethods.PrivacyService.verifyAuditTrail),
]

let matrixTenant = "a0000000-0000-4000-8000-000000000001"
let matrixNow: Int64 = 1_800_000_000

@Suite("Authorization matrix over real RPC calls")
struct AuthorizationMatrixTests {
    static let signer = JWSSigningKey.hmac(id: "test", secret: Array("matrix-secret-0123456789abcdefghij".utf8))

    static func server() async throws -> TestServer {
        let verifier = TokenVerifier(
            keys: JWKSet(keys: [try Self.signer.verificationKey()]),
            issuer: "https://id.test",
            audience: "chatd"
        )
        return try await TestServer(
            interceptors: [
                AuthInterceptor(
                    verifier: verifier,
                    serviceTenants: ServiceTenants(allowances: [
                        "dev-client": .tenants([matrixTenant]), "user-service": .tenants([matrixTenant]),
                    ]),
                    clock: { matrixNow }
                )
            ],
            routes: { router in for method in protectedMethods { method.register(&router) } },
            configure: { $0.tls = try! TestCertificates.server(clientCA: true) }
        )
    }

    static func token(role: Role) throws -> String {
        try Self.signer.sign(claims: [
            "iss": "https://id.test", "aud": "chatd", "sub": "user-\(role.claimName)", "tenant_id": matrixTenant,
            "role": role.claimName, "learner_scope": ["a1000000-0000-4000-8000-000000000011"], "exp": matrixNow + 600,
        ])
    }

    @Test("every method x every role gives the documented outcome; public methods need nothing")
    func matrix() async throws {
        let server = try await Self.server()
        let client = try server.makeClient()
        #expect(AuthorizationTable.methodPermissions.count == protectedMethods.count + 3)
        for role in Role.assignable {
            let options = CallOptions(authorization: "Bearer \(try Self.token(role: role))")
            for method in protectedMethods {
                guard case .requires(let permission) = AuthorizationTable.decision(for: method.path) else {
                    Issue.record("\(method.path) is not protected")
                    continue
                }
                let allowed = AuthorizationTable.rolePermissions[role]!.contains(permission)
                do {
                    try await method.call(client, options)
                    #expect(allowed, "\(role) was allowed \(method.path)")
                } catch let error as RPCError {
                    #expect(!allowed, "\(role) was refused \(method.path): \(error)")
                    #expect(error.code == .permissionDenied && error.message.contains(permission.rawValue), "\(error)")
                }
            }
        }
        // Public methods: no credentials needed.
        #expect(try await client.healthCheck(HealthCheckRequest()).status == .serving)
        #expect(!(try await client.listMethods(ListMethodsRequest()).methods.isEmpty))
        await client.close()
        try await server.stop()
    }

    @Test("no token, a malformed header or a bad token: UNAUTHENTICATED on every protected method")
    func unauthenticated() async throws {
        let server = try await Self.server()
        let client = try server.makeClient()
        let forged = try JWSSigningKey.hmac(id: "test", secret: Array(repeating: 7, count: 40)).sign(claims: [
            "sub": "x"
        ])
        for options in [
            CallOptions(), CallOptions(authorization: "Basic abc"), CallOptions(authorization: "Bearer \(forged)"),
        ] {
            for method in protectedMethods {
                await #expect {
                    try await method.call(client, options)
                } throws: { error in
                    (error as? RPCError)?.code == .unauthenticated && (error as? RPCError)?.notProcessed == true
                }
            }
        }
        await client.close()
        try await server.stop()
    }

    @Test("a service token may act only for the tenants --service-tenants lists; an unlisted service for none")
    func serviceTokens() async throws {
        let server = try await Self.server()
        let client = try server.makeClient()
        func token(sub: String, tenant: String) throws -> CallOptions {
            CallOptions(
                authorization: "Bearer "
                    + (try Self.signer.sign(claims: [
                        "iss": "https://id.test", "aud": "chatd", "sub": sub, "tenant_id": tenant, "role": "service",
                        "exp": matrixNow + 600,
                    ]))
            )
        }
        let probe = MethodProbe(ChatMethods.EventService.subscribeEvents)
        try await probe.call(client, try token(sub: "user-service", tenant: matrixTenant))
        for (sub, tenant) in [
            ("user-service", "b0000000-0000-4000-8000-000000000002"), ("stranger", matrixTenant),
        ] {
            await #expect("\(sub) for \(tenant)") {
                try await probe.call(client, try token(sub: sub, tenant: tenant))
            } throws: { error in
                let error = error as? RPCError
                return error?.code == .permissionDenied && error?.notProcessed == true
            }
        }
        await client.close()
        try await server.stop()
    }

    @Test("mTLS: a service certificate is a service principal for the tenant named in tenant-id metadata")
    func serviceCertificate() async throws {
        let server = try await Self.server()
        let client = ChatClient(
            host: "127.0.0.1",
            port: server.port,
            tls: try TestCertificates.client(certificate: "client"),
            group: server.group
        )
        let tenant = CallOptions(metadata: [MetadataEntry(key: "tenant-id", value: Array(matrixTenant.utf8))])
        // A service may subscribe to events, and may not erase learners.
        try await MethodProbe(ChatMethods.EventService.subscribeEvents).call(client, tenant)
        await #expect {
            try await MethodProbe(ChatMethods.PrivacyService.eraseLearnerData).call(client, tenant)
        } throws: { error in
            (error as? RPCError)?.code == .permissionDenied
        }
        // Another tenant than the one this service may act for: refused, not processed.
        let elsewhere = CallOptions(
            metadata: [MetadataEntry(key: "tenant-id", value: Array("b0000000-0000-4000-8000-000000000002".utf8))]
        )
        await #expect {
            try await MethodProbe(ChatMethods.EventService.subscribeEvents).call(client, elsewhere)
        } throws: { error in
            let error = error as? RPCError
            return error?.code == .permissionDenied && error?.notProcessed == true
                && error?.message.contains("may not act for tenant") == true
        }
        // Without the tenant, or with a malformed one: refused.
        for options in [
            CallOptions(), CallOptions(metadata: [MetadataEntry(key: "tenant-id", value: Array("district-9".utf8))]),
        ] {
            await #expect {
                try await MethodProbe(ChatMethods.EventService.subscribeEvents).call(client, options)
            } throws: { error in
                (error as? RPCError)?.code == .unauthenticated
            }
        }
        await client.close()
        try await server.stop()
    }
}
