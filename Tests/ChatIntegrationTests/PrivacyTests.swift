import ChatApp
import ChatAuth
import ChatClient
import ChatDomain
import ChatProto
import ChatRPC
import ChatServices
import ChatStoreTestSupport
import ChatTestSupport
import Foundation
import Logging
import Testing

@testable import ChatStore

/// Runs statements as the bootstrap superuser (bypasses row-level security): seeding and checking.
func superuserQuery(_ database: MigratedDatabase, _ sql: String) async throws -> [[String?]] {
    try await offPool {
        let connection = try PGConnection(conninfo: database.superuser)
        defer { connection.close() }
        let result = try connection.queryText(sql)
        return try (0..<result.rowCount).map { row in
            try (0..<result.columnCount).map { try result.string(row: row, column: $0) }
        }
    }
}

/// Every response of a stream.
func collect<Response>(_ stream: ResponseStream<Response>) async throws -> [Response] {
    var responses: [Response] = []
    for try await response in stream { responses.append(response) }
    return responses
}

/// The contents of one learner in tenant A: threads and messages sent over RPC, with edits, a deleted message, read
/// cursors of two users, and a marker in every text, so that a check can find any copy left behind.
struct SeededLearner {
    let learner: String
    let marker: String
    var threads: [String] = []
    var messages = 0
    var edits = 0
    var readCursors = 0
    /// Outbox events with content: thread created and updated, message created, edited and deleted.
    var contentEvents = 0

    static func seed(_ harness: ServiceHarness, learner: String, threads: Int = 2, perThread: Int = 4) async throws
        -> SeededLearner
    {
        var seeded = SeededLearner(learner: learner, marker: "mark-\(UInt32.random(in: 0...UInt32.max))")
        let guardian = try harness.client(.guardian, user: "guardian-\(learner.prefix(4))", scope: [learner])
        let teacher = try harness.client(.teacher, user: "teacher-\(learner.prefix(4))", scope: [learner])
        for index in 0..<threads {
            let thread = try await guardian.createThread(
                CreateThreadRequest(learnerId: learner, title: "Title \(seeded.marker) \(index)")
            ).thread!
            seeded.threads.append(thread.id)
            seeded.contentEvents += 1
            for number in 1...perThread {
                _ = try await guardian.sendMessage(
                    SendMessageRequest(
                        threadId: thread.id,
                        body: "Body \(seeded.marker) \(number)",
                        idempotencyKey: "k-\(index)-\(number)"
                    )
                )
                seeded.messages += 1
                seeded.contentEvents += 1
            }
            _ = try await guardian.editMessage(
                EditMessageRequest(threadId: thread.id, seq: 1, body: "Edited \(seeded.marker)")
            )
            seeded.contentEvents += 1
            _ = try await guardian.deleteMessage(DeleteMessageRequest(threadId: thread.id, seq: 2))
            seeded.contentEvents += 1
            _ = try await guardian.markRead(MarkReadRequest(threadId: thread.id, upToSeq: 2))
            _ = try await teacher.markRead(MarkReadRequest(threadId: thread.id, upToSeq: 1))
            seeded.readCursors += 2
            _ = try await guardian.updateThread(
                UpdateThreadRequest(threadId: thread.id, titleUpdate: .title("Renamed \(seeded.marker)"))
            )
            seeded.contentEvents += 1
        }
        let stored = try await superuserQuery(
            harness.database,
            "SELECT count(*) FROM chat.message_edits WHERE learner_id = '\(learner)'"
        )
        seeded.edits = Int(stored[0][0] ?? "") ?? -1
        await guardian.close()
        await teacher.close()
        return seeded
    }
}

