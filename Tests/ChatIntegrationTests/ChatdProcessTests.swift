import ChatApp
import ChatClient
import ChatProto
import ChatRPCCore
import ChatStoreTestSupport
import ChatTLS
import ChatTestSupport
import ChatWire
import Foundation
import NIOCore
import NIOPosix
import Synchronization
import Testing

/// The real `chatd` executable (next to the test bundle), started as a process on the test database.
final class ChatdProcess: Sendable {
    let pid: pid_t
    let port: Int
    /// The admin HTTP listener's port (/healthz, /readyz, /metrics).
    let adminPort: Int
    let log: String
    /// The Ed25519 key the instance's JWKS holds (key id "p").
    let signingKey: String

    /// The chatd binary next to the test bundle.
    static let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        .appendingPathComponent("chatd").path

    /// Its files (keys, JWKS, log), removed with it.
    let directory: String

    /// Its command line without the listen addresses and a test's own arguments (`prepare`): another instance
    /// started with it shares the database, the keys and the tokens.
    let baseArguments: [String]

    private init(
        pid: pid_t,
        port: Int,
        adminPort: Int,
        directory: String,
        signingKey: String,
        baseArguments: [String]
    ) {
        self.baseArguments = baseArguments
        self.pid = pid
        self.port = port
        self.adminPort = adminPort
        self.directory = directory
        self.log = "\(directory)/chatd.log"
        self.signingKey = signingKey
    }

    /// Set once the process has been reaped (its pid may then belong to another process).
    private let reaped = Atomic<Bool>(false)

    deinit {
        // A test that failed before stopping it does not leave chatd running.
        if !self.reaped.load(ordering: .acquiring) {
            kill(self.pid, SIGKILL)
            var status: Int32 = 0
            _ = waitpid(self.pid, &status, 0)
        }
        try? FileManager.default.removeItem(atPath: self.directory)
    }

