import ChatStoreTestSupport
import ChatTestSupport
import Testing

@testable import ChatStore

@Suite("Per-thread sequences and idempotent sends")
struct SequenceTests {
    @Test("16 concurrent writers over 200 threads produce dense, ordered sequences with no gap")
    func denseUnderConcurrency() async throws {
        let database = try await TestDatabase.makeMigrated()
        let pool = database.makePool(size: 16)
        defer { pool.shutdown() }
        let context = Fixture.admin(Fixture.tenantA)
        let threads = ThreadRepository(pool: pool)
        let messages = MessageRepository(pool: pool)
        var threadIDs: [String] = []
        for index in 0..<200 {
            let learner = index % 2 == 0 ? Fixture.learnerA1 : Fixture.learnerA2
            threadIDs.append(try await threads.create(context, learnerID: learner, title: "thread \(index)").id)
        }
        let ids = threadIDs
        let sent = try await withThrowingTaskGroup(of: [(String, Int64)].self) { group in
            for writer in 0..<16 {
                group.addTask {
                    var generator = SplitMix64(seed: UInt64(writer))
                    var mine: [(String, Int64)] = []
                    for index in 0..<60 {
                        let thread = ids[Int(generator.next() % UInt64(ids.count))]
                        let outcome = try await messages.send(
                            context,
                            threadID: thread,
                            body: "writer \(writer) message \(index)",
                            idempotencyKey: "w\(writer)-\(index)"
                        )
                        #expect(outcome.created)
                        mine.append((thread, outcome.message.seq))
                    }
                    return mine
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        #expect(sent.count == 960)
        // Within a thread, every send got a distinct sequence number.
        let byThread = Dictionary(grouping: sent, by: \.0)
        for (thread, sends) in byThread {
            #expect(Set(sends.map(\.1)).count == sends.count, "\(thread): duplicate sequence")
        }
        let superuser = try PGConnection(conninfo: database.superuser)
        let check = try superuser.query(
            """
            SELECT t.id::text AS id, t.last_seq, count(m.seq) AS n, coalesce(max(m.seq), 0) AS max_seq,
                   coalesce(min(m.seq), 1) AS min_seq
            FROM chat.threads t LEFT JOIN chat.messages m ON m.tenant_id = t.tenant_id AND m.thread_id = t.id
            GROUP BY t.id, t.last_seq
            """
        )
        #expect(check.rowCount == 200)
        var total: Int64 = 0
        for row in 0..<check.rowCount {
            let count = try check.requiredInt64(row: row, column: "n")
            total += count
            // Dense: 1...n exactly (distinct primary keys, min 1, max n).
            #expect(try check.requiredInt64(row: row, column: "last_seq") == count)
            #expect(try check.requiredInt64(row: row, column: "max_seq") == count)
            #expect(try check.requiredInt64(row: row, column: "min_seq") == 1)
        }
        #expect(total == 960)
        // Commit order is sequence order within a thread: created_at never decreases along the sequence.
        let disorder = try superuser.query(
            """
            SELECT count(*) FROM (
                SELECT created_at < lag(created_at) OVER (PARTITION BY thread_id ORDER BY seq) AS backwards
                FROM chat.messages
            ) s WHERE backwards
            """
        )
        #expect(try disorder.int64(row: 0, column: 0) == 0)
    }

    @Test("a rolled-back send leaves no gap")
    func rollbackLeavesNoGap() async throws {
        let database = try await TestDatabase.makeMigrated()
        let pool = database.makePool(size: 2)
        defer { pool.shutdown() }
        let context = Fixture.admin(Fixture.tenantA)
        let thread = try await ThreadRepository(pool: pool).create(context, learnerID: Fixture.learnerA1, title: "t")
        let messages = MessageRepository(pool: pool)
        #expect(
            try await messages.send(context, threadID: thread.id, body: "one", idempotencyKey: "k1").message.seq == 1
        )

        struct Abandon: Error {}
        await #expect(throws: Abandon.self) {
            try await pool.withTenantTransaction(context) { tx in
                let statement = MessageRepository.sendStatement(
                    context,
                    threadID: thread.id,
                    body: "never",
                    idempotencyKey: "k2"
                )
                let seq = try tx.query(statement).requiredInt64(row: 0, column: "seq")
                #expect(seq == 2)
                throw Abandon()
            }
        }
        let next = try await messages.send(context, threadID: thread.id, body: "two", idempotencyKey: "k3")
        #expect(next.message.seq == 2)
        #expect(try await ThreadRepository(pool: pool).get(context, id: thread.id).0.lastSeq == 2)
    }

    @Test("a retried send with the same key returns the same message; a different body is a conflict")
    func retryReturnsOriginal() async throws {
        let database = try await TestDatabase.makeMigrated()
        let pool = database.makePool(size: 2)
        defer { pool.shutdown() }
        let context = Fixture.admin(Fixture.tenantA)
        let thread = try await ThreadRepository(pool: pool).create(context, learnerID: Fixture.learnerA1, title: "t")
        let messages = MessageRepository(pool: pool)
        let first = try await messages.send(context, threadID: thread.id, body: "hello", idempotencyKey: "same")
        let retry = try await messages.send(context, threadID: thread.id, body: "hello", idempotencyKey: "same")
        #expect(first.created && !retry.created)
        #expect(retry.message == first.message)
        await #expect {
            try await messages.send(context, threadID: thread.id, body: "different", idempotencyKey: "same")
        } throws: { error in
            (error as? StorageError)?.code == .conflict
        }
        // Another author may use the same key.
        var other = context
        other.userID = "someone-else"
        let theirs = try await messages.send(other, threadID: thread.id, body: "hello", idempotencyKey: "same")
        #expect(theirs.created && theirs.message.seq == 2)
    }

