import ChatClient
import ChatProto
import ChatRPCCore
import ChatStoreTestSupport
import ChatTestSupport
import Foundation
import NIOCore
import NIOPosix
import Testing

/// A real pgbouncer (Debian's) in transaction mode between chatd and PostgreSQL, started and stopped by the test,
/// as the cluster's unprivileged owner (pgbouncer refuses to run as root).
enum PgBouncer {
    /// One server connection per database and user: every client's transactions share it, so that a statement
    /// prepared by name in one client's session is visible to (and collides with) the others'.
    static func start(database: MigratedDatabase) async throws -> ServerProcess {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("pgbouncer-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let socket = try TestDatabase.socketDirectory
        let root = getuid() == 0
        try "\"chat_app\" \"\"\n".write(toFile: "\(directory)/users.txt", atomically: true, encoding: .utf8)
        for _ in 0..<5 {
            let port = Int.random(in: 20_000...45_000)
            try """
            [databases]
            chat = host=\(socket) port=5432 dbname=\(database.name)
            [pgbouncer]
            listen_addr = 127.0.0.1
            listen_port = \(port)
            unix_socket_dir =
            auth_type = trust
            auth_file = \(directory)/users.txt
            pool_mode = transaction
            default_pool_size = 1
            max_client_conn = 200
            logfile = \(directory)/pgbouncer.log
            pidfile = \(directory)/pgbouncer.pid
            """.write(toFile: "\(directory)/pgbouncer.ini", atomically: true, encoding: .utf8)
            if root {
                _ = try await runProgram("/bin/chown", ["-R", "postgres", directory])
            }
            let argv =
                (root ? ["/usr/sbin/runuser", "-u", "postgres", "--"] : []) + [
                    "/usr/sbin/pgbouncer", "\(directory)/pgbouncer.ini",
                ]
            if let pid = try await spawnListening(argv, log: "\(directory)/stdout.log", port: port) {
                return ServerProcess(pid: pid, port: port, directory: directory)
            }
        }
        let log = (try? String(contentsOfFile: "\(directory)/pgbouncer.log", encoding: .utf8)) ?? ""
        let out = (try? String(contentsOfFile: "\(directory)/stdout.log", encoding: .utf8)) ?? ""
        throw ServerProcess.DidNotStart(description: "pgbouncer did not listen: \(log) \(out)")
    }

    /// The application role's connection string through pgbouncer on `port`.
    static func conninfo(port: Int) -> String { "host=127.0.0.1 port=\(port) dbname=chat user=chat_app" }
}

@Suite("chatd behind pgbouncer in transaction mode")
struct PgBouncerTests {
    static let unlimited = ["--rate-per-user", "100000", "--rate-per-tenant", "100000"]

    @Test(
        "with --database-pooler: concurrent core calls, idempotent retries, live delivery (LISTEN straight to PostgreSQL); without it, named statements collide"
    )
    func throughPgbouncer() async throws {
        let database = try await TestDatabase.makeMigrated()
        let bouncer = try await PgBouncer.start(database: database)
        defer { bouncer.stop() }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("chatd-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let chatd = try await ChatdProcess.start(
            database: database,
            directory: directory,
            arguments: Self.unlimited + ["--database-pooler", "--listen-database-url", database.app],
            databaseURL: PgBouncer.conninfo(port: bouncer.port)
        )
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let token = try await chatd.token(role: "tenant_admin", sub: "pooled")
        let client = try chatd.client(token, group: group)
        try await chatd.waitServing(client)

        let thread = try #require(
            try await client.createThread(CreateThreadRequest(learnerId: Fixture.learnerA1, title: "pooled")).thread
        )
        var watch = try await client.watchThread(WatchThreadRequest(threadId: thread.id)).makeAsyncIterator()
        guard case .head? = try await watch.next()?.event?.event else {
            Issue.record("no head")
            return
        }
        // 40 sends from 8 tasks at once: chatd's 8 pool connections, one server connection behind pgbouncer.
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            for task in 0..<8 {
                tasks.addTask {
                    for index in 0..<5 {
                        _ = try await client.sendMessage(
                            SendMessageRequest(threadId: thread.id, body: "p\(task)-\(index)")
                        )
                        _ = try await client.getThread(GetThreadRequest(threadId: thread.id))
                    }
                }
            }
            try await tasks.waitForAll()
        }
        // Live delivery: the hub's LISTEN goes straight to PostgreSQL, its NOTIFY through the pooler.
        var seen = Set<String>()
        while seen.count < 40, let response = try await watch.next() {
            if case .message(let event)? = response.event?.event, let body = event.message?.body { seen.insert(body) }
        }
        #expect(seen.count == 40)
        let listed = try await client.listMessages(
            ListMessagesRequest(threadId: thread.id, page: PageRequest(pageSize: 100))
        )
        #expect(listed.messages.count == 40)
        // A retried mutation with its key has one effect through the pooler too.
        let key = Array(UUID().uuidString.utf8.prefix(32))
        let first = try await client.sendMessage(
            SendMessageRequest(threadId: thread.id, body: "once"),
            options: CallOptions(idempotencyKey: key)
        )
        let again = try await client.sendMessage(
            SendMessageRequest(threadId: thread.id, body: "once"),
            options: CallOptions(idempotencyKey: key)
        )
        #expect(first == again && first.message?.seq == 41)
        let read = try await client.markRead(MarkReadRequest(threadId: thread.id, upToSeq: 41))
        #expect(read.readSeq == 41)
        await client.close()
        kill(chatd.pid, SIGTERM)
        #expect(try await chatd.wait() == 0)

        // The trap the flag avoids: statements prepared by name in one session, on the server connection every
        // session shares.
        let named = FileManager.default.temporaryDirectory.appendingPathComponent("chatd-\(UUID())").path
        try FileManager.default.createDirectory(atPath: named, withIntermediateDirectories: true)
        let unpooled = try await ChatdProcess.start(
            database: database,
            directory: named,
            arguments: Self.unlimited + ["--listen-database-url", database.app],
            databaseURL: PgBouncer.conninfo(port: bouncer.port)
        )
        let plain = try unpooled.client(
            try await unpooled.token(role: "tenant_admin", sub: "named"),
            retry: RetryPolicy(maxAttempts: 1),
            group: group
        )
        var failures = 0
        try await withThrowingTaskGroup(of: Int.self) { tasks in
            for task in 0..<8 {
                tasks.addTask {
                    var failed = 0
                    for index in 0..<5 {
                        do {
                            _ = try await plain.sendMessage(
                                SendMessageRequest(threadId: thread.id, body: "n\(task)-\(index)")
                            )
                            _ = try await plain.getThread(GetThreadRequest(threadId: thread.id))
                        } catch {
                            failed += 1
                        }
                    }
                    return failed
                }
            }
            for try await failed in tasks { failures += failed }
        }
        #expect(failures > 0, "named statements behind a transaction-mode pooler did not collide")
        await plain.close()
        kill(unpooled.pid, SIGTERM)
        _ = try await unpooled.wait()
        try await group.shutdownGracefully()
    }
}