    /// Starts chatd on a freshly migrated test database, with its files in a new temporary directory.
    static func start(arguments: [String] = []) async throws -> ChatdProcess {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("chatd-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let database = try await TestDatabase.makeMigrated()
        return try await Self.start(database: database, directory: directory, arguments: arguments)
    }

    /// A client of this instance that trusts the test CA.
    func client(
        _ authorization: String? = nil,
        retry: RetryPolicy = RetryPolicy(),
        group: MultiThreadedEventLoopGroup
    ) throws -> ChatClient {
        let tls = ProcessInfo.processInfo.environment["CHAT_TEST_TLS_DIR"] ?? ""
        return ChatClient(
            host: "127.0.0.1",
            port: self.port,
            tls: try TLSContext(configuration: .client(trustRoots: "\(tls)/ca.pem")),
            authorization: authorization,
            retry: retry,
            group: group
        )
    }

    /// Starts chatd on a port the kernel picks (`--listen 127.0.0.1:0`) and returns once it listens, with the port
    /// it logged: no other test can take the port between a probe and chatd's bind.
    /// `databaseURL` replaces the application role's connection string (a pooler in front of the database).
    static func start(
        database: MigratedDatabase,
        directory: String,
        arguments: [String] = [],
        databaseURL: String? = nil
    ) async throws -> ChatdProcess {
        var base = try await Self.prepare(database: database, directory: directory)
        if let databaseURL, let flag = base.firstIndex(of: "--database-url") { base[flag + 1] = databaseURL }
        return try await Self.spawn(
            base: base,
            directory: directory,
            signingKey: "\(directory)/signing.pem",
            arguments: arguments
        )
    }

    /// Starts `base` (a command line from `prepare`) on ports the kernel picks, its log in `directory`.
    private static func spawn(
        base: [String],
        directory: String,
        signingKey: String,
        arguments: [String],
        port: Int = 0
    ) async throws -> ChatdProcess {
        let argv = base + ["--listen", "127.0.0.1:\(port)", "--admin-listen", "127.0.0.1:0"] + arguments
        let log = "\(directory)/chatd.log"
        let pid = try spawnProgram(argv, log: log)
        let (port, adminPort) = try await Self.listeningPorts(pid: pid, log: log)
        return ChatdProcess(
            pid: pid,
            port: port,
            adminPort: adminPort,
            directory: directory,
            signingKey: signingKey,
            baseArguments: base
        )
    }

    /// Another instance of the same deployment as `first`: its database, keys and tokens (its `baseArguments`), on
    /// a port of its own, with its log in a directory of its own. `first` must outlive it (its files are first's).
    /// `port`: the RPC port to listen on (0: one the kernel picks); a restart passes the port it had.
    static func startSibling(
        of first: ChatdProcess,
        arguments: [String] = [],
        port: Int = 0
    ) async throws -> ChatdProcess {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("chatd-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return try await Self.spawn(
            base: first.baseArguments,
            directory: directory,
            signingKey: first.signingKey,
            arguments: arguments,
            port: port
        )
    }

    /// Writes an instance's files into `directory` (the signing key `signing.pem` and its JWKS, the seal keys, a
    /// copy of the server's TLS pair) and returns chatd's command line for them, without the listen addresses:
    /// every instance started with it shares the database and accepts the same tokens.
    static func prepare(database: MigratedDatabase, directory: String) async throws -> [String] {
        let tls = ProcessInfo.processInfo.environment["CHAT_TEST_TLS_DIR"] ?? ""
        let key = "\(directory)/signing.pem"
        #expect(
            try await runProgram("/usr/bin/openssl", ["genpkey", "-algorithm", "ed25519", "-out", key]).status == 0
        )
        let jwks = try await runProgram(CLITests.chatctl, ["token", "jwks", "--key", key, "--kid", "p"])
        try jwks.output.write(toFile: "\(directory)/jwks.json", atomically: true, encoding: .utf8)
        try "1 \(Data(repeating: 7, count: 32).base64EncodedString())\n".write(
            toFile: "\(directory)/seal.keys",
            atomically: true,
            encoding: .utf8
        )
        // Its own copy of the server's pair, which a test may rotate.
        for file in ["server.pem", "server.key"] {
            try FileManager.default.copyItem(atPath: "\(tls)/\(file)", toPath: "\(directory)/\(file)")
        }
        return [
            Self.binary, "--database-url", database.app,
            "--tls-certificate", "\(directory)/server.pem", "--tls-key", "\(directory)/server.key",
            "--auth-jwks", "\(directory)/jwks.json", "--auth-issuer", "test", "--retention-interval", "0",
            "--token-seal-keys", "\(directory)/seal.keys",
            // info: the "listening" line names the port.
            "--log-level", "info",
        ]
    }

    struct DidNotListen: Error, CustomStringConvertible {
        var description: String
    }

