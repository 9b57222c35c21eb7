import ChatStoreTestSupport
import ChatTestSupport
import Foundation
import Logging
import Synchronization
import Testing

@testable import ChatStore

/// How a call through the pool ended.
private enum Outcome: Hashable {
    case ok
    case overloaded(noEffect: Bool)
    case admissionTimeout(noEffect: Bool)
    case timedOut
    case cancelled
    case other(String)

    init(_ error: any Error) {
        switch error {
        case let error as StorageError where error.code == .overloaded: self = .overloaded(noEffect: error.hadNoEffect)
        case let error as StorageError where error.code == .admissionTimeout:
            self = .admissionTimeout(noEffect: error.hadNoEffect)
        case let error as StorageError where error.code == .timedOut: self = .timedOut
        case is CancellationError: self = .cancelled
        default: self = .other(String(reflecting: error))
        }
    }
}

/// Runs `statement` through the pool within a budget ending `deadline` from now.
private func call(_ pool: PGPool, _ statement: SQL, deadline: Duration?) async -> (Outcome, Duration) {
    let start = ContinuousClock.now
    let budget = DatabaseBudget(deadline: deadline.map { start.advanced(by: $0) })
    do {
        try await DatabaseBudget.$current.withValue(budget) {
            _ = try await pool.tenantBatch(Fixture.admin(Fixture.tenantA), [statement]) { _ in true }
        }
        return (.ok, start.duration(to: .now))
    } catch {
        return (Outcome(error), start.duration(to: .now))
    }
}

/// Statements of the test cluster running `text` now, other than the asking one.
private func activeStatements(_ database: MigratedDatabase, like text: String) throws -> Int64 {
    let superuser = try PGConnection(conninfo: database.superuser)
    defer { superuser.close() }
    let result = try superuser.query(
        """
        SELECT count(*) FROM pg_stat_activity
        WHERE state = 'active' AND pid <> pg_backend_pid() AND query LIKE \("%" + text + "%")
        """
    )
    return try result.int64(row: 0, column: 0) ?? -1
}

@Suite("The database path is bounded: queue, admission by deadline, cancellation, statement timeouts")
struct PoolBoundsTests {
    @Test("ten times more calls than connections: each ends in time, refused at once or expired, never hung")
    func overload() async throws {
        let database = try await TestDatabase.makeMigrated()
        let pool = PGPool(
            conninfo: database.app,
            configuration: .init(size: 2, maxQueued: 6),
            logger: Logger(label: "test")
        )
        defer { pool.shutdown() }
        let deadline = Duration.milliseconds(1000)
        let results = await withTaskGroup(of: (Outcome, Duration).self) { group in
            for _ in 0..<20 {
                group.addTask { await call(pool, "SELECT pg_sleep(0.4)", deadline: deadline) }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        let outcomes = results.map(\.0)
        // Twelve find the queue full and fail at once, having done nothing.
        #expect(outcomes.filter { $0 == .overloaded(noEffect: true) }.count >= 10, "\(results)")
        #expect(outcomes.filter { $0 == .ok }.count >= 2)
        // The rest ran out of time: in the queue (no effect) or in their statement (cancelled by its timeout).
        #expect(outcomes.filter { $0 == .admissionTimeout(noEffect: true) || $0 == .timedOut }.count >= 2)
        #expect(
            outcomes.allSatisfy {
                [.ok, .overloaded(noEffect: true), .admissionTimeout(noEffect: true), .timedOut].contains($0)
            },
            "\(outcomes)"
        )
        // Every call ended close to its deadline at the latest: well before the pool's 5 s queue timeout or 30 s
        // statement limit, which a call the deadline did not bound would reach (the slack is for a loaded machine:
        // 2.1 s was seen under the full suite on 2 cores).
        let slowest = results.map(\.1).max() ?? .zero
        #expect(slowest < deadline + .seconds(2), "slowest call took \(slowest)")
        #expect(pool.queuedJobs == 0)
        // And the pool still works.
        #expect(await call(pool, "SELECT 1", deadline: .seconds(5)).0 == .ok)
    }

    @Test("a statement past the call's deadline is cancelled: DEADLINE_EXCEEDED, gone from pg_stat_activity")
    func statementTimeout() async throws {
        let database = try await TestDatabase.makeMigrated()
        let pool = database.makePool(size: 1)
        defer { pool.shutdown() }
        // In a tenant transaction: the remaining time travels as statement_timeout in the same pipeline.
        let (outcome, took) = await call(pool, "SELECT pg_sleep(30) /* tenant */", deadline: .milliseconds(300))
        #expect(outcome == .timedOut)
        #expect(took < .seconds(2))
        #expect(try await offPool { try activeStatements(database, like: "pg_sleep(30) /* tenant */") } == 0)

        // Raw work on a connection, with no statement_timeout: the pool's reaper cancels it on the server.
        let start = ContinuousClock.now
        let budget = DatabaseBudget(deadline: start.advanced(by: .milliseconds(300)))
        let raw = await DatabaseBudget.$current.withValue(budget) {
            do {
                try await pool.withConnection { _ = try $0.query("SELECT pg_sleep(30) /* raw */") }
                return Outcome.ok
            } catch {
                return Outcome(error)
            }
        }
        #expect(raw == .timedOut)
        #expect(start.duration(to: .now) < .seconds(2))
        #expect(try await offPool { try activeStatements(database, like: "pg_sleep(30) /* raw */") } == 0)
        #expect(await call(pool, "SELECT 1", deadline: .seconds(5)).0 == .ok)
    }

    @Test("cancellation removes a queued call at once and cancels a running statement on the server")
    func cancellation() async throws {
        let database = try await TestDatabase.makeMigrated()
        let pool = database.makePool(size: 1)
        defer { pool.shutdown() }
        let running = Task { await call(pool, "SELECT pg_sleep(30) /* running */", deadline: nil) }
        try await waitUntil("the statement runs") { () async throws -> Bool in
            try await offPool { try activeStatements(database, like: "pg_sleep(30) /* running */") } == 1
        }
        let queued = Task { await call(pool, "SELECT 1 /* queued */", deadline: nil) }
        try await waitUntil("the second call is queued") { pool.queuedJobs == 1 }
        let start = ContinuousClock.now
        queued.cancel()
        #expect(await queued.value.0 == .cancelled)
        // At once: not after the running call's 30 s.
        #expect(start.duration(to: .now) < .seconds(3))
        #expect(pool.queuedJobs == 0)

        running.cancel()
        let (outcome, _) = await running.value
        // The server cancelled the statement (57014); the caller's task was cancelled anyway.
        #expect(outcome == .timedOut || outcome == .cancelled, "\(outcome)")
        #expect(start.duration(to: .now) < .seconds(6))
        #expect(try await offPool { try activeStatements(database, like: "pg_sleep(30) /* running */") } == 0)
        #expect(await call(pool, "SELECT 1", deadline: .seconds(5)).0 == .ok)
    }

    @Test("a pipeline broken mid-send closes its connection: the next call never reads its leftovers")
    func brokenPipeline() async throws {
        let database = try await TestDatabase.makeMigrated()
        let pool = database.makePool(size: 1)
        defer { pool.shutdown() }
        // libpq refuses a statement of more than 65535 parameters after the first statement was sent.
        let tooMany = SQL(text: "SELECT 1", binds: Array(repeating: "x", count: 70_000))
        await #expect(throws: StorageError.self) {
            try await pool.withConnection { connection in
                _ = try connection.pipeline(["SELECT 'leftover' AS n", tooMany])
            }
        }
        let value = try await pool.withConnection { connection in
            try connection.query("SELECT 'fresh' AS n").requiredString(row: 0, column: "n")
        }
        #expect(value == "fresh")
    }

