import ChatAuth
import ChatClient
import ChatDomain
import ChatProto
import ChatRPC
import ChatServices
import ChatStoreTestSupport
import ChatTestSupport
import Foundation
import Testing

@testable import ChatStore

/// A connection a test holds a lock on, across `offPool` hops.
private final class LockHolder: @unchecked Sendable {
    let connection: PGConnection
    init(_ connection: PGConnection) { self.connection = connection }
}

/// A fresh 32-byte key.
private func freshKey() -> [UInt8] { Array(UUID().uuidString.utf8.prefix(32)) }

private func keyed(_ key: [UInt8]) -> CallOptions { CallOptions(idempotencyKey: key) }

/// The number of rows of `table` in tenant A, counted as the superuser.
private func rows(_ harness: ServiceHarness, _ table: String) async throws -> Int {
    let result = try await superuserQuery(
        harness.database,
        "SELECT count(*) FROM chat.\(table) WHERE tenant_id = '\(Fixture.tenantA)'"
    )
    return Int(result.first?.first.flatMap { $0 }.flatMap { Int($0) } ?? -1)
}

/// The status of a call that must fail.
private func failure(_ body: () async throws -> Void) async -> RPCError? {
    do {
        try await body()
        return nil
    } catch let error as RPCError {
        return error
    } catch {
        return RPCError(.unknown, "\(error)")
    }
}

