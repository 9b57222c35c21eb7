import ChatClient
import ChatProto
import ChatRPCCore
import ChatStoreTestSupport
import ChatTestSupport
import Foundation
import NIOCore
import NIOPosix
import Testing

@testable import ChatApp

@Suite("JWKS from the identity provider's https URL", .serialized)
struct JWKSFetchTests {
    @Test("a JWKS URL must be https://host[:port]/path; its parts")
    func endpoints() throws {
        let plain = try JWKSFetcher.Endpoint("https://idp.example/.well-known/jwks.json")
        #expect(plain.host == "idp.example" && plain.port == 443 && plain.target == "/.well-known/jwks.json")
        let ported = try JWKSFetcher.Endpoint("https://127.0.0.1:8443")
        #expect(ported.host == "127.0.0.1" && ported.port == 8443 && ported.target == "/")
        let v6 = try JWKSFetcher.Endpoint("https://[::1]:9000/keys?tenant=x#frag")
        #expect(v6.host == "::1" && v6.port == 9000 && v6.target == "/keys?tenant=x")
        for bad in [
            "http://idp.example/jwks.json", "https://", "https:///jwks", "https://user:pw@idp.example/",
            "https://idp.example:0/", "https://idp.example:99999/", "https://idp.example:port/", "ftp://x",
        ] {
            #expect(throws: JWKSFetcher.FetchError.self, "\(bad)") { try JWKSFetcher.Endpoint(bad) }
        }
    }

    @Test("fetched at start, again on a token with an unknown key id (rate-limited); a bad answer keeps the keys")
    func fetchAndRotate() async throws {
        let tls = ProcessInfo.processInfo.environment["CHAT_TEST_TLS_DIR"] ?? ""
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("chatd-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        // The identity provider: an HTTPS server with a certificate of the test CA, serving the directory.
        let idp = try await PythonTool.start(
            "https_file_server.py",
            [directory, "\(tls)/server.pem", "\(tls)/server.key"]
        )
        @Sendable func fetches() -> Int { idp.lines.filter { $0.contains("\"get\": \"/jwks.json\"") }.count }
        let database = try await TestDatabase.makeMigrated()
        // start() writes the JWKS of key "p" into the directory the server serves; the URL replaces the file.
        let chatd = try await ChatdProcess.start(
            database: database,
            directory: directory,
            arguments: [
                "--auth-jwks", "https://127.0.0.1:\(idp.port)/jwks.json", "--auth-jwks-ca", "\(tls)/ca.pem",
                "--auth-jwks-min-refresh-interval", "1", "--auth-jwks-refresh-interval", "3600",
            ]
        )
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let old = try chatd.client(try await chatd.token(role: "tenant_admin", sub: "before"), group: group)
        try await chatd.waitServing(old)
        _ = try await old.listThreads(ListThreadsRequest())
        #expect(fetches() == 1, "one fetch before serving: \(idp.lines)")

        // The provider rotates: key "q" published, "p" withdrawn.
        let newKey = try await chatd.publishNewKey(kid: "q")
        let rotated = try chatd.client(
            try await chatd.token(role: "tenant_admin", sub: "after", key: newKey, kid: "q"),
            group: group
        )
        // The first token of "q" names a key id chatd lacks: refused, and chatd fetches (no schedule is due).
        try await waitUntil("the new key is fetched and used", limit: .seconds(10)) { () async throws -> Bool in
            (try? await rotated.listThreads(ListThreadsRequest())) != nil
        }
        do {
            _ = try await old.listThreads(ListThreadsRequest())
            Issue.record("a token of the withdrawn key was still accepted")
        } catch let error as RPCError {
            #expect(error.code == .unauthenticated, "\(error)")
        }

        // Tokens with unknown key ids, as fast as they come: at most one fetch a second (the minimum interval).
        let before = fetches()
        let started = ContinuousClock.now
        let stranger = try chatd.client(
            try await chatd.token(role: "tenant_admin", sub: "stranger", key: newKey, kid: "unknown-kid"),
            group: group
        )
        for _ in 0..<40 {
            _ = try? await stranger.listThreads(ListThreadsRequest())
            try await Task.sleep(for: .milliseconds(50))
        }
        let seconds = Double((ContinuousClock.now - started).components.seconds) + 1
        #expect(fetches() - before >= 1)
        #expect(Double(fetches() - before) <= seconds + 1, "\(fetches() - before) fetches in \(seconds) s")

        // An answer that is not a key set is refused: the keys in use stay.
        try "{ not json".write(toFile: "\(directory)/jwks.json", atomically: true, encoding: .utf8)
        let refused = fetches()
        _ = try? await stranger.listThreads(ListThreadsRequest())
        try await waitUntil("the bad answer was fetched and refused", limit: .seconds(10)) { () async throws -> Bool in
            _ = try? await stranger.listThreads(ListThreadsRequest())
            return ((try? String(contentsOfFile: chatd.log, encoding: .utf8)) ?? "").contains("does not parse")
        }
        #expect(fetches() > refused)
        _ = try await rotated.listThreads(ListThreadsRequest())

        kill(chatd.pid, SIGTERM)
        #expect(try await chatd.wait() == 0)
        await old.close()
        await rotated.close()
        await stranger.close()
        try await group.shutdownGracefully()
    }

    @Test("chatd does not start when the JWKS cannot be fetched, and says why")
    func unreachable() async throws {
        let tls = ProcessInfo.processInfo.environment["CHAT_TEST_TLS_DIR"] ?? ""
        let database = try await TestDatabase.makeMigrated()
        // A port nothing listens on (the kernel's pick, released).
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0).get()
        let port = listener.localAddress?.port ?? 1
        try await listener.close()
        let seal = FileManager.default.temporaryDirectory.appendingPathComponent("seal-\(UUID()).keys").path
        try "1 \(Data(repeating: 7, count: 32).base64EncodedString())\n".write(
            toFile: seal,
            atomically: true,
            encoding: .utf8
        )
        defer { try? FileManager.default.removeItem(atPath: seal) }
        let run = try await runProgram(
            ChatdProcess.binary,
            [
                "--database-url", database.app, "--listen", "127.0.0.1:0", "--admin-listen", "off",
                "--tls-certificate", "\(tls)/server.pem", "--tls-key", "\(tls)/server.key",
                "--auth-jwks", "https://127.0.0.1:\(port)/jwks.json", "--auth-jwks-ca", "\(tls)/ca.pem",
                "--auth-issuer", "test", "--token-seal-keys", seal,
            ]
        )
        #expect(run.status != 0)
        #expect(run.output.contains("cannot fetch --auth-jwks"), "\(run.output)")
        let plain = try await runProgram(
            ChatdProcess.binary,
            [
                "--database-url", database.app, "--tls-certificate", "\(tls)/server.pem", "--tls-key",
                "\(tls)/server.key", "--auth-jwks", "http://127.0.0.1:\(port)/jwks.json", "--auth-issuer", "test",
                "--token-seal-keys", seal,
            ]
        )
        #expect(plain.status != 0 && plain.output.contains("must be https://"), "\(plain.output)")
    }
}