@Suite("Privacy: export, erasure, legal holds, retention, audit (real PostgreSQL, real TLS)", .serialized)
struct PrivacyTests {
    @Test("an export of 50,000 messages interrupted halfway and resumed yields every record exactly once")
    func exportResumes() async throws {
        let harness = try await ServiceHarness()
        let learner = Fixture.learnerA1
        let seeded = try await SeededLearner.seed(harness, learner: learner, threads: 1, perThread: 6)
        _ = try await SeededLearner.seed(harness, learner: Fixture.learnerA2, threads: 1, perThread: 3)
        // 4 more threads of 12,500 messages each, written directly (an RPC per message would take minutes).
        _ = try await superuserQuery(
            harness.database,
            """
            WITH t AS (
                INSERT INTO chat.threads (tenant_id, learner_id, title, last_seq, event_seq, created_by, created_by_role)
                SELECT '\(Fixture.tenantA)', '\(learner)', 'Bulk ' || g, 12500, 12500, 'seed', 'teacher'
                FROM generate_series(1, 4) g RETURNING tenant_id, id, learner_id
            )
            INSERT INTO chat.messages (tenant_id, thread_id, seq, learner_id, author_id, author_role, body,
                                       idempotency_key, event_seq)
            SELECT t.tenant_id, t.id, g, t.learner_id, 'seed', 'teacher', 'bulk message ' || g,
                   'bulk-' || t.id || '-' || g, g
            FROM t, generate_series(1, 12500) g
            """
        )
        let officer = try harness.client(.privacyOfficer, user: "officer-1")
        _ = try await officer.placeLegalHold(PlaceLegalHoldRequest(learnerId: learner, reason: "case 7"))
        _ = try await officer.releaseLegalHold(ReleaseLegalHoldRequest(learnerId: learner, reason: "case 7 closed"))

        var seen: [String: Int] = [:]
        func key(_ record: ExportRecord) -> String {
            switch record.record {
            case .thread(let thread): "t/\(thread.id)"
            case .message(let message): "m/\(message.threadId)/\(message.seq)"
            case .edits(let edits): "e/\(edits.threadId)/\(edits.seq)"
            case .readCursor(let cursor): "c/\(cursor.threadId)/\(cursor.userId)"
            case .audit(let audit): "a/\(audit.id)"
            case .summary: "summary"
            case nil: "nil"
            }
        }
        // First run: stop after 25,000 records, as a crashed batch job would (the connection is closed).
        var lastToken = ""
        var firstRun = 0
        for try await response in try await officer.exportLearnerData(
            ExportLearnerDataRequest(learnerId: learner, reason: "DSAR 42")
        ) {
            let record = response.record!
            seen[key(record), default: 0] += 1
            lastToken = record.resumeToken
            firstRun += 1
            if firstRun == 25_000 { break }
        }
        await officer.close()
        #expect(firstRun == 25_000)

        // Resume on a new connection from the last record received.
        let resumed = try harness.client(.privacyOfficer, user: "officer-2")
        var summary: ExportSummary?
        for try await response in try await resumed.exportLearnerData(
            ExportLearnerDataRequest(learnerId: learner, resumeToken: lastToken)
        ) {
            let record = response.record!
            if case .summary(let value)? = record.record { summary = value } else { seen[key(record), default: 0] += 1 }
        }
        let expectedThreads = 5
        let expectedMessages = 50_000 + seeded.messages
        let expectedAudits = 2  // hold placed and released (the export's own record is the summary's audit_id)
        #expect(seen.values.allSatisfy { $0 == 1 }, "every record exactly once")
        #expect(seen.keys.filter { $0.hasPrefix("t/") }.count == expectedThreads)
        #expect(seen.keys.filter { $0.hasPrefix("m/") }.count == expectedMessages)
        #expect(seen.keys.filter { $0.hasPrefix("e/") }.count == 1)  // the one edited message's history
        #expect(seen.keys.filter { $0.hasPrefix("c/") }.count == seeded.readCursors)
        #expect(seen.keys.filter { $0.hasPrefix("a/") }.count == expectedAudits)
        let total = expectedThreads + expectedMessages + 1 + seeded.readCursors + expectedAudits
        #expect(seen.count == total)
        #expect(summary?.records == UInt64(total))

        // The audit trail: one export record, completed, with the total; the requested and completed events.
        let audits = try await resumed.listAuditRecords(ListAuditRecordsRequest(learnerId: learner, kind: .export))
        #expect(audits.records.count == 1)
        #expect(audits.records.first?.id == summary?.auditId)
        #expect(audits.records.first?.outcome == "ok" && audits.records.first?.exportedRecords == UInt64(total))
        #expect(audits.records.first?.reason == "DSAR 42" && audits.records.first?.finishedAtUs ?? 0 > 0)
        let events = try await superuserQuery(
            harness.database,
            "SELECT type FROM chat.outbox WHERE learner_id = '\(learner)' AND type IN (7, 8) ORDER BY id"
        )
        #expect(events.map { $0[0] } == ["7", "8"])

        // A completed export cannot be resumed; a token of another learner or a forged one is refused.
        await #expect {
            _ = try await collect(resumed.exportLearnerData(.init(learnerId: learner, resumeToken: lastToken)))
        } throws: { rpcCode($0) == .failedPrecondition }
        await #expect {
            _ = try await collect(
                resumed.exportLearnerData(.init(learnerId: Fixture.learnerA2, resumeToken: lastToken))
            )
        } throws: { rpcCode($0) == .invalidArgument }
        await #expect {
            _ = try await collect(resumed.exportLearnerData(.init(learnerId: learner, resumeToken: "eDF8bm9wZQ")))
        } throws: { rpcCode($0) == .invalidArgument }
        await resumed.close()
        try await harness.stop()
    }

    @Test("erasure removes every copy of the learner's content, reports what it removed, and is idempotent")
    func erasure() async throws {
        let harness = try await ServiceHarness()
        let seeded = try await SeededLearner.seed(harness, learner: Fixture.learnerA1)
        let other = try await SeededLearner.seed(harness, learner: Fixture.learnerA2)
        let officer = try harness.client(.privacyOfficer)

        // A live stream of one of the learner's threads is open: it must end when the thread is erased.
        let watcher = try harness.client(.guardian, user: "watcher", scope: [Fixture.learnerA1])
        let thread = seeded.threads[0]
        let log = StreamLog.start { try await watcher.watchThread(WatchThreadRequest(threadId: thread)) }
        try await waitUntil("the stream is live") { !log.events.isEmpty }

        let receipt = try await officer.eraseLearnerData(
            EraseLearnerDataRequest(learnerId: Fixture.learnerA1, reason: "Art. 17 request 9")
        ).receipt!
        #expect(receipt.learnerId == Fixture.learnerA1 && !receipt.auditId.isEmpty && receipt.completedAtUs > 0)
        #expect(receipt.removed?.threads == UInt64(seeded.threads.count))
        #expect(receipt.removed?.messages == UInt64(seeded.messages))
        #expect(receipt.removed?.messageEdits == UInt64(seeded.edits) && seeded.edits > 0)
        #expect(receipt.removed?.readCursors == UInt64(seeded.readCursors))
        #expect(receipt.removed?.outboxPayloads == UInt64(seeded.contentEvents))

        // The stream saw its thread deleted and ended.
        try await waitUntil("the stream ended") { log.ended }
        #expect(log.error == nil)
        guard case .thread(let event)? = log.events.last?.event?.event else {
            Issue.record("the last event is not a thread event: \(String(describing: log.events.last))")
            return
        }
        #expect(event.kind == .deleted)

        // As the superuser (no row-level security): no table holds the content anywhere, in any column.
        let tables = try await superuserQuery(
            harness.database,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'chat' AND table_type = 'BASE TABLE'"
        ).compactMap { $0[0] }
        #expect(tables.count >= 8)
        for table in tables {
            let copies = try await superuserQuery(
                harness.database,
                "SELECT count(*) FROM chat.\(table) x WHERE x::text LIKE '%\(seeded.marker)%'"
            )
            #expect(copies[0][0] == "0", "\(table) still holds the erased learner's content")
            let learnerColumn = try await superuserQuery(
                harness.database,
                """
                SELECT count(*) FROM information_schema.columns
                WHERE table_schema = 'chat' AND table_name = '\(table)' AND column_name = 'learner_id'
                """
            )
            if learnerColumn[0][0] == "1" && !["privacy_audit", "outbox"].contains(table) {
                let rows = try await superuserQuery(
                    harness.database,
                    "SELECT count(*) FROM chat.\(table) WHERE learner_id = '\(Fixture.learnerA1)'"
                )
                #expect(rows[0][0] == "0", "\(table) still has rows of the erased learner")
            }
        }
        // The outbox keeps the learner's events as tombstones without content; privacy events have counts only.
        let leftover = try await superuserQuery(
            harness.database,
            """
            SELECT count(*) FROM chat.outbox WHERE learner_id = '\(Fixture.learnerA1)' AND type BETWEEN 1 AND 6
              AND (payload IS NOT NULL OR NOT erased)
            """
        )
        #expect(leftover[0][0] == "0")
        // The other learner is untouched.
        let kept = try await superuserQuery(
            harness.database,
            "SELECT count(*) FROM chat.messages WHERE learner_id = '\(Fixture.learnerA2)'"
        )
        #expect(kept[0][0] == String(other.messages))
        let otherGuardian = try harness.client(.guardian, user: "g2", scope: [Fixture.learnerA2])
        #expect(try await otherGuardian.getThread(GetThreadRequest(threadId: other.threads[0])).thread != nil)

        // A second erasure finds nothing: zero everywhere, and it is audited too.
        let again = try await officer.eraseLearnerData(EraseLearnerDataRequest(learnerId: Fixture.learnerA1))
        #expect(again.receipt?.removed == ChatProto.RemovalCounts())
        let audit = try await officer.listAuditRecords(
            ListAuditRecordsRequest(learnerId: Fixture.learnerA1, kind: .erasure)
        ).records
        #expect(audit.count == 2)
        #expect(audit.last?.removed == receipt.removed && audit.last?.reason == "Art. 17 request 9")
        #expect(audit.first?.removed == ChatProto.RemovalCounts() && audit.allSatisfy { $0.outcome == "ok" })
        #expect(audit.allSatisfy { $0.actor?.userId == "privacy_officer-1" && $0.actor?.role == .privacyOfficer })

        // An export after erasure finds nothing but the audit trail.
        var kinds: [String] = []
        for try await response in try await officer.exportLearnerData(.init(learnerId: Fixture.learnerA1)) {
            switch response.record?.record {
            case .audit: kinds.append("audit")
            case .summary: kinds.append("summary")
            default: kinds.append("content")
            }
        }
        #expect(kinds == ["audit", "audit", "summary"])
        try await harness.stop()
    }

    @Test("a legal hold blocks erasure and retention, naming the hold; lifting it lets them run")
    func legalHolds() async throws {
        let harness = try await ServiceHarness(admin: true)  // metrics are kept only with a listener to read them
        let held = try await SeededLearner.seed(harness, learner: Fixture.learnerA1, threads: 1)
        let free = try await SeededLearner.seed(harness, learner: Fixture.learnerA2, threads: 1)
        let admin = try harness.client(.tenantAdmin, user: "admin-1")

        await #expect { try await admin.placeLegalHold(.init(learnerId: Fixture.learnerA1, reason: "")) } throws: {
            rpcCode($0) == .invalidArgument
        }
        let hold = try await admin.placeLegalHold(.init(learnerId: Fixture.learnerA1, reason: "litigation 2026-17"))
            .hold!
        #expect(hold.learnerId == Fixture.learnerA1 && hold.placedBy?.userId == "admin-1" && hold.placedAtUs > 0)
        await #expect { try await admin.placeLegalHold(.init(learnerId: Fixture.learnerA1, reason: "again")) } throws: {
            rpcCode($0) == .alreadyExists
        }
        #expect(try await admin.listLegalHolds(.init()).holds.map(\.learnerId) == [Fixture.learnerA1])

        // Erasure is refused with FAILED_PRECONDITION naming the hold; nothing is removed; the refusal is audited.
        do {
            _ = try await admin.eraseLearnerData(.init(learnerId: Fixture.learnerA1))
            Issue.record("erasure of a held learner succeeded")
        } catch let error as RPCError {
            #expect(error.code == .failedPrecondition)
            #expect(error.message.contains("legal hold") && error.message.contains("litigation 2026-17"))
            #expect(error.message.contains("admin-1"))
            let failures = error.details.compactMap { detail -> PreconditionFailure? in
                if case .preconditionFailure(let failure) = detail.detail { return failure }
                return nil
            }
            #expect(failures.map(\.type) == ["LEGAL_HOLD"] && failures.map(\.subject) == [Fixture.learnerA1])
        }
        let remaining = try await superuserQuery(
            harness.database,
            "SELECT count(*) FROM chat.messages WHERE learner_id = '\(Fixture.learnerA1)'"
        )
        #expect(remaining[0][0] == String(held.messages))
        let refusals = try await admin.listAuditRecords(.init(learnerId: Fixture.learnerA1, kind: .erasure)).records
        #expect(refusals.map(\.outcome) == ["refused: legal hold"])

        // Retention skips the held learner and says so; the other learner's expired messages go.
        _ = try await admin.setRetentionPolicy(.init(messageRetentionDays: 30))
        _ = try await superuserQuery(
            harness.database,
            "UPDATE chat.messages SET created_at = now() - interval '40 days' WHERE tenant_id = '\(Fixture.tenantA)'"
        )
        var last: RunRetentionSweepResponse?
        for try await progress in try await admin.runRetentionSweep(.init()) { last = progress }
        #expect(last?.done == true && last?.skippedHeldLearners == 1)
        #expect(last?.removed?.messages == UInt64(free.messages))
        let afterSweep = try await superuserQuery(
            harness.database,
            "SELECT learner_id, count(*) FROM chat.messages GROUP BY learner_id ORDER BY learner_id"
        )
        #expect(afterSweep.map { $0[0] ?? "" } == [Fixture.learnerA1])

        // Lifting the hold (audited) lets both run.
        _ = try await admin.releaseLegalHold(.init(learnerId: Fixture.learnerA1, reason: "case closed"))
        await #expect { try await admin.releaseLegalHold(.init(learnerId: Fixture.learnerA1)) } throws: {
            rpcCode($0) == .notFound
        }
        last = nil
        for try await progress in try await admin.runRetentionSweep(.init(batchSize: 3)) { last = progress }
        #expect(
            last?.done == true && last?.skippedHeldLearners == 0 && last?.removed?.messages == UInt64(held.messages)
        )
        // Both runs are in the retention metrics, with what they removed.
        let metrics = Set(harness.application.metrics.render().split(separator: "\n").map(String.init))
        #expect(metrics.contains(#"chat_retention_runs_total{outcome="ok"} 2"#), "\(metrics.sorted())")
        #expect(metrics.contains(#"chat_retention_runs_total{outcome="failed"} 0"#))
        #expect(
            metrics.contains(#"chat_retention_rows_removed_total{store="messages"} \#(free.messages + held.messages)"#)
        )
        let erased = try await admin.eraseLearnerData(.init(learnerId: Fixture.learnerA1)).receipt!
        #expect(erased.removed?.threads == 1 && erased.removed?.messages == 0)  // retention took the messages
        let trail = try await admin.listAuditRecords(.init(learnerId: Fixture.learnerA1)).records
        #expect(
            trail.map(\.kind) == [.erasure, .legalHoldReleased, .erasure, .legalHoldPlaced],
            "newest first: \(trail.map(\.kind))"
        )
        #expect(trail[1].reason == "case closed" && trail[3].reason == "litigation 2026-17")
        try await harness.stop()
    }

    @Test("retention removes exactly the expired messages of tenants with a policy, and its runs are audited")
    func retention() async throws {
        let harness = try await ServiceHarness()
        let tenantA = try await SeededLearner.seed(harness, learner: Fixture.learnerA1, threads: 2, perThread: 6)
        // Tenant B: a learner with old messages, and no policy.
        let guardianB = try harness.client(.guardian, tenant: Fixture.tenantB, scope: [Fixture.learnerB1])
        let threadB = try await guardianB.createThread(.init(learnerId: Fixture.learnerB1, title: "B")).thread!
        for number in 1...5 {
            _ = try await guardianB.sendMessage(
                .init(threadId: threadB.id, body: "b\(number)", idempotencyKey: "\(number)")
            )
        }
        // Ages: in A's first thread, seq 1-3 are 40 days old and 4-6 ten days; in A's second thread all are new.
        // Every B message is 40 days old.
        for statement in [
            """
            UPDATE chat.messages SET created_at = now() - CASE WHEN seq <= 3 THEN interval '40 days' ELSE interval '10 days' END
            WHERE thread_id = '\(tenantA.threads[0])'
            """,
            """
            UPDATE chat.outbox SET occurred_at = now() - interval '40 days'
            WHERE thread_id = '\(tenantA.threads[0])' AND seq <= 3
            """,
            "UPDATE chat.messages SET created_at = now() - interval '40 days' WHERE tenant_id = '\(Fixture.tenantB)'",
        ] {
            _ = try await superuserQuery(harness.database, statement)
        }
        let officer = try harness.client(.privacyOfficer)
        _ = try await officer.setRetentionPolicy(.init(messageRetentionDays: 30))
        #expect(try await officer.getRetentionPolicy(.init()).policy?.messageRetentionDays == 30)
        let unreadBefore = try await harness.client(.guardian, user: "guardian-a100", scope: [Fixture.learnerA1])
            .getThread(.init(threadId: tenantA.threads[0])).thread!.unreadCount

        // The sweeper inside chatd, one pass.
        let scheduler = RetentionScheduler(
            pool: harness.pool,
            interval: .seconds(3600),
            batchSize: 2,
            logger: Logger(label: "retention")
        )
        let outcomes = await scheduler.sweepAll()
        #expect(outcomes.map(\.tenantID) == [Fixture.tenantA], "only tenants with a policy")
        #expect(outcomes.first?.removed?.messages == 3)
        #expect(outcomes.first?.removed?.outboxPayloads == 5)  // created 1-3, the edit of 1, the delete of 2

        let left = try await superuserQuery(
            harness.database,
            "SELECT thread_id, seq FROM chat.messages WHERE tenant_id = '\(Fixture.tenantA)' ORDER BY thread_id, seq"
        )
        let expected =
            [4, 5, 6].map { [tenantA.threads[0], String($0)] } + (1...6).map { [tenantA.threads[1], String($0)] }
        #expect(
            left.map { $0.map { $0 ?? "" } }.sorted { $0.joined() < $1.joined() }
                == expected.sorted { $0.joined() < $1.joined() }
        )
        let edits = try await superuserQuery(
            harness.database,
            "SELECT count(*) FROM chat.message_edits WHERE thread_id = '\(tenantA.threads[0])'"
        )
        #expect(edits[0][0] == "0", "the expired message's edit history went with it")
        let bLeft = try await superuserQuery(
            harness.database,
            "SELECT count(*) FROM chat.messages WHERE tenant_id = '\(Fixture.tenantB)'"
        )
        #expect(bLeft[0][0] == "5", "a tenant without a policy keeps everything")
        let outboxContent = try await superuserQuery(
            harness.database,
            """
            SELECT count(*) FROM chat.outbox WHERE thread_id = '\(tenantA.threads[0])' AND seq <= 3 AND type = \(EventType.messageCreated.number)
              AND payload IS NOT NULL
            """
        )
        #expect(outboxContent[0][0] == "0")

        // Read cursors stay consistent: the unread count does not change; marking read still works.
        let guardian = try harness.client(.guardian, user: "guardian-a100", scope: [Fixture.learnerA1])
        #expect(try await guardian.getThread(.init(threadId: tenantA.threads[0])).thread!.unreadCount == unreadBefore)
        #expect(try await guardian.markRead(.init(threadId: tenantA.threads[0], upToSeq: 6)).unreadCount == 0)
        let page = try await guardian.listMessages(.init(threadId: tenantA.threads[0], bound: .afterSeq(0)))
        #expect(page.messages.map(\.seq) == [4, 5, 6])

        // The run is in the audit trail, with its counts, finished, ok.
        let runs = try await officer.listAuditRecords(.init(kind: .retentionRun)).records
        #expect(runs.count == 1)
        #expect(runs.first?.outcome == "ok" && runs.first?.finishedAtUs ?? 0 > 0)
        #expect(runs.first?.removed?.messages == 3 && runs.first?.actor?.userId == RetentionScheduler.userID)
        #expect(runs.first?.reason.hasPrefix("message_retention_days=30") == true)
        let runEvents = try await superuserQuery(harness.database, "SELECT count(*) FROM chat.outbox WHERE type = 13")
        #expect(runEvents[0][0] == "1")
        // A second pass removes nothing more, and is recorded too.
        #expect(await scheduler.sweepAll().first?.removed == RemovedRows())
        #expect(try await officer.listAuditRecords(.init(kind: .retentionRun)).records.count == 2)

        // Tenant B asks for a sweep without a policy: told so.
        let adminB = try harness.client(.tenantAdmin, tenant: Fixture.tenantB)
        await #expect { _ = try await collect(adminB.runRetentionSweep(.init())) } throws: {
            rpcCode($0) == .failedPrecondition
        }
        await #expect { try await adminB.setRetentionPolicy(.init(messageRetentionDays: 36_501)) } throws: {
            rpcCode($0) == .invalidArgument
        }
        #expect(try await adminB.listAuditRecords(.init()).records.isEmpty, "tenant A's runs are not B's")
        try await harness.stop()
    }

    @Test("only privacy officers and tenant admins of the same tenant reach the privacy RPCs and tables")
    func authorization() async throws {
        let harness = try await ServiceHarness()
        let seeded = try await SeededLearner.seed(harness, learner: Fixture.learnerA1, threads: 1)
        for role in [Role.learner, .guardian, .teacher, .service] {
            let client = try harness.client(role, scope: [Fixture.learnerA1])
            let calls: [(String, () async throws -> Void)] = [
                ("export", { _ = try await collect(client.exportLearnerData(.init(learnerId: Fixture.learnerA1))) }),
                ("erase", { _ = try await client.eraseLearnerData(.init(learnerId: Fixture.learnerA1)) }),
                ("hold", { _ = try await client.placeLegalHold(.init(learnerId: Fixture.learnerA1, reason: "x")) }),
                ("release", { _ = try await client.releaseLegalHold(.init(learnerId: Fixture.learnerA1)) }),
                ("holds", { _ = try await client.listLegalHolds(.init()) }),
                ("policy", { _ = try await client.getRetentionPolicy(.init()) }),
                ("set policy", { _ = try await client.setRetentionPolicy(.init(messageRetentionDays: 1)) }),
                ("sweep", { _ = try await collect(client.runRetentionSweep(.init())) }),
                ("audit", { _ = try await client.listAuditRecords(.init()) }),
            ]
            for (name, call) in calls {
                await #expect(throws: (any Error).self, "\(role) \(name)") { try await call() }
                do { try await call() } catch { #expect(rpcCode(error) == .permissionDenied, "\(role) \(name)") }
            }
            await client.close()
        }

        // A tenant admin of another tenant reaches nothing of tenant A.
        let adminB = try harness.client(.tenantAdmin, tenant: Fixture.tenantB)
        var records: [ExportRecord] = []
        for try await response in try await adminB.exportLearnerData(.init(learnerId: Fixture.learnerA1)) {
            records.append(response.record!)
        }
        #expect(
            records.count == 1 && records.first.map { if case .summary = $0.record { true } else { false } } == true
        )
        let receipt = try await adminB.eraseLearnerData(.init(learnerId: Fixture.learnerA1)).receipt!
        #expect(receipt.removed == ChatProto.RemovalCounts())
        let kept = try await superuserQuery(
            harness.database,
            "SELECT count(*) FROM chat.messages WHERE learner_id = '\(Fixture.learnerA1)'"
        )
        #expect(kept[0][0] == String(seeded.messages))
        let officerA = try harness.client(.privacyOfficer)
        #expect(try await officerA.listAuditRecords(.init()).records.isEmpty, "B's records are B's")

        // The database agrees: a service context sees no privacy rows and cannot write any, even with the tenant right.
        let repository = PrivacyRepository(pool: harness.pool)
        _ = try await officerA.placeLegalHold(.init(learnerId: Fixture.learnerA1, reason: "visible to officers"))
        let service = TenantContext(tenantID: Fixture.tenantA, userID: "svc", role: .service)
        #expect(try await repository.holds(service, afterLearner: nil, limit: 10).isEmpty)
        #expect(try await repository.holds(Fixture.admin(Fixture.tenantA), afterLearner: nil, limit: 10).count == 1)
        await #expect(throws: StorageError.self) {
            _ = try await repository.placeHold(service, learnerID: Fixture.learnerA2, reason: "sneaky")
        }
        // The cross-tenant schedule is readable only through its function, which returns no more than ids and days.
        _ = try await officerA.setRetentionPolicy(.init(messageRetentionDays: 9))
        let schedule = try await repository.retentionSchedule()
        #expect(schedule.map(\.tenantID) == [Fixture.tenantA] && schedule.map(\.days) == [9])
        let direct = try await harness.pool.withConnection { connection in
            try connection.query("SELECT count(*) FROM chat.retention_policies").string(row: 0, column: 0)
        }
        #expect(direct == "0")
        try await harness.stop()
    }

    @Test("an export cut by its own deadline is recorded as partial, not left running")
    func exportCutByDeadline() async throws {
        let harness = try await ServiceHarness()
        let learner = Fixture.learnerA1
        // Larger than the stream's buffers, so the export waits for a client that stops reading.
        _ = try await superuserQuery(
            harness.database,
            """
            WITH t AS (
                INSERT INTO chat.threads (tenant_id, learner_id, title, last_seq, event_seq, created_by, created_by_role)
                VALUES ('\(Fixture.tenantA)', '\(learner)', 'Bulk', 1500, 1500, 'seed', 'teacher')
                RETURNING tenant_id, id, learner_id
            )
            INSERT INTO chat.messages (tenant_id, thread_id, seq, learner_id, author_id, author_role, body,
                                       idempotency_key, event_seq)
            SELECT t.tenant_id, t.id, g, t.learner_id, 'seed', 'teacher', repeat('d', 300), 'bulk-' || g, g
            FROM t, generate_series(1, 1500) g
            """
        )
        let officer = try harness.client(.privacyOfficer, user: "officer-1")
        do {
            var paused = false
            for try await _ in try await officer.exportLearnerData(
                ExportLearnerDataRequest(learnerId: learner, reason: "DSAR"),
                options: CallOptions(timeout: .milliseconds(500))
            ) where !paused {
                // Reads one record, then stops reading until the deadline has passed (the records already
                // received are then read without pause).
                paused = true
                try await Task.sleep(for: .seconds(2))
            }
            Issue.record("the export finished within its deadline")
        } catch let error as RPCError {
            #expect(error.code == .deadlineExceeded || error.code == .cancelled, "\(error)")
        }
        try await waitUntil("the export's record says where it stopped") { () async throws -> Bool in
            let outcome =
                try await superuserQuery(
                    harness.database,
                    "SELECT outcome FROM chat.privacy_audit WHERE kind = \(AuditKind.export.number) AND learner_id = '\(learner)'"
                ).first?.first ?? nil
            return outcome?.hasPrefix("partial: stopped after") == true
        }
        await officer.close()
        try await harness.stop()
    }
}