    /// The ports in chatd's "listening" log lines (the RPC server's and the admin listener's); fails when chatd
    /// exits first or does not listen within 30 s.
    private static func listeningPorts(pid: pid_t, log: String) async throws -> (rpc: Int, admin: Int) {
        func port(_ text: String, _ key: String) -> Int? {
            for line in text.split(separator: "\n") where line.contains("listening") {
                if let field = line.split(separator: " ").first(where: { $0.hasPrefix(key) }) {
                    return Int(field.dropFirst(key.count))
                }
            }
            return nil
        }
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            if let rpc = port(text, "server.port="), let admin = port(text, "admin.port=") {
                return (rpc, admin)
            }
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                throw DidNotListen(description: "chatd exited before it listened: \(text)")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        kill(pid, SIGKILL)
        var status: Int32 = 0
        _ = waitpid(pid, &status, 0)
        throw DidNotListen(
            description:
                "chatd did not listen within 30 s: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")"
        )
    }

    /// A bearer token for this instance, minted by `chatctl token mint` (off the cooperative pool, which other
    /// tests' calls need while it runs).
    func token(
        role: String,
        tenant: String = Fixture.tenantA,
        sub: String = "process-user",
        key: String? = nil,
        kid: String = "p"
    ) async throws -> String {
        let minted = try await runProgram(
            CLITests.chatctl,
            [
                "token", "mint", "--key", key ?? self.signingKey, "--kid", kid, "--issuer", "test", "--tenant",
                tenant, "--sub", sub, "--role", role,
            ]
        )
        #expect(minted.status == 0, "\(minted.output)")
        return "Bearer " + minted.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// A key rotation at the identity provider: a new Ed25519 key with id `kid` becomes the only key of the JWKS in
    /// the instance's directory (the file it watches, or the one its JWKS URL serves). Returns the key's path.
    func publishNewKey(kid: String) async throws -> String {
        let key = "\(self.directory)/rotated-\(kid).pem"
        #expect(
            try await runProgram("/usr/bin/openssl", ["genpkey", "-algorithm", "ed25519", "-out", key]).status == 0
        )
        let jwks = try await runProgram(CLITests.chatctl, ["token", "jwks", "--key", key, "--kid", kid])
        try jwks.output.write(toFile: "\(self.directory)/jwks.json", atomically: true, encoding: .utf8)
        return key
    }

    /// Waits until the instance answers its health check.
    func waitServing(_ client: ChatClient) async throws {
        var serving = false
        let deadline = ContinuousClock.now + .seconds(30)
        while !serving, ContinuousClock.now < deadline {
            serving = (try? await client.healthCheck(HealthCheckRequest()).status) == .serving
            if !serving { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(serving, "chatd did not come up: \((try? String(contentsOfFile: self.log, encoding: .utf8)) ?? "")")
    }

    /// Waits for the process to exit; its exit status.
    func wait() async throws -> Int32 {
        let pid = self.pid
        let status = try await offPool {
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 {
                guard errno == EINTR else { throw POSIXError(.ECHILD) }
            }
            return (status & 0x7F) == 0 ? (status >> 8) & 0xFF : -1
        }
        self.reaped.store(true, ordering: .releasing)
        return status
    }
}

/// Succeeds its promise when the TLS handshake is done; drops whatever arrives.
final class HandshakeWatcher: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    let done: EventLoopPromise<Void>
    init(done: EventLoopPromise<Void>) { self.done = done }
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is TLSEvent { self.done.succeed() }
    }
    func channelInactive(context: ChannelHandlerContext) {
        struct Closed: Error {}
        self.done.fail(Closed())
    }
}

