internal import ChatDomain
internal import ChatProto

extension PrivacyRepository {
    /// What an erasure did.
    public enum ErasureOutcome: Sendable, Hashable {
        /// Erased (the counts are zero when there was nothing left): the audit record's id and completion time.
        case erased(auditID: String, removed: RemovedRows, threadIDs: [String], completedAtMicros: Int64)
        /// Refused: the learner is under a legal hold (the refusal is in the audit trail too).
        case held(LegalHoldRecord, auditID: String)
    }

    /// Erases everything held about a learner, in one transaction: edit history, read cursors, messages and threads
    /// are deleted, the content of the learner's outbox events is removed (each event stays as a tombstone,
    /// `erased`), every erased thread gets a thread-deleted event, and the audit record keeps the counts. Idempotent:
    /// a second erasure finds nothing and reports zero.
    ///
    /// Concurrent writes are fenced: the erasure takes the event lock of each of the learner's threads (in id order)
    /// before it deletes anything, so a message sent at the same moment either commits first and is erased, or
    /// finds its thread gone.
    public func erase(_ context: TenantContext, learnerID: String, reason: String) async throws -> ErasureOutcome {
        let tenant = context.tenantID
        return try await self.pool.withTenantTransaction(context) { transaction in
            try transaction.query(privacyLock(tenant, shared: true))
            let hold = try transaction.query(
                """
                SELECT \(unsafeRaw: LegalHoldRecord.columns) FROM chat.legal_holds
                WHERE tenant_id = \(tenant) AND learner_id = \(learnerID)
                """
            )
            if hold.rowCount == 1 {
                let record = try LegalHoldRecord(hold, row: 0)
                let audit = try transaction.query(
                    """
                    INSERT INTO chat.privacy_audit
                        (tenant_id, kind, actor_id, actor_role, learner_id, finished_at, outcome, reason)
                    VALUES (\(tenant), \(AuditKind.erasure), \(context.userID), \(context.role.claimName), \(learnerID),
                            now(), 'refused: legal hold', \(reason))
                    RETURNING id::text AS id
                    """
                )
                return .held(record, auditID: try audit.requiredString(row: 0, column: "id"))
            }
            // Stored outcomes of mutations about the learner (of any caller) may hold content.
            try transaction.query("SELECT chat.erase_idempotency_outcomes(\(learnerID)::uuid)")
            try transaction.query(
                """
                SELECT count(pg_advisory_xact_lock(\(threadEventLockClass)::int4, hashtext(id::text)))
                FROM (SELECT id FROM chat.threads WHERE tenant_id = \(tenant) AND learner_id = \(learnerID) ORDER BY id) t
                """
            )
            let erased = try transaction.query(
                """
                WITH edits AS (
                    DELETE FROM chat.message_edits WHERE tenant_id = \(tenant) AND learner_id = \(learnerID)
                    RETURNING 1
                ), cursors AS (
                    DELETE FROM chat.read_cursors WHERE tenant_id = \(tenant) AND learner_id = \(learnerID)
                    RETURNING 1
                ), messages AS (
                    DELETE FROM chat.messages WHERE tenant_id = \(tenant) AND learner_id = \(learnerID)
                    RETURNING 1
                ), threads AS (
                    DELETE FROM chat.threads WHERE tenant_id = \(tenant) AND learner_id = \(learnerID)
                    RETURNING tenant_id, id, learner_id, event_seq
                ), replaced AS (
                    DELETE FROM chat.outbox
                    WHERE tenant_id = \(tenant) AND learner_id = \(learnerID) AND type = ANY (\(chatEventNumbers)::int2[]) AND NOT erased
                    RETURNING \(unsafeRaw: outboxTombstoneColumns)
                ), payloads AS (
                    INSERT INTO chat.outbox (\(unsafeRaw: outboxTombstoneColumns), payload, erased) OVERRIDING SYSTEM VALUE
                    SELECT \(unsafeRaw: outboxTombstoneColumns), NULL, true FROM replaced
                    RETURNING 1
                ), thread_events AS (
                    INSERT INTO chat.outbox (tenant_id, type, learner_id, thread_id, event_seq, payload, erased)
                    SELECT tenant_id, \(EventType.threadDeleted), learner_id, id, event_seq + 1, NULL, true
                    FROM threads
                ), counts AS (
                    SELECT (SELECT count(*) FROM threads) AS threads, (SELECT count(*) FROM messages) AS messages,
                           (SELECT count(*) FROM edits) AS edits, (SELECT count(*) FROM cursors) AS cursors,
                           (SELECT count(*) FROM payloads) AS payloads,
                           (SELECT coalesce(array_agg(id::text ORDER BY id), '{}') FROM threads) AS thread_ids
                ), audit AS (
                    INSERT INTO chat.privacy_audit
                        (tenant_id, kind, actor_id, actor_role, learner_id, finished_at, removed_threads,
                         removed_messages, removed_message_edits, removed_read_cursors, removed_outbox_payloads,
                         outcome, reason)
                    SELECT \(tenant), \(AuditKind.erasure), \(context.userID), \(context.role.claimName), \(learnerID),
                           now(), threads, messages, edits, cursors, payloads, 'ok', \(reason)
                    FROM counts
                    RETURNING tenant_id, id, learner_id, finished_at
                ), event AS (
                    INSERT INTO chat.outbox (tenant_id, type, learner_id, payload)
                    SELECT a.tenant_id, \(EventType.privacyErasureCompleted), a.learner_id,
                           jsonb_build_object('audit_id', a.id, 'threads', c.threads, 'messages', c.messages,
                                              'message_edits', c.edits, 'read_cursors', c.cursors,
                                              'outbox_payloads', c.payloads)
                    FROM audit a, counts c
                )
                SELECT a.id::text AS audit_id, (extract(epoch FROM a.finished_at) * 1000000)::int8 AS completed_us,
                       c.threads, c.messages, c.edits, c.cursors, c.payloads, c.thread_ids::text AS thread_ids
                FROM audit a, counts c
                """
            )
            return .erased(
                auditID: try erased.requiredString(row: 0, column: "audit_id"),
                removed: RemovedRows(
                    threads: try erased.requiredInt64(row: 0, column: "threads"),
                    messages: try erased.requiredInt64(row: 0, column: "messages"),
                    messageEdits: try erased.requiredInt64(row: 0, column: "edits"),
                    readCursors: try erased.requiredInt64(row: 0, column: "cursors"),
                    outboxPayloads: try erased.requiredInt64(row: 0, column: "payloads")
                ),
                threadIDs: parseTextArray(try erased.requiredString(row: 0, column: "thread_ids")),
                completedAtMicros: try erased.requiredInt64(row: 0, column: "completed_us")
            )
        }
    }
}