    @Test("an unreachable database is logged once while it stays down, not once per attempt")
    func logsOncePerChange() async throws {
        let log = RecordingLog()
        // Nothing listens on port 1.
        let pool = PGPool(
            conninfo: "host=127.0.0.1 port=1 dbname=chat user=chat_app connect_timeout=1",
            size: 2,
            logger: log.logger()
        )
        defer { pool.shutdown() }
        for _ in 0..<12 {
            await #expect(throws: StorageError.self) {
                try await pool.withConnection { _ in () }
            }
        }
        #expect(log.count(.warning) == 1)
    }

    @Test("connection health as a value: lost once, recovered once with the count of failed attempts")
    func healthTransitions() {
        var health = ConnectionHealth()
        #expect(health.succeeded() == .none)
        #expect(health.failed() == .lost)
        #expect(health.failed() == .none)
        #expect(health.failed() == .none)
        #expect(health.succeeded() == .recovered(failedAttempts: 3))
        #expect(health.succeeded() == .none)
        #expect(health.failed() == .lost)
    }

    @Test("chatd's connection defaults: connect timeout, keepalives, TCP user timeout; the caller's values win")
    func connectionDefaults() throws {
        let keyValue = try connectionParameters("host=/tmp port=5432 dbname=chat connect_timeout=2")
        let uri = try connectionParameters("postgresql://chat_app@db.example:5432/chat?keepalives_idle=60")
        func value(_ parameters: [(String, String?)], _ key: String) -> String? {
            parameters.first { $0.0 == key }?.1 ?? nil
        }
        #expect(value(keyValue, "connect_timeout") == "2")
        #expect(value(keyValue, "keepalives") == "1")
        #expect(value(keyValue, "tcp_user_timeout") == "30000")
        #expect(value(keyValue, "dbname") == "chat")
        #expect(value(uri, "keepalives_idle") == "60")
        #expect(value(uri, "connect_timeout") == "5")
        #expect(value(uri, "host") == "db.example")
        #expect(throws: StorageError.self) { try connectionParameters("host=/tmp port") }
    }
}