@Suite("Idempotency keys: every mutation retried with its key has one effect and the first outcome")
struct IdempotencyTests {
    @Test("every mutating RPC: the same key and request twice gives one effect and the same response")
    func everyMutation() async throws {
        let harness = try await ServiceHarness()
        let admin = try harness.client(.tenantAdmin)
        let officer = try harness.client(.privacyOfficer, user: "officer-1")

        /// Runs `call` twice with one key: same response bytes, and `count` moved by `effect` exactly once.
        func twice<Response: ProtoMessage>(
            _ what: String,
            count table: String,
            effect: Int = 1,
            _ call: (CallOptions) async throws -> Response
        ) async throws -> Response {
            let key = freshKey()
            let before = try await rows(harness, table)
            let first = try await call(keyed(key))
            let second = try await call(keyed(key))
            #expect(try first.serializedBytes() == second.serializedBytes(), "\(what): another response")
            #expect(try await rows(harness, table) == before + effect, "\(what): not exactly one effect")
            return first
        }

        let created = try await twice("CreateThread", count: "threads") {
            try await admin.createThread(CreateThreadRequest(learnerId: Fixture.learnerA1, title: "Keyed"), options: $0)
        }
        let thread = created.thread!.id
        // The contrast that keeps the check honest: another key is another thread.
        _ = try await admin.createThread(
            CreateThreadRequest(learnerId: Fixture.learnerA1, title: "Keyed"),
            options: keyed(freshKey())
        )
        #expect(try await rows(harness, "threads") == 2)

        _ = try await twice("UpdateThread", count: "outbox") {
            try await admin.updateThread(
                UpdateThreadRequest(threadId: thread, titleUpdate: .title("Renamed")),
                options: $0
            )
        }
        // SendMessage with the header key only (no body key).
        let sent = try await twice("SendMessage", count: "messages") {
            try await admin.sendMessage(SendMessageRequest(threadId: thread, body: "once"), options: $0)
        }
        let seq = sent.message!.seq
        _ = try await twice("EditMessage", count: "message_edits", effect: 2) {
            try await admin.editMessage(EditMessageRequest(threadId: thread, seq: seq, body: "edited"), options: $0)
        }
        _ = try await twice("MarkRead", count: "read_cursors") {
            try await admin.markRead(MarkReadRequest(threadId: thread, upToSeq: seq), options: $0)
        }
        _ = try await twice("DeleteMessage", count: "outbox") {
            try await admin.deleteMessage(DeleteMessageRequest(threadId: thread, seq: seq), options: $0)
        }
        _ = try await twice("PlaceLegalHold", count: "legal_holds") {
            try await officer.placeLegalHold(
                PlaceLegalHoldRequest(learnerId: Fixture.learnerA2, reason: "case"),
                options: $0
            )
        }
        _ = try await twice("ReleaseLegalHold", count: "privacy_audit") {
            try await officer.releaseLegalHold(
                ReleaseLegalHoldRequest(learnerId: Fixture.learnerA2, reason: "x"),
                options: $0
            )
        }
        _ = try await twice("SetRetentionPolicy", count: "privacy_audit") {
            try await officer.setRetentionPolicy(SetRetentionPolicyRequest(messageRetentionDays: 30), options: $0)
        }
        _ = try await twice("EraseLearnerData", count: "privacy_audit") {
            try await officer.eraseLearnerData(
                EraseLearnerDataRequest(learnerId: Fixture.learnerA2, reason: "x"),
                options: $0
            )
        }
        _ = try await twice("DeleteThread", count: "outbox") {
            try await admin.deleteThread(DeleteThreadRequest(threadId: thread), options: $0)
        }
        // The method listing says which methods need a key to be retried.
        let methods = try await admin.listMethods(ListMethodsRequest()).methods
        #expect(methods.first { $0.name.hasSuffix("/CreateThread") }?.idempotent == false)
        #expect(methods.first { $0.name.hasSuffix("/RunRetentionSweep") }?.idempotent == false)
        #expect(methods.first { $0.name.hasSuffix("/ListThreads") }?.idempotent == true)
        // proto/ marks them (no idempotency_level): exactly the unary ones above, so none is left unchecked.
        let unaryMutations = methods.filter { !$0.idempotent && $0.kind == .unary }
        #expect(
            Set(unaryMutations.map { String($0.name.split(separator: "/").last ?? "") }) == [
                "CreateThread", "UpdateThread", "SendMessage", "EditMessage", "MarkRead", "DeleteMessage",
                "PlaceLegalHold", "ReleaseLegalHold", "SetRetentionPolicy", "EraseLearnerData", "DeleteThread",
            ]
        )
        await admin.close()
        await officer.close()
        try await harness.stop()
    }

    @Test(
        "a keyed send waits for its thread's event lock before it has a transaction id: the key's insert comes after the lock, so the outbox keeps the thread's events in order"
    )
    func keyedSendLocksBeforeItWrites() async throws {
        let harness = try await ServiceHarness()
        let admin = try harness.client(.tenantAdmin)
        let thread = try await admin.createThread(CreateThreadRequest(learnerId: Fixture.learnerA1, title: "L")).thread!
        // The thread's event lock, held by a transaction of the test's own.
        let holder = LockHolder(try PGConnection(conninfo: harness.database.superuser))
        try await offPool {
            _ = try holder.connection.query("BEGIN")
            _ = try holder.connection.query(threadEventLock(thread.id))
        }
        let send = Task {
            try await admin.sendMessage(SendMessageRequest(threadId: thread.id, body: "k"), options: keyed(freshKey()))
        }
        var waiting: [[String?]] = []
        let deadline = ContinuousClock.now + .seconds(20)
        while waiting.isEmpty && ContinuousClock.now < deadline {
            waiting = try await superuserQuery(
                harness.database,
                """
                SELECT coalesce(a.backend_xid::text, 'none') FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                WHERE l.locktype = 'advisory' AND NOT l.granted AND a.datname = current_database()
                """
            )
            if waiting.isEmpty { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(waiting == [["none"]], "the send waiting for the lock already had a transaction id: \(waiting)")
        try await offPool { _ = try holder.connection.query("COMMIT") }
        let sent = try await send.value
        #expect(sent.message?.seq == 1)
        await admin.close()
        try await harness.stop()
    }

    @Test("the same key with another request or another method: ALREADY_EXISTS, and nothing happens")
    func reuse() async throws {
        let harness = try await ServiceHarness()
        let admin = try harness.client(.tenantAdmin)
        let key = freshKey()
        let thread = try await admin.createThread(
            CreateThreadRequest(learnerId: Fixture.learnerA1, title: "First"),
            options: keyed(key)
        ).thread!
        let otherTitle = await failure {
            _ = try await admin.createThread(
                CreateThreadRequest(learnerId: Fixture.learnerA1, title: "Second"),
                options: keyed(key)
            )
        }
        #expect(otherTitle?.code == .alreadyExists)
        #expect(otherTitle?.message.hasPrefix("idempotency_key:") == true)
        let otherMethod = await failure {
            _ = try await admin.sendMessage(SendMessageRequest(threadId: thread.id, body: "x"), options: keyed(key))
        }
        #expect(otherMethod?.code == .alreadyExists)
        #expect(try await rows(harness, "threads") == 1)
        #expect(try await rows(harness, "messages") == 0)
        // Keys are the caller's own: another user's identical key is another key.
        let colleague = try harness.client(.tenantAdmin, user: "admin-2")
        _ = try await colleague.createThread(
            CreateThreadRequest(learnerId: Fixture.learnerA1, title: "Second"),
            options: keyed(key)
        )
        #expect(try await rows(harness, "threads") == 2)
        await admin.close()
        await colleague.close()
        try await harness.stop()
    }

    @Test("concurrent attempts with one key create one thread, and all get its response")
    func concurrent() async throws {
        let harness = try await ServiceHarness()
        let admin = try harness.client(.tenantAdmin)
        let key = freshKey()
        let ids = try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    try await admin.createThread(
                        CreateThreadRequest(learnerId: Fixture.learnerA1, title: "Race"),
                        options: keyed(key)
                    ).thread!.id
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(ids.count == 8)
        #expect(Set(ids).count == 1)
        #expect(try await rows(harness, "threads") == 1)
        #expect(try await rows(harness, "outbox") == 1)
        await admin.close()
        try await harness.stop()
    }

    @Test("a failed first attempt's status is replayed; a key outlives its window only as a new key")
    func failureAndWindow() async throws {
        let harness = try await ServiceHarness(idempotencyWindow: .seconds(3600))
        let officer = try harness.client(.privacyOfficer, user: "officer-1")
        _ = try await officer.placeLegalHold(PlaceLegalHoldRequest(learnerId: Fixture.learnerA1, reason: "first"))
        let key = freshKey()
        let request = PlaceLegalHoldRequest(learnerId: Fixture.learnerA1, reason: "second")
        let first = await failure { _ = try await officer.placeLegalHold(request, options: keyed(key)) }
        #expect(first?.code == .alreadyExists)
        _ = try await officer.releaseLegalHold(ReleaseLegalHoldRequest(learnerId: Fixture.learnerA1, reason: "done"))
        // The retry gets the first attempt's outcome, though placing would succeed now.
        let retry = await failure { _ = try await officer.placeLegalHold(request, options: keyed(key)) }
        #expect(retry == first)
        #expect(try await rows(harness, "legal_holds") == 0)
        // The key is kept for the configured window.
        let kept = try await superuserQuery(
            harness.database,
            "SELECT extract(epoch FROM expires_at - created_at)::int FROM chat.idempotency_keys"
        )
        #expect(kept.first?.first == "3600")
        // After the window the key is new again (the window moved into the past, rather than waited for).
        _ = try await superuserQuery(
            harness.database,
            "UPDATE chat.idempotency_keys SET expires_at = now() - interval '1 second'"
        )
        _ = try await officer.placeLegalHold(request, options: keyed(key))
        #expect(try await rows(harness, "legal_holds") == 1)
        await officer.close()
        try await harness.stop()
    }

    @Test("a refusal decided after the transaction ran keeps that transaction's effect: one audited refusal")
    func refusalAfterEffect() async throws {
        let harness = try await ServiceHarness()
        let officer = try harness.client(.privacyOfficer, user: "officer-1")
        _ = try await officer.placeLegalHold(PlaceLegalHoldRequest(learnerId: Fixture.learnerA1, reason: "case"))
        let key = freshKey()
        let request = EraseLearnerDataRequest(learnerId: Fixture.learnerA1, reason: "asked")
        let first = await failure { _ = try await officer.eraseLearnerData(request, options: keyed(key)) }
        #expect(first?.code == .failedPrecondition)
        let second = await failure { _ = try await officer.eraseLearnerData(request, options: keyed(key)) }
        #expect(second == first)
        let refusals = try await superuserQuery(
            harness.database,
            "SELECT count(*) FROM chat.privacy_audit WHERE kind = \(AuditKind.erasure.number) AND outcome = 'refused: legal hold'"
        )
        #expect(refusals.first?.first == "1")
        await officer.close()
        try await harness.stop()
    }

    @Test("key length is enforced: 16 to 64 bytes, else INVALID_ARGUMENT, not processed")
    func keyLength() async throws {
        let harness = try await ServiceHarness()
        let admin = try harness.client(.tenantAdmin)
        for length in [1, 5, 15, 65, 200] {
            let error = await failure {
                _ = try await admin.createThread(
                    CreateThreadRequest(learnerId: Fixture.learnerA1, title: "K"),
                    options: keyed(Array(repeating: 0x61, count: length))
                )
            }
            #expect(error?.code == .invalidArgument && error?.notProcessed == true, "\(length) bytes")
            #expect(error?.message.hasPrefix("idempotency_key:") == true)
        }
        for length in [16, 64] {
            _ = try await admin.createThread(
                CreateThreadRequest(learnerId: Fixture.learnerA1, title: "K"),
                options: keyed(Array(repeating: UInt8(length), count: length))
            )
        }
        #expect(try await rows(harness, "threads") == 2)
        await admin.close()
        try await harness.stop()
    }

    @Test("a keyed message reaches live streams once its transaction committed")
    func keyedSendIsDelivered() async throws {
        let harness = try await ServiceHarness()
        let admin = try harness.client(.tenantAdmin)
        let thread = try await admin.createThread(CreateThreadRequest(learnerId: Fixture.learnerA1, title: "Live"))
            .thread!
        let log = StreamLog.start { try await admin.watchThread(WatchThreadRequest(threadId: thread.id)) }
        try await waitUntil("the head") { !log.events.isEmpty }
        _ = try await admin.sendMessage(
            SendMessageRequest(threadId: thread.id, body: "live"),
            options: keyed(freshKey())
        )
        try await waitUntil("the message event") {
            log.events.contains { if case .message? = $0.event?.event { true } else { false } }
        }
        await admin.close()
        try await harness.stop()
    }

    @Test("erasing a learner erases the stored outcomes about them, of every caller")
    func erasure() async throws {
        let harness = try await ServiceHarness()
        let teacher = try harness.client(.teacher, user: "teacher-1", scope: [Fixture.learnerA1, Fixture.learnerA2])
        let officer = try harness.client(.privacyOfficer, user: "officer-1")
        var threads: [String: String] = [:]
        for learner in [Fixture.learnerA1, Fixture.learnerA2] {
            let thread = try await teacher.createThread(
                CreateThreadRequest(learnerId: learner, title: "T"),
                options: keyed(freshKey())
            ).thread!
            threads[learner] = thread.id
            _ = try await teacher.sendMessage(
                SendMessageRequest(threadId: thread.id, body: "secret of \(learner)"),
                options: keyed(freshKey())
            )
        }
        func stored(_ learner: String) async throws -> String? {
            try await superuserQuery(
                harness.database,
                "SELECT count(*) FROM chat.idempotency_keys WHERE learner_id = '\(learner)'"
            ).first?.first ?? nil
        }
        #expect(try await stored(Fixture.learnerA1) == "2")
        #expect(try await stored(Fixture.learnerA2) == "2")
        let erasureKey = freshKey()
        let erasure = EraseLearnerDataRequest(learnerId: Fixture.learnerA1, reason: "x")
        let receipt = try await officer.eraseLearnerData(erasure, options: keyed(erasureKey))
        #expect(try await stored(Fixture.learnerA1) == "0")
        #expect(try await stored(Fixture.learnerA2) == "2")
        // The erasure's own outcome (counts, no content) is not about the learner's content: it stays with its key,
        // and a retry gets the first receipt, not a second run's zeros.
        let again = try await officer.eraseLearnerData(erasure, options: keyed(erasureKey))
        #expect(again == receipt && receipt.receipt?.removed?.threads == 1, "\(again) vs \(receipt)")
        let leftovers = try await superuserQuery(
            harness.database,
            "SELECT count(*) FROM chat.idempotency_keys WHERE position(convert_to('secret of \(Fixture.learnerA1)', 'UTF8') IN response) > 0"
        )
        #expect(leftovers.first?.first == "0")
        await teacher.close()
        await officer.close()
        try await harness.stop()
    }

    @Test("expired keys are purged across tenants by the owner's function; live ones stay")
    func purge() async throws {
        let harness = try await ServiceHarness()
        _ = try await superuserQuery(
            harness.database,
            """
            INSERT INTO chat.idempotency_keys (tenant_id, user_id, key, method, request_hash, status, expires_at)
            SELECT t, 'u', decode(md5(t::text || g), 'hex'), '/m', sha256(''::bytea), '', now() + g * interval '1 day'
            FROM unnest(ARRAY['\(Fixture.tenantA)', '\(Fixture.tenantB)']::uuid[]) t, generate_series(-3, 2) g
            """
        )
        let purged = try await PrivacyRepository(pool: harness.pool).purgeIdempotencyKeys(batchSize: 100)
        #expect(purged == 8)  // days -3 to 0, both tenants
        let left = try await superuserQuery(harness.database, "SELECT count(*) FROM chat.idempotency_keys")
        #expect(left.first?.first == "4")
        try await harness.stop()
    }
}
