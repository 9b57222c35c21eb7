import ChatDomain
import ChatProto
import ChatStoreTestSupport
import Foundation
import Logging
import Testing

@testable import ChatStore

/// These tests restart PostgreSQL, so they run on a private cluster of their own, not the shared one.
@Suite("Surviving a PostgreSQL restart", .serialized)
struct RestartTests {
    /// Starts a private cluster and runs `body` with its superuser connection string; stops it afterwards.
    func withPrivateCluster(_ body: (String, String) async throws -> Void) async throws {
        let directory = "/tmp/chatd-restart-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        #expect(try await TestDatabase.runScript(["scripts/pgcluster", "start", directory]) == 0)
        defer {
            _ = try? TestDatabase.runScriptBlocking(["scripts/pgcluster", "stop", directory])
            try? FileManager.default.removeItem(atPath: directory)
        }
        try await body("host=\(directory) port=5432 dbname=postgres user=postgres", directory)
    }

    @Test("the pool reconnects: calls in flight fail retryably, the next calls succeed")
    func poolSurvivesRestart() async throws {
        try await self.withPrivateCluster { conninfo, directory in
            let pool = PGPool(conninfo: conninfo, size: 3, logger: Logger(label: "test"))
            defer { pool.shutdown() }
            // Open all three connections.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<3 {
                    group.addTask { try await pool.withConnection { _ = try $0.query("SELECT pg_sleep(0.05)") } }
                }
                try await group.waitForAll()
            }
            #expect(try await TestDatabase.runScript(["scripts/pgcluster", "restart", directory]) == 0)

            var failures = 0
            var successes = 0
            for _ in 0..<6 {
                do {
                    let one = try await pool.withConnection { try $0.query("SELECT 1").int64(row: 0, column: 0) }
                    #expect(one == 1)
                    successes += 1
                } catch let error as StorageError {
                    #expect(error.isRetryable, "\(error.debugDescription)")
                    #expect(successes == 0, "a call failed after the pool had recovered")
                    failures += 1
                }
            }
            // At most one stale connection is found; then every connection reconnects.
            #expect(failures <= 1)
            #expect(successes >= 5)

            // A tenant transaction that finds its connection lost before COMMIT is retried transparently.
            #expect(try await TestDatabase.runScript(["scripts/pgcluster", "restart", directory]) == 0)
            let context = TenantContext(tenantID: Fixture.tenantA, userID: "u", role: .service)
            let seen = try await pool.withTenantTransaction(context) { tx in
                try tx.query("SELECT current_setting('app.tenant_id')").string(row: 0, column: 0)
            }
            #expect(seen == Fixture.tenantA)
        }
    }

    @Test("the LISTEN connection reports notifications, and reconnects after a restart")
    func listenerSurvivesRestart() async throws {
        try await self.withPrivateCluster { conninfo, directory in
            let listener = PGListener(conninfo: conninfo, channels: ["chat_test"], logger: Logger(label: "test"))
            let task = Task { await listener.run() }
            defer { task.cancel() }
            var events = listener.events.makeAsyncIterator()
            #expect(await events.next() == .listening)

            let sender = try PGConnection(conninfo: conninfo)
            try sender.query("SELECT pg_notify('chat_test', 'first')")
            try sender.query("SELECT pg_notify('other_channel', 'ignored')")
            #expect(await events.next() == .notification(channel: "chat_test", payload: "first"))
            sender.close()

            #expect(try await TestDatabase.runScript(["scripts/pgcluster", "restart", directory]) == 0)
            #expect(await events.next() == .listening)
            let again = try PGConnection(conninfo: conninfo)
            try again.query("SELECT pg_notify('chat_test', 'second')")
            #expect(await events.next() == .notification(channel: "chat_test", payload: "second"))
        }
    }
}