    @Test("concurrent retries of one send create exactly one message")
    func concurrentRetries() async throws {
        let database = try await TestDatabase.makeMigrated()
        let pool = database.makePool(size: 8)
        defer { pool.shutdown() }
        let context = Fixture.admin(Fixture.tenantA)
        let thread = try await ThreadRepository(pool: pool).create(context, learnerID: Fixture.learnerA1, title: "t")
        let messages = MessageRepository(pool: pool)
        let outcomes = try await withThrowingTaskGroup(of: SendOutcome.self) { group in
            for _ in 0..<16 {
                group.addTask {
                    try await messages.send(context, threadID: thread.id, body: "once", idempotencyKey: "retry-key")
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(outcomes.filter(\.created).count == 1)
        #expect(Set(outcomes.map(\.message.id)).count == 1)
        #expect(try await ThreadRepository(pool: pool).get(context, id: thread.id).0.lastSeq == 1)
    }

    @Test("sending to a thread outside the scope or tenant is not found, and allocates nothing")
    func outOfScopeSend() async throws {
        let database = try await TestDatabase.makeMigrated()
        let pool = database.makePool(size: 2)
        defer { pool.shutdown() }
        let admin = Fixture.admin(Fixture.tenantA)
        let thread = try await ThreadRepository(pool: pool).create(admin, learnerID: Fixture.learnerA2, title: "t")
        let messages = MessageRepository(pool: pool)
        for context in [Fixture.guardian(Fixture.tenantA, of: [Fixture.learnerA1]), Fixture.admin(Fixture.tenantB)] {
            await #expect {
                try await messages.send(context, threadID: thread.id, body: "x", idempotencyKey: "k")
            } throws: { error in
                (error as? StorageError)?.code == .notFound
            }
        }
        #expect(try await ThreadRepository(pool: pool).get(admin, id: thread.id).0.lastSeq == 0)
        // Creating a thread for a learner outside the scope is refused by the policy.
        await #expect {
            try await ThreadRepository(pool: pool).create(
                Fixture.guardian(Fixture.tenantA, of: [Fixture.learnerA1]),
                learnerID: Fixture.learnerA2,
                title: "t"
            )
        } throws: { error in
            (error as? StorageError)?.code == .permissionDenied
        }
    }
}