@Suite("The chatd executable")
struct ChatdProcessTests {
    @Test("serves over TLS; on SIGTERM with idle connections (one never answers PING) exits within 2 s")
    func sigtermWithIdleConnection() async throws {
        let chatd = try await ChatdProcess.start(arguments: ["--drain-grace", "30"])
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let tls = ProcessInfo.processInfo.environment["CHAT_TEST_TLS_DIR"] ?? ""
        let client = try chatd.client(group: group)
        try await chatd.waitServing(client)
        // A second idle connection that never answers PING (the drain's PING included): it must not hold shutdown.
        let clientTLS = try TLSContext(configuration: .client(trustRoots: "\(tls)/ca.pem"))
        let handshake = group.next().makePromise(of: Void.self)
        let silent: any Channel
        do {
            silent =
                try await ClientBootstrap(group: group)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            TLSHandler(context: clientTLS, serverName: "127.0.0.1")
                        )
                        try channel.pipeline.syncOperations.addHandler(HandshakeWatcher(done: handshake))
                    }
                }
                .connect(host: "127.0.0.1", port: chatd.port)
                .get()
        } catch {
            handshake.fail(error)  // a promise is never left unfulfilled (NIO traps on a leaked one)
            throw error
        }
        try await handshake.futureResult.get()
        var greeting = ByteBuffer(bytes: WireConstants.preface)
        greeting.writeFrame(.settings([]))
        try await silent.writeAndFlush(greeting)
        // The Swift client's connection stays open and idle too.
        let started = ContinuousClock.now
        kill(chatd.pid, SIGTERM)
        let status = try await chatd.wait()
        let took = ContinuousClock.now - started
        #expect(status == 0, "\((try? String(contentsOfFile: chatd.log, encoding: .utf8)) ?? "")")
        #expect(took < .seconds(2), "chatd took \(took) to exit")
        await client.close()
        try? await silent.close()
        try await group.shutdownGracefully()
    }

    @Test(
        "the executable serves every method, through authentication, rate limits and the database, as assembled by ChatApp"
    )
    func servesTheAssembledServices() async throws {
        // A per-user budget of 3 calls a second (burst 6), so that the limiter's presence is observable.
        let chatd = try await ChatdProcess.start(arguments: ["--rate-per-user", "3"])
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        // Refusals are what this test looks for: no retries.
        func client(_ authorization: String?) throws -> ChatClient {
            try chatd.client(authorization, retry: RetryPolicy(maxAttempts: 1), group: group)
        }
        let anonymous = try client(nil)
        try await chatd.waitServing(anonymous)

        // Every method of the contract is registered (the listing is public).
        let listing = try await anonymous.listMethods(ListMethodsRequest())
        #expect(Set(listing.methods.map(\.name)) == Set(ChatMethods.all.map(\.path)))
        #expect(listing.serverVersion == chatdVersion)

        // A tenant admin's write and read go through the interceptors and the database.
        let admin = try client(try await chatd.token(role: "tenant_admin"))
        let created = try await admin.createThread(CreateThreadRequest(learnerId: Fixture.learnerA1, title: "Process"))
        let threadID = try #require(created.thread?.id)
        let sent = try await admin.sendMessage(
            SendMessageRequest(threadId: threadID, body: "through chatd", idempotencyKey: "process-1")
        )
        #expect(sent.message?.seq == 1)
        let page = try await admin.listMessages(ListMessagesRequest(threadId: threadID))
        #expect(page.messages.map(\.body) == ["through chatd"])

        // Without --service-tenants, a service principal may act for no tenant.
        let service = try client(try await chatd.token(role: "service", sub: "indexer"))
        do {
            _ = try await service.listThreads(ListThreadsRequest())
            Issue.record("a service principal without an allowance was served")
        } catch let error as RPCError {
            #expect(error.code == .permissionDenied && error.message.contains("--service-tenants"), "\(error)")
        }

        // The rate limiter is in the chain: a burst well past 6 calls of one user is refused, not served.
        let burst = try client(try await chatd.token(role: "teacher", sub: "burst-user"))
        var refused: RPCError?
        for _ in 0..<40 where refused == nil {
            do {
                _ = try await burst.listThreads(ListThreadsRequest())
            } catch let error as RPCError {
                refused = error
            }
        }
        #expect(refused?.code == .resourceExhausted, "\(String(describing: refused))")

        // The admin listener: up, ready, and the calls above in the per-method metrics.
        #expect(try await httpGet(port: chatd.adminPort, "/healthz") == (200, "ok\n"))
        #expect(try await httpGet(port: chatd.adminPort, "/readyz") == (200, "ready\n"))
        let (status, text) = try await httpGet(port: chatd.adminPort, "/metrics")
        #expect(status == 200)
        let metrics = Set(text.split(separator: "\n").map(String.init))
        func series(_ service: String, _ method: String, _ code: String, _ value: Int) -> String {
            "grpc_server_handled_total{grpc_type=\"unary\",grpc_service=\"chat.v1.\(service)\","
                + "grpc_method=\"\(method)\",grpc_code=\"\(code)\"} \(value)"
        }
        #expect(metrics.contains(series("ThreadService", "CreateThread", "OK", 1)), "\(text)")
        #expect(metrics.contains(series("MessageService", "SendMessage", "OK", 1)))
        #expect(metrics.contains(series("ThreadService", "ListThreads", "PermissionDenied", 1)))
        #expect(metrics.contains(series("ThreadService", "ListThreads", "ResourceExhausted", 1)))
        #expect(
            metrics.contains(
                "grpc_server_started_total{grpc_type=\"unary\",grpc_service=\"chat.v1.MessageService\",grpc_method=\"SendMessage\"} 1"
            )
        )
        #expect(
            text.contains(
                "grpc_server_handling_seconds_bucket{grpc_type=\"unary\",grpc_service=\"chat.v1.ThreadService\""
            )
        )
        #expect(metrics.contains("chat_db_pool_connections 8.0"))
        // The burst's refusal, by bucket; every token verified once, then from the cache.
        #expect(metrics.contains("chat_rate_limited_total{bucket=\"principal\"} 1"), "\(text)")
        #expect(metrics.contains("chat_rate_limited_total{bucket=\"tenant\"} 0"))
        #expect(metrics.contains("chat_token_verifications_total{result=\"valid\"} 3"))
        #expect(metrics.contains { $0.hasPrefix("chat_token_verifications_total{result=\"cached\"} ") })
        #expect(text.contains("chat_db_pool_wait_seconds_count "))
        // No tenant, user or thread id is ever a label.
        #expect(!text.contains(Fixture.tenantA) && !text.contains(threadID) && !text.contains("burst-user"))

        // An open stream is counted while it runs; the client cancelling it ends it as Canceled.
        @Sendable func scraped(_ line: String) async throws -> Bool {
            try await httpGet(port: chatd.adminPort, "/metrics").body.split(separator: "\n").contains { $0 == line }
        }
        let open = #"chat_server_streams_open{grpc_service="chat.v1.LiveService",grpc_method="WatchThread"}"#
        let watcher = Task {
            for try await _ in try await admin.watchThread(WatchThreadRequest(threadId: threadID)) {}
        }
        try await waitUntil("the stream is counted open") { () async throws -> Bool in try await scraped(open + " 1.0")
        }
        watcher.cancel()
        _ = await watcher.result
        try await waitUntil("the cancelled stream is counted closed") { () async throws -> Bool in
            try await scraped(open + " 0.0")
        }
        #expect(
            try await scraped(
                #"grpc_server_handled_total{grpc_type="server_stream",grpc_service="chat.v1.LiveService",grpc_method="WatchThread",grpc_code="Canceled"} 1"#
            )
        )

        kill(chatd.pid, SIGTERM)
        #expect(try await chatd.wait() == 0)
        for client in [anonymous, admin, service, burst] { await client.close() }
        try await group.shutdownGracefully()
    }

    @Test(
        "the JWKS file rotated (new key in, old key out): new tokens accepted, old ones refused, cached too, no restart"
    )
    func jwksRotation() async throws {
        let chatd = try await ChatdProcess.start(arguments: ["--auth-jwks-reload-interval", "0.2"])
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let old = try chatd.client(try await chatd.token(role: "tenant_admin", sub: "before"), group: group)
        try await chatd.waitServing(old)
        _ = try await old.listThreads(ListThreadsRequest())  // verified, and now in the cache of verified tokens

        let newKey = try await chatd.publishNewKey(kid: "q")
        let rotated = try chatd.client(
            try await chatd.token(role: "tenant_admin", sub: "after", key: newKey, kid: "q"),
            group: group
        )
        try await waitUntil("the new key is in use") { () async throws -> Bool in
            (try? await rotated.listThreads(ListThreadsRequest())) != nil
        }
        // The old key is gone: its token fails though it was verified (and cached) before the rotation.
        do {
            _ = try await old.listThreads(ListThreadsRequest())
            Issue.record("a token of the removed key was still accepted")
        } catch let error as RPCError {
            #expect(error.code == .unauthenticated, "\(error)")
        }

        // A file that does not parse is ignored: the keys in use stay.
        try "{ not json".write(toFile: "\(chatd.directory)/jwks.json", atomically: true, encoding: .utf8)
        try await waitUntil("the bad file was seen and refused") {
            ((try? String(contentsOfFile: chatd.log, encoding: .utf8)) ?? "").contains("does not parse")
        }
        _ = try await rotated.listThreads(ListThreadsRequest())

        kill(chatd.pid, SIGTERM)
        #expect(try await chatd.wait() == 0)
        await old.close()
        await rotated.close()
        try await group.shutdownGracefully()
    }

    @Test("the certificate rotated on SIGHUP: a new connection sees the new one, an open WatchThread stream runs on")
    func certificateRotation() async throws {
        let chatd = try await ChatdProcess.start()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let client = try chatd.client(try await chatd.token(role: "tenant_admin"), group: group)
        try await chatd.waitServing(client)
        #expect(try await Self.servedSubject(chatd.port) == "CN = localhost")
        // The development certificate is valid for 825 days.
        let before = try #require(try await Self.certificateExpiry(chatd.adminPort))
        #expect(before > Date().timeIntervalSince1970 + 30 * 86_400)
        let created = try await client.createThread(CreateThreadRequest(learnerId: Fixture.learnerA1, title: "TLS"))
        let threadID = try #require(created.thread?.id)
        let stream = try await client.watchThread(WatchThreadRequest(threadId: threadID))
        var events = stream.makeAsyncIterator()
        _ = try await events.next()  // the thread's head: the stream is open

        // A new pair from the same CA, written over the files chatd reads, then SIGHUP.
        let tls = ProcessInfo.processInfo.environment["CHAT_TEST_TLS_DIR"] ?? ""
        let script = """
            set -e
            cd '\(chatd.directory)'
            openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out new.key 2>/dev/null
            openssl req -new -key new.key -subj /CN=rotated.localhost -out new.csr 2>/dev/null
            printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > new.ext
            openssl x509 -req -in new.csr -CA '\(tls)/ca.pem' -CAkey '\(tls)/ca.key' -CAcreateserial \\
                -CAserial new.srl -days 2 -extfile new.ext -out new.pem 2>/dev/null
            mv new.key server.key
            mv new.pem server.pem
            """
        let made = try await runProgram("/bin/sh", ["-c", script])
        #expect(made.status == 0, "\(made.output)")
        kill(chatd.pid, SIGHUP)
        try await waitUntil("new connections get the new certificate") { () async throws -> Bool in
            try await Self.servedSubject(chatd.port) == "CN = rotated.localhost"
        }
        // The certificate's expiry metric follows the pair new connections get: the new one is valid for 2 days.
        let expiry = try await Self.certificateExpiry(chatd.adminPort)
        let now = Date().timeIntervalSince1970
        #expect(expiry.map { $0 > now + 86_400 && $0 < now + 3 * 86_400 } == true, "\(String(describing: expiry))")
        // The stream opened before the rotation goes on, on its connection of the old pair.
        _ = try await client.sendMessage(
            SendMessageRequest(threadId: threadID, body: "after the rotation", idempotencyKey: "rotation-1")
        )
        var delivered: String?
        while delivered == nil, let event = try await events.next() {
            if case .message(let message)? = event.event?.event { delivered = message.message?.body }
        }
        #expect(delivered == "after the rotation")
        // And a new client connects (it verifies the new certificate against the CA).
        let fresh = try chatd.client(group: group)
        #expect(try await fresh.healthCheck(HealthCheckRequest()).status == .serving)

        kill(chatd.pid, SIGTERM)
        #expect(try await chatd.wait() == 0)
        await client.close()
        await fresh.close()
        try await group.shutdownGracefully()
    }

    /// `chat_tls_certificate_expiry_timestamp_seconds` as scraped from the admin listener.
    static func certificateExpiry(_ adminPort: Int) async throws -> Double? {
        let text = try await httpGet(port: adminPort, "/metrics").body
        let line = text.split(separator: "\n").first { $0.hasPrefix("chat_tls_certificate_expiry_timestamp_seconds ") }
        return line.flatMap { Double($0.split(separator: " ")[1]) }
    }

    /// The subject of the certificate a new TLS connection to `port` is served (openssl s_client).
    static func servedSubject(_ port: Int) async throws -> String {
        let tls = ProcessInfo.processInfo.environment["CHAT_TEST_TLS_DIR"] ?? ""
        let shown = try await runProgram(
            "/bin/sh",
            [
                "-c",
                "openssl s_client -connect 127.0.0.1:\(port) -servername localhost -alpn chat/1 "
                    + "-CAfile '\(tls)/ca.pem' </dev/null 2>/dev/null | openssl x509 -noout -subject",
            ]
        )
        let line = shown.output.split(separator: "\n").first { $0.hasPrefix("subject=") } ?? ""
        return line.dropFirst("subject=".count).trimmingCharacters(in: .whitespaces)
    }

    @Test("every flag from a CHATD_ variable (the command line wins), --print-config redacts, JSON logs parse")
    func environmentAndPrintConfig() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("chatd-env-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let tls = ProcessInfo.processInfo.environment["CHAT_TEST_TLS_DIR"] ?? ""
        #expect(
            try await runProgram(
                "/usr/bin/openssl",
                ["genpkey", "-algorithm", "ed25519", "-out", "\(directory)/k.pem"]
            ).status == 0
        )
        let jwks = try await runProgram(
            CLITests.chatctl,
            ["token", "jwks", "--key", "\(directory)/k.pem", "--kid", "e"]
        )
        try jwks.output.write(toFile: "\(directory)/jwks.json", atomically: true, encoding: .utf8)
        try "1 \(Data(repeating: 9, count: 32).base64EncodedString())\n".write(
            toFile: "\(directory)/seal.keys",
            atomically: true,
            encoding: .utf8
        )
        func chatd(_ environment: String, _ arguments: String) async throws -> (status: Int32, output: String) {
            try await runProgram("/bin/sh", ["-c", "env -i \(environment) '\(ChatdProcess.binary)' \(arguments) 2>&1"])
        }
        let environment = [
            "CHATD_DATABASE_URL='postgresql://chat_app:hunter2@db.internal/chat'",
            "CHATD_TLS_CERTIFICATE='\(tls)/server.pem'", "CHATD_TLS_KEY='\(tls)/server.key'",
            "CHATD_AUTH_JWKS='\(directory)/jwks.json'", "CHATD_AUTH_ISSUER=env-issuer",
            "CHATD_TOKEN_SEAL_KEYS='\(directory)/seal.keys'", "CHATD_RATE_PER_USER=7", "CHATD_LISTEN=127.0.0.1:7999",
            "CHATD_TLS_REQUIRE_CLIENT_CERTIFICATE=false",
        ].joined(separator: " ")
        let printed = try await chatd(environment, "serve --print-config --listen 127.0.0.1:7000")
        #expect(printed.status == 0, "\(printed.output)")
        let lines = Set(printed.output.split(separator: "\n").map(String.init))
        #expect(lines.contains("rate-per-user: 7.0"), "\(printed.output)")
        #expect(lines.contains("auth-issuer: env-issuer"))
        #expect(lines.contains("listen: 127.0.0.1:7000"), "the command line wins over CHATD_LISTEN")
        #expect(lines.contains("database-url: postgresql://chat_app:***@db.internal/chat"))
        #expect(!printed.output.contains("hunter2"), "the password is never printed")
        #expect(!printed.output.contains(Data(repeating: 9, count: 32).base64EncodedString()))
        #expect(lines.contains("otlp-traces-endpoint: off") && lines.contains("trace-sample-ratio: off"))

        // Tracing and a JWKS URL (not fetched to print): shown, the collector's credentials redacted.
        let traced = try await chatd(
            environment + " CHATD_OTLP_TRACES_ENDPOINT='https://spans:s3cret@collector.internal:4318/v1/traces'"
                + " CHATD_TRACE_SAMPLE_RATIO=0.25",
            "serve --print-config --auth-jwks https://idp.internal/.well-known/jwks.json"
        )
        #expect(traced.status == 0, "\(traced.output)")
        let tracedLines = Set(traced.output.split(separator: "\n").map(String.init))
        #expect(tracedLines.contains("otlp-traces-endpoint: https://spans:***@collector.internal:4318/v1/traces"))
        #expect(tracedLines.contains("trace-sample-ratio: 0.25"), "\(traced.output)")
        #expect(!traced.output.contains("s3cret"))
        #expect(
            tracedLines.contains { $0.hasPrefix("auth-jwks: https://idp.internal/.well-known/jwks.json (") },
            "\(traced.output)"
        )

        // NATS as the live bus: printed with its credentials redacted, no LISTEN connection; a URL of another
        // scheme is refused with what was wrong.
        let bus = try await chatd(
            environment + " CHATD_NATS_URL='nats://chatd:b4sh@nats-1:4222,nats://nats-2:4222'",
            "serve --print-config"
        )
        let busLines = Set(bus.output.split(separator: "\n").map(String.init))
        #expect(busLines.contains("live-bus: nats") && busLines.contains("listen-database-url: off (NATS)"))
        #expect(busLines.contains("nats-url: nats://chatd:***@nats-1:4222,nats://nats-2:4222"), "\(bus.output)")
        #expect(!bus.output.contains("b4sh"))
        #expect(lines.contains("live-bus: postgres"), "the default: LISTEN/NOTIFY")
        let badBus = try await chatd(environment, "serve --print-config --nats-url http://chatd:b4sh@nats-1:4222")
        #expect(badBus.status != 0 && badBus.output.contains("nats:// or tls://"), "\(badBus.output)")
        #expect(!badBus.output.contains("b4sh"), "the refusal does not echo the password")

        // A variable that names no flag is an error, as a mistyped flag is; a switch takes true or false.
        let typo = try await chatd(environment + " CHATD_RATE_PER_USERS=9", "serve --print-config")
        #expect(
            typo.status != 0 && typo.output.contains("CHATD_RATE_PER_USERS names no flag of chatd"),
            "\(typo.output)"
        )
        let badSwitch = try await chatd(
            environment + " CHATD_TLS_REQUIRE_CLIENT_CERTIFICATE=maybe",
            "serve --print-config"
        )
        #expect(badSwitch.status != 0 && badSwitch.output.contains("is a switch"), "\(badSwitch.output)")

        // JSON logs: one object a line, with the level, the message and the metadata as fields.
        let database = try await TestDatabase.makeMigrated()
        // One environment for serve and migrate: the variables of serve's flags do not trouble migrate.
        let migrated = try await chatd(
            "CHATD_DATABASE_URL='\(database.owner)' CHATD_RATE_PER_USER=7 CHATD_LISTEN=127.0.0.1:7999",
            "migrate --log-format json"
        )
        #expect(migrated.status == 0, "\(migrated.output)")
        let objects = migrated.output.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        #expect(!objects.isEmpty && objects.count == migrated.output.split(separator: "\n").count, "\(migrated.output)")
        let done = objects.first { $0["message"] as? String == "migrations done" }
        #expect(done?["level"] as? String == "info", "\(objects)")
        #expect((done?["migration.present"] as? String)?.contains("6") == true, "the metadata is a field of its own")
        #expect((done?["time"] as? String)?.hasSuffix("Z") == true)
    }
}
