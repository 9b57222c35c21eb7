internal import ChatDomain
internal import ChatProto

/// What an erasure or a retention run removed, per store.
public struct RemovedRows: Sendable, Hashable {
    public var threads: Int64 = 0
    public var messages: Int64 = 0
    public var messageEdits: Int64 = 0
    public var readCursors: Int64 = 0
    /// Outbox events whose content was removed (each stays as a tombstone).
    public var outboxPayloads: Int64 = 0

    public init(
        threads: Int64 = 0,
        messages: Int64 = 0,
        messageEdits: Int64 = 0,
        readCursors: Int64 = 0,
        outboxPayloads: Int64 = 0
    ) {
        self.threads = threads
        self.messages = messages
        self.messageEdits = messageEdits
        self.readCursors = readCursors
        self.outboxPayloads = outboxPayloads
    }

    /// Adds another batch's counts.
    public static func += (lhs: inout RemovedRows, rhs: RemovedRows) {
        lhs.threads += rhs.threads
        lhs.messages += rhs.messages
        lhs.messageEdits += rhs.messageEdits
        lhs.readCursors += rhs.readCursors
        lhs.outboxPayloads += rhs.outboxPayloads
    }
}

/// One audit record: who, when, which learner, what happened and how much. Never content.
public struct AuditEntry: Sendable, Hashable {
    public var id: String
    public var kind: Int
    public var actorID: String
    public var actorRole: String
    public var learnerID: String?
    public var startedAtMicros: Int64
    public var finishedAtMicros: Int64?
    public var removed: RemovedRows
    public var exportedRecords: Int64
    public var outcome: String
    public var reason: String

    static let columns = """
        id::text AS id, kind, actor_id, actor_role, learner_id::text AS learner_id, \
        (extract(epoch FROM started_at) * 1000000)::int8 AS started_at_us, \
        (extract(epoch FROM finished_at) * 1000000)::int8 AS finished_at_us, removed_threads, removed_messages, \
        removed_message_edits, removed_read_cursors, removed_outbox_payloads, exported_records, outcome, reason
        """

    init(_ result: PGResult, row: Int) throws(StorageError) {
        self.id = try result.requiredString(row: row, column: "id")
        self.kind = Int(try result.requiredInt64(row: row, column: "kind"))
        self.actorID = try result.requiredString(row: row, column: "actor_id")
        self.actorRole = try result.requiredString(row: row, column: "actor_role")
        self.learnerID = try result.optionalString(row: row, column: "learner_id")
        self.startedAtMicros = try result.requiredInt64(row: row, column: "started_at_us")
        self.finishedAtMicros = try result.optionalInt64(row: row, column: "finished_at_us")
        self.removed = RemovedRows(
            threads: try result.requiredInt64(row: row, column: "removed_threads"),
            messages: try result.requiredInt64(row: row, column: "removed_messages"),
            messageEdits: try result.requiredInt64(row: row, column: "removed_message_edits"),
            readCursors: try result.requiredInt64(row: row, column: "removed_read_cursors"),
            outboxPayloads: try result.requiredInt64(row: row, column: "removed_outbox_payloads")
        )
        self.exportedRecords = try result.requiredInt64(row: row, column: "exported_records")
        self.outcome = try result.requiredString(row: row, column: "outcome")
        self.reason = try result.requiredString(row: row, column: "reason")
    }
}

/// A legal hold on a learner.
public struct LegalHoldRecord: Sendable, Hashable {
    public var learnerID: String
    public var reason: String
    public var placedBy: String
    public var placedByRole: String
    public var placedAtMicros: Int64

    static let columns = """
        learner_id::text AS learner_id, reason, placed_by, placed_by_role, \
        (extract(epoch FROM placed_at) * 1000000)::int8 AS placed_at_us
        """

    init(_ result: PGResult, row: Int) throws(StorageError) {
        self.learnerID = try result.requiredString(row: row, column: "learner_id")
        self.reason = try result.requiredString(row: row, column: "reason")
        self.placedBy = try result.requiredString(row: row, column: "placed_by")
        self.placedByRole = try result.requiredString(row: row, column: "placed_by_role")
        self.placedAtMicros = try result.requiredInt64(row: row, column: "placed_at_us")
    }
}

/// A tenant's retention policy.
public struct RetentionPolicyRecord: Sendable, Hashable {
    /// Messages older than this many days are removed; 0 keeps them forever.
    public var messageRetentionDays: Int
    public var updatedBy: String
    public var updatedByRole: String
    public var updatedAtMicros: Int64
}

/// A read cursor as stored.
public struct ReadCursorRecord: Sendable, Hashable {
    public var userID: String
    public var threadID: String
    public var readSeq: Int64
    public var updatedAtMicros: Int64
}

/// One record of an export.
public enum ExportItem: Sendable, Hashable {
    case thread(ThreadRecord)
    case message(MessageRecord)
    /// A message's stored edit history, oldest revision first.
    case edits(threadID: String, seq: Int64, [MessageRepository.Revision])
    case readCursor(ReadCursorRecord)
    case audit(AuditEntry)
}

/// The lock that orders legal holds against erasures and retention batches of a tenant: placing a hold takes it
/// exclusively, an erasure or a retention batch shares it, so a hold placed while one runs takes effect before the
/// next one starts, never in the middle of one.
func privacyLock(_ tenantID: String, shared: Bool) -> SQL {
    shared
        ? "SELECT pg_advisory_xact_lock_shared(\(privacyLockClass)::int4, hashtext(\(tenantID)::uuid::text))"
        : "SELECT pg_advisory_xact_lock(\(privacyLockClass)::int4, hashtext(\(tenantID)::uuid::text))"
}

/// The first key of the privacy locks: "priv" as a 32-bit integer.
let privacyLockClass: Int32 = 0x7072_6976

/// Export, erasure, legal holds, retention and the audit trail, each under the caller's tenant context (a privacy
/// officer or tenant admin: the privacy tables' policies admit no one else).
public struct PrivacyRepository: Sendable {
    let pool: PGPool

    /// Creates the repository over a pool.
    public init(pool: PGPool) {
        self.pool = pool
    }

    // MARK: - Export

    /// Starts an export: its audit record (outcome `running`) and the export-requested event.
    ///
    /// - Returns: the audit record's id.
    public func beginExport(_ context: TenantContext, learnerID: String, reason: String) async throws -> String {
        let statement: SQL = """
            WITH audit AS (
                INSERT INTO chat.privacy_audit (tenant_id, kind, actor_id, actor_role, learner_id, outcome, reason)
                VALUES (\(context.tenantID), \(AuditKind.export), \(context.userID), \(context.role.claimName),
                        \(learnerID), 'running', \(reason))
                RETURNING tenant_id, id, learner_id
            ), event AS (
                INSERT INTO chat.outbox (tenant_id, type, learner_id, payload)
                SELECT tenant_id, \(EventType.privacyExportRequested), learner_id,
                       jsonb_build_object('audit_id', id, 'requested_by', \(context.userID)::text)
                FROM audit
            )
            SELECT id::text AS id FROM audit
            """
        return try await self.pool.tenantBatch(context, [statement]) { results in
            try results[0].requiredString(row: 0, column: "id")
        }
    }

    /// Reopens an interrupted export of `learnerID` (its outcome goes back to `running`).
    ///
    /// - Throws: `.notFound` when there is no such export of this learner in the tenant; `.failedPrecondition` when
    ///   it already completed.
    public func resumeExport(_ context: TenantContext, learnerID: String, auditID: String) async throws {
        let statements: [SQL] = [
            """
            WITH target AS MATERIALIZED (
                SELECT id FROM chat.privacy_audit
                WHERE tenant_id = \(context.tenantID) AND id = \(auditID) AND kind = \(AuditKind.export)
                  AND learner_id = \(learnerID) AND outcome <> 'ok'
            )
            SELECT 1 FROM target, chat.audit_update(target.id, new_outcome => 'running') resumed
            """,
            """
            SELECT outcome FROM chat.privacy_audit
            WHERE tenant_id = \(context.tenantID) AND id = \(auditID) AND kind = \(AuditKind.export)
              AND learner_id = \(learnerID)
            """,
        ]
        try await self.pool.tenantBatch(context, statements) { results in
            guard results[1].rowCount == 1 else { throw StorageError(code: .notFound, detail: "export") }
            guard results[0].rowCount == 1 else {
                throw StorageError(code: .failedPrecondition, detail: "this export already completed")
            }
        }
    }

    /// A page of export records after `position`: at most `limit` records (one more when the last message's edit
    /// history follows it), each with the position right after it, and the position after the page (`.done` when no
    /// records are left). Runs in one transaction, which also records the export's progress (`records` sent before
    /// this page plus the page) in its audit record.
    public func exportPage(
        _ context: TenantContext,
        learnerID: String,
        auditID: String,
        after start: ExportPosition,
        sentBefore: Int64,
        limit: Int
    ) async throws -> (items: [(ExportItem, ExportPosition)], next: ExportPosition) {
        try await self.pool.withTenantTransaction(context) { transaction in
            let reader = ExportReader(
                transaction: transaction,
                context: context,
                learnerID: learnerID,
                auditID: auditID
            )
            var items: [(ExportItem, ExportPosition)] = []
            var position = start
            while items.count < limit, position != .done {
                position = try reader.read(after: position, limit: limit - items.count, into: &items)
            }
            // The count: records the server sent before this page (from its sealed resume token) plus the page.
            try transaction.query(
                "SELECT 1 FROM chat.audit_update(\(auditID)::uuid, exported => \(sentBefore + Int64(items.count)))"
            )
            return (items, position)
        }
    }

    /// Ends an export: `ok` with the completed event, or why it stopped.
    public func finishExport(_ context: TenantContext, auditID: String, records: Int64, outcome: String)
        async throws
    {
        let completed = outcome == "ok"
        let statement: SQL = """
            WITH audit AS (
                SELECT tenant_id, id, learner_id
                FROM chat.audit_update(\(auditID)::uuid, exported => \(records), new_outcome => \(outcome),
                                       finish => \(completed))
            ), event AS (
                INSERT INTO chat.outbox (tenant_id, type, learner_id, payload)
                SELECT tenant_id, \(EventType.privacyExportCompleted), learner_id,
                       jsonb_build_object('audit_id', id, 'records', \(records)::int8)
                FROM audit WHERE \(completed)
            )
            SELECT 1 FROM audit
            """
        try await self.pool.tenantBatch(context, [statement]) { _ in () }
    }

    // MARK: - Erasure

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
                ), payloads AS (
                    UPDATE chat.outbox SET payload = NULL, erased = true
                    WHERE tenant_id = \(tenant) AND learner_id = \(learnerID) AND type = ANY (\(chatEventNumbers)::int2[]) AND NOT erased
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

    // MARK: - Legal holds

    /// Places a hold on a learner (audited, with its event).
    ///
    /// - Returns: the new hold, or the hold already in place (`placed` false).
    public func placeHold(_ context: TenantContext, learnerID: String, reason: String) async throws
        -> (hold: LegalHoldRecord, placed: Bool)
    {
        let tenant = context.tenantID
        let statements: [SQL] = [
            privacyLock(tenant, shared: false),
            """
            WITH hold AS (
                INSERT INTO chat.legal_holds (tenant_id, learner_id, reason, placed_by, placed_by_role)
                VALUES (\(tenant), \(learnerID), \(reason), \(context.userID), \(context.role.claimName))
                ON CONFLICT (tenant_id, learner_id) DO NOTHING
                RETURNING *
            ), audit AS (
                INSERT INTO chat.privacy_audit
                    (tenant_id, kind, actor_id, actor_role, learner_id, finished_at, outcome, reason)
                SELECT tenant_id, \(AuditKind.legalHoldPlaced), placed_by, placed_by_role, learner_id, now(), 'ok', reason
                FROM hold
            ), event AS (
                INSERT INTO chat.outbox (tenant_id, type, learner_id, payload)
                SELECT tenant_id, \(EventType.legalHoldPlaced), learner_id,
                       jsonb_build_object('placed_by', placed_by)
                FROM hold
            )
            SELECT true AS placed, \(unsafeRaw: LegalHoldRecord.columns) FROM hold
            """,
            """
            SELECT false AS placed, \(unsafeRaw: LegalHoldRecord.columns) FROM chat.legal_holds
            WHERE tenant_id = \(tenant) AND learner_id = \(learnerID)
            """,
        ]
        return try await self.pool.tenantBatch(context, statements) { results in
            if results[1].rowCount == 1 { return (try LegalHoldRecord(results[1], row: 0), true) }
            guard results[2].rowCount == 1 else { throw StorageError(code: .notFound, detail: "legal hold") }
            return (try LegalHoldRecord(results[2], row: 0), false)
        }
    }

    /// Lifts a learner's hold (audited, with its event).
    ///
    /// - Throws: `.notFound` when the learner is not under a hold.
    public func releaseHold(_ context: TenantContext, learnerID: String, reason: String) async throws {
        let tenant = context.tenantID
        let statement: SQL = """
            WITH hold AS (
                DELETE FROM chat.legal_holds WHERE tenant_id = \(tenant) AND learner_id = \(learnerID)
                RETURNING tenant_id, learner_id
            ), audit AS (
                INSERT INTO chat.privacy_audit
                    (tenant_id, kind, actor_id, actor_role, learner_id, finished_at, outcome, reason)
                SELECT tenant_id, \(AuditKind.legalHoldReleased), \(context.userID), \(context.role.claimName),
                       learner_id, now(), 'ok', \(reason)
                FROM hold
            ), event AS (
                INSERT INTO chat.outbox (tenant_id, type, learner_id, payload)
                SELECT tenant_id, \(EventType.legalHoldReleased), learner_id,
                       jsonb_build_object('released_by', \(context.userID)::text)
                FROM hold
            )
            SELECT 1 FROM hold
            """
        try await self.pool.tenantBatch(context, [privacyLock(tenant, shared: false), statement]) { results in
            guard results[1].rowCount == 1 else { throw StorageError(code: .notFound, detail: "legal hold") }
        }
    }

    /// The tenant's holds by learner id, after `afterLearner`.
    public func holds(_ context: TenantContext, afterLearner: String?, limit: Int) async throws -> [LegalHoldRecord] {
        let statement: SQL = """
            SELECT \(unsafeRaw: LegalHoldRecord.columns) FROM chat.legal_holds
            WHERE tenant_id = \(context.tenantID) AND (\(afterLearner)::uuid IS NULL OR learner_id > \(afterLearner)::uuid)
            ORDER BY learner_id LIMIT \(limit)
            """
        return try await self.pool.tenantBatch(context, [statement]) { results in
            try (0..<results[0].rowCount).map { try LegalHoldRecord(results[0], row: $0) }
        }
    }

    // MARK: - Retention

    /// The tenant's retention policy; nil when none was ever set (messages are kept).
    public func retentionPolicy(_ context: TenantContext) async throws -> RetentionPolicyRecord? {
        let statement: SQL = """
            SELECT message_retention_days, updated_by, updated_by_role,
                   (extract(epoch FROM updated_at) * 1000000)::int8 AS updated_at_us
            FROM chat.retention_policies WHERE tenant_id = \(context.tenantID)
            """
        return try await self.pool.tenantBatch(context, [statement]) { results in
            try Self.policy(results[0])
        }
    }

    /// Sets the tenant's retention policy (0 days: keep forever), audited.
    public func setRetentionPolicy(_ context: TenantContext, days: Int) async throws -> RetentionPolicyRecord {
        let statement: SQL = """
            WITH policy AS (
                INSERT INTO chat.retention_policies (tenant_id, message_retention_days, updated_by, updated_by_role)
                VALUES (\(context.tenantID), \(days), \(context.userID), \(context.role.claimName))
                ON CONFLICT (tenant_id) DO UPDATE
                SET message_retention_days = excluded.message_retention_days, updated_by = excluded.updated_by,
                    updated_by_role = excluded.updated_by_role, updated_at = now()
                RETURNING *
            ), audit AS (
                INSERT INTO chat.privacy_audit (tenant_id, kind, actor_id, actor_role, finished_at, outcome, reason)
                SELECT tenant_id, \(AuditKind.retentionPolicySet), updated_by, updated_by_role, now(), 'ok',
                       'message_retention_days=' || message_retention_days
                FROM policy
            )
            SELECT message_retention_days, updated_by, updated_by_role,
                   (extract(epoch FROM updated_at) * 1000000)::int8 AS updated_at_us
            FROM policy
            """
        return try await self.pool.tenantBatch(context, [statement]) { results in
            guard let policy = try Self.policy(results[0]) else {
                throw StorageError(code: .unexpectedResult, detail: "retention policy not written")
            }
            return policy
        }
    }

    static func policy(_ result: PGResult) throws(StorageError) -> RetentionPolicyRecord? {
        guard result.rowCount == 1 else { return nil }
        return RetentionPolicyRecord(
            messageRetentionDays: Int(try result.requiredInt64(row: 0, column: "message_retention_days")),
            updatedBy: try result.requiredString(row: 0, column: "updated_by"),
            updatedByRole: try result.requiredString(row: 0, column: "updated_by_role"),
            updatedAtMicros: try result.requiredInt64(row: 0, column: "updated_at_us")
        )
    }

    /// A retention run that started: its audit record and the cut-off it applies.
    public struct RetentionRun: Sendable, Hashable {
        public var auditID: String
        public var days: Int
        /// Messages created before this time (microseconds since the epoch) expire in this run.
        public var cutoffMicros: Int64
        /// Learners under a legal hold who have expired messages: skipped.
        public var heldLearners: Int
    }

    /// Starts a retention run of the tenant: reads the policy, fixes the cut-off, counts the held learners it will
    /// skip, and records the run (`running`). Nil when the tenant keeps messages forever.
    public func beginRetentionRun(_ context: TenantContext) async throws -> RetentionRun? {
        let tenant = context.tenantID
        let statement: SQL = """
            WITH policy AS (
                SELECT message_retention_days AS days, now() - make_interval(days => message_retention_days) AS cutoff
                FROM chat.retention_policies WHERE tenant_id = \(tenant) AND message_retention_days > 0
            ), held AS (
                SELECT count(*) AS learners FROM chat.legal_holds h, policy p
                WHERE h.tenant_id = \(tenant) AND EXISTS (
                    SELECT 1 FROM chat.messages m
                    WHERE m.tenant_id = h.tenant_id AND m.learner_id = h.learner_id AND m.created_at < p.cutoff)
            ), audit AS (
                INSERT INTO chat.privacy_audit (tenant_id, kind, actor_id, actor_role, outcome, reason)
                SELECT \(tenant), \(AuditKind.retentionRun), \(context.userID), \(context.role.claimName), 'running',
                       'message_retention_days=' || p.days || CASE WHEN h.learners > 0
                           THEN '; skipped ' || h.learners || ' learner(s) under legal hold' ELSE '' END
                FROM policy p, held h
                RETURNING id
            )
            SELECT a.id::text AS id, p.days, (extract(epoch FROM p.cutoff) * 1000000)::int8 AS cutoff_us,
                   h.learners
            FROM audit a, policy p, held h
            """
        return try await self.pool.tenantBatch(context, [statement]) { results in
            let result = results[0]
            guard result.rowCount == 1 else { return nil }
            return RetentionRun(
                auditID: try result.requiredString(row: 0, column: "id"),
                days: Int(try result.requiredInt64(row: 0, column: "days")),
                cutoffMicros: try result.requiredInt64(row: 0, column: "cutoff_us"),
                heldLearners: Int(try result.requiredInt64(row: 0, column: "learners"))
            )
        }
    }

    /// One retention batch, in one short transaction: deletes up to `batchSize` expired messages (with their edit
    /// history) and removes the content of up to `batchSize` expired outbox events, skipping learners under a legal
    /// hold and rows another transaction holds locked (the next batch gets them), and adds the counts to the run's
    /// audit record in the same transaction. Read cursors are sequence numbers, so they stay valid as messages go.
    ///
    /// - Returns: what this batch removed; a batch that removed fewer than `batchSize` of each was the last.
    public func retentionBatch(_ context: TenantContext, run: RetentionRun, batchSize: Int) async throws
        -> RemovedRows
    {
        let tenant = context.tenantID
        let statement: SQL = """
            WITH cutoff AS (
                SELECT timestamptz 'epoch' + \(run.cutoffMicros)::int8 * interval '1 microsecond' AS at
            ), batch AS (
                SELECT m.thread_id, m.seq FROM chat.messages m, cutoff c
                WHERE m.tenant_id = \(tenant) AND m.created_at < c.at
                  AND NOT EXISTS (SELECT 1 FROM chat.legal_holds h
                                  WHERE h.tenant_id = m.tenant_id AND h.learner_id = m.learner_id)
                ORDER BY m.created_at LIMIT \(batchSize)
                FOR UPDATE OF m SKIP LOCKED
            ), edits AS (
                DELETE FROM chat.message_edits e USING batch b
                WHERE e.tenant_id = \(tenant) AND e.thread_id = b.thread_id AND e.seq = b.seq
                RETURNING 1
            ), messages AS (
                DELETE FROM chat.messages m USING batch b
                WHERE m.tenant_id = \(tenant) AND m.thread_id = b.thread_id AND m.seq = b.seq
                RETURNING 1
            ), events AS (
                SELECT o.id FROM chat.outbox o, cutoff c
                WHERE o.tenant_id = \(tenant) AND NOT o.erased AND o.type = ANY (\(chatEventNumbers)::int2[]) AND o.occurred_at < c.at
                  AND NOT EXISTS (SELECT 1 FROM chat.legal_holds h
                                  WHERE h.tenant_id = o.tenant_id AND h.learner_id = o.learner_id)
                ORDER BY o.occurred_at LIMIT \(batchSize)
                FOR UPDATE OF o SKIP LOCKED
            ), payloads AS (
                UPDATE chat.outbox o SET payload = NULL, erased = true FROM events e
                WHERE o.tenant_id = \(tenant) AND o.id = e.id
                RETURNING 1
            ), counts AS (
                SELECT (SELECT count(*) FROM messages) AS messages, (SELECT count(*) FROM edits) AS edits,
                       (SELECT count(*) FROM payloads) AS payloads
            ), audit AS (
                SELECT 1 FROM counts c,
                    chat.audit_update(\(run.auditID)::uuid, add_messages => c.messages, add_edits => c.edits,
                                      add_payloads => c.payloads) updated
            )
            SELECT c.messages, c.edits, c.payloads FROM counts c CROSS JOIN (SELECT count(*) FROM audit) recorded
            """
        return try await self.pool.tenantBatch(context, [privacyLock(tenant, shared: true), statement]) { results in
            RemovedRows(
                messages: try results[1].requiredInt64(row: 0, column: "messages"),
                messageEdits: try results[1].requiredInt64(row: 0, column: "edits"),
                outboxPayloads: try results[1].requiredInt64(row: 0, column: "payloads")
            )
        }
    }

    /// Ends a retention run: its outcome (`ok`, or `failed: <reason>`), finish time, and the completed event.
    public func finishRetentionRun(_ context: TenantContext, run: RetentionRun, outcome: String) async throws {
        let statement: SQL = """
            WITH audit AS (
                SELECT * FROM chat.audit_update(\(run.auditID)::uuid, new_outcome => \(outcome), finish => true)
            ), event AS (
                INSERT INTO chat.outbox (tenant_id, type, payload)
                SELECT tenant_id, \(EventType.retentionRunCompleted),
                       jsonb_build_object('audit_id', id, 'outcome', outcome, 'messages', removed_messages,
                                          'message_edits', removed_message_edits,
                                          'outbox_payloads', removed_outbox_payloads)
                FROM audit
            )
            SELECT 1 FROM audit
            """
        try await self.pool.tenantBatch(context, [statement]) { _ in () }
    }

    /// Every tenant with a retention policy and its days, for the sweeper: the one cross-tenant read, through
    /// `chat.retention_schedule()` (migration 3). Runs without a tenant context.
    public func retentionSchedule() async throws -> [(tenantID: String, days: Int)] {
        try await self.pool.withConnection { connection in
            let result = try connection.query(
                "SELECT tenant_id::text AS tenant_id, message_retention_days FROM chat.retention_schedule()"
            )
            return try (0..<result.rowCount).map { row in
                (
                    try result.requiredString(row: row, column: "tenant_id"),
                    Int(try result.requiredInt64(row: row, column: "message_retention_days"))
                )
            }
        }
    }

    /// Deletes up to `batchSize` expired idempotency keys of every tenant through `chat.purge_idempotency_keys`
    /// (migration 4); returns how many. Runs without a tenant context.
    public func purgeIdempotencyKeys(batchSize: Int) async throws -> Int {
        try await self.pool.withConnection { connection in
            let result = try connection.query("SELECT chat.purge_idempotency_keys(\(batchSize)) AS purged")
            return Int(try result.requiredInt64(row: 0, column: "purged"))
        }
    }

    // MARK: - Audit trail

    /// One problem in the tenant's audit chain.
    public struct ChainProblem: Sendable, Hashable {
        /// The chain entry (0 when the record has none).
        public var seq: Int64
        public var auditID: String
        public var description: String
    }

    /// What verifying the tenant's audit chain found.
    public struct ChainReport: Sendable, Hashable {
        public var problems: [ChainProblem]
        public var entries: Int64
        public var headSeq: Int64
        public var headHash: [UInt8]
        /// The hash of the entry asked for, when it exists.
        public var anchorHash: [UInt8]?
    }

    /// Recomputes the tenant's audit chain (`chat.verify_audit_chain`, migration 5) in one snapshot.
    public func verifyAuditChain(_ context: TenantContext, anchorSeq: Int64?) async throws -> ChainReport {
        let statements: [SQL] = [
            "SELECT coalesce(seq, 0) AS seq, audit_id::text AS audit_id, problem FROM chat.verify_audit_chain()",
            """
            SELECT count(*) AS entries, coalesce(max(seq), 0) AS head_seq,
                   coalesce(encode((SELECT hash FROM chat.privacy_audit_chain
                                    WHERE tenant_id = \(context.tenantID) ORDER BY seq DESC LIMIT 1), 'hex'), '') AS head,
                   coalesce(encode((SELECT hash FROM chat.privacy_audit_chain
                                    WHERE tenant_id = \(context.tenantID) AND seq = \(anchorSeq)), 'hex'), '') AS anchor
            FROM chat.privacy_audit_chain WHERE tenant_id = \(context.tenantID)
            """,
        ]
        return try await self.pool.tenantBatch(context, statements) { results in
            let problems = try (0..<results[0].rowCount).map { row in
                ChainProblem(
                    seq: try results[0].requiredInt64(row: row, column: "seq"),
                    auditID: try results[0].requiredString(row: row, column: "audit_id"),
                    description: try results[0].requiredString(row: row, column: "problem")
                )
            }
            let summary = results[1]
            let anchor = try summary.requiredString(row: 0, column: "anchor")
            return ChainReport(
                problems: problems,
                entries: try summary.requiredInt64(row: 0, column: "entries"),
                headSeq: try summary.requiredInt64(row: 0, column: "head_seq"),
                headHash: Hex.decode(try summary.requiredString(row: 0, column: "head")) ?? [],
                anchorHash: anchor.isEmpty ? nil : Hex.decode(anchor)
            )
        }
    }

    /// Filters of the audit trail.
    public struct AuditFilter: Sendable, Hashable {
        public var learnerID: String?
        public var kind: Int?
        public var fromMicros: Int64?
        public var toMicros: Int64?

        public init(learnerID: String? = nil, kind: Int? = nil, fromMicros: Int64? = nil, toMicros: Int64? = nil) {
            self.learnerID = learnerID
            self.kind = kind
            self.fromMicros = fromMicros
            self.toMicros = toMicros
        }
    }

    /// Audit records newest first, after `cursor` (the last record of the previous page).
    public func auditRecords(
        _ context: TenantContext,
        filter: AuditFilter,
        after cursor: ExportPosition.AuditKey?,
        limit: Int
    ) async throws -> [AuditEntry] {
        let statement: SQL = """
            SELECT \(unsafeRaw: AuditEntry.columns) FROM chat.privacy_audit
            WHERE tenant_id = \(context.tenantID)
              AND (\(filter.learnerID)::uuid IS NULL OR learner_id = \(filter.learnerID)::uuid)
              AND (\(filter.kind)::int2 IS NULL OR kind = \(filter.kind)::int2)
              AND (\(filter.fromMicros)::int8 IS NULL
                   OR started_at >= timestamptz 'epoch' + \(filter.fromMicros)::int8 * interval '1 microsecond')
              AND (\(filter.toMicros)::int8 IS NULL
                   OR started_at < timestamptz 'epoch' + \(filter.toMicros)::int8 * interval '1 microsecond')
              AND (\(cursor?.startedAtMicros)::int8 IS NULL
                   OR (started_at, id) < (timestamptz 'epoch' + \(cursor?.startedAtMicros)::int8 * interval '1 microsecond',
                                          \(cursor?.id)::uuid))
            ORDER BY started_at DESC, id DESC
            LIMIT \(limit)
            """
        return try await self.pool.tenantBatch(context, [statement]) { results in
            try (0..<results[0].rowCount).map { try AuditEntry(results[0], row: $0) }
        }
    }
}

/// Reads the records of an export after a position, within one transaction.
private struct ExportReader {
    let transaction: TenantTransaction
    let context: TenantContext
    let learnerID: String
    let auditID: String

    /// Reads up to `limit` records after `position` (one more when a message's edit history follows it) into
    /// `items`, and returns the position after what it read.
    func read(after position: ExportPosition, limit: Int, into items: inout [(ExportItem, ExportPosition)])
        throws -> ExportPosition
    {
        let tenant = self.context.tenantID
        switch position {
        case .threads(let after):
            let result = try self.transaction.query(
                """
                SELECT \(unsafeRaw: ThreadRecord.columns) FROM chat.threads
                WHERE tenant_id = \(tenant) AND learner_id = \(self.learnerID)
                  AND (\(after)::uuid IS NULL OR id > \(after)::uuid)
                ORDER BY id LIMIT 1
                """
            )
            guard result.rowCount == 1 else { return .readCursors(after: nil) }
            let thread = try ThreadRecord(result, row: 0)
            items.append((.thread(thread), .thread(thread.id)))
            return .thread(thread.id)
        case .thread(let thread):
            return try self.messages(thread: thread, after: 0, limit: limit, into: &items)
        case .message(let thread, let seq):
            let history = try self.history(thread: thread, seqs: [seq])
            if let revisions = history[seq] {
                items.append((.edits(threadID: thread, seq: seq, revisions), .edits(thread: thread, seq: seq)))
            }
            return .edits(thread: thread, seq: seq)
        case .edits(let thread, let seq):
            return try self.messages(thread: thread, after: seq, limit: limit, into: &items)
        case .readCursors(let after):
            let result = try self.transaction.query(
                """
                SELECT user_id, thread_id::text AS thread_id, read_seq,
                       (extract(epoch FROM updated_at) * 1000000)::int8 AS updated_at_us
                FROM chat.read_cursors
                WHERE tenant_id = \(tenant) AND learner_id = \(self.learnerID)
                  AND (\(after?.threadID)::uuid IS NULL OR (thread_id, user_id) > (\(after?.threadID)::uuid, \(after?.userID)))
                ORDER BY thread_id, user_id LIMIT \(limit)
                """
            )
            var last: ExportPosition = .readCursors(after: after)
            for row in 0..<result.rowCount {
                let cursor = ReadCursorRecord(
                    userID: try result.requiredString(row: row, column: "user_id"),
                    threadID: try result.requiredString(row: row, column: "thread_id"),
                    readSeq: try result.requiredInt64(row: row, column: "read_seq"),
                    updatedAtMicros: try result.requiredInt64(row: row, column: "updated_at_us")
                )
                last = .readCursors(after: .init(threadID: cursor.threadID, userID: cursor.userID))
                items.append((.readCursor(cursor), last))
            }
            return result.rowCount < limit ? .audits(after: nil) : last
        case .audits(let after):
            let result = try self.transaction.query(
                """
                SELECT \(unsafeRaw: AuditEntry.columns) FROM chat.privacy_audit
                WHERE tenant_id = \(tenant) AND learner_id = \(self.learnerID) AND id <> \(self.auditID)
                  AND (\(after?.startedAtMicros)::int8 IS NULL
                       OR (started_at, id) > (timestamptz 'epoch' + \(after?.startedAtMicros)::int8 * interval '1 microsecond',
                                              \(after?.id)::uuid))
                ORDER BY started_at, id LIMIT \(limit)
                """
            )
            var last: ExportPosition = .audits(after: after)
            for row in 0..<result.rowCount {
                let entry = try AuditEntry(result, row: row)
                last = .audits(after: .init(startedAtMicros: entry.startedAtMicros, id: entry.id))
                items.append((.audit(entry), last))
            }
            return result.rowCount < limit ? .done : last
        case .done:
            return .done
        }
    }

    /// A thread's messages after `seq`, each followed by its edit history; the next thread when this one is done.
    private func messages(
        thread: String,
        after seq: Int64,
        limit: Int,
        into items: inout [(ExportItem, ExportPosition)]
    ) throws -> ExportPosition {
        let result = try self.transaction.query(
            """
            SELECT \(unsafeRaw: MessageRecord.columns) FROM chat.messages
            WHERE tenant_id = \(self.context.tenantID) AND thread_id = \(thread) AND learner_id = \(self.learnerID)
              AND seq > \(seq)
            ORDER BY seq LIMIT \(limit)
            """
        )
        var messages: [MessageRecord] = []
        messages.reserveCapacity(result.rowCount)
        for row in 0..<result.rowCount { messages.append(try MessageRecord(result, row: row)) }
        let edited = messages.filter { $0.editCount > 0 }.map(\.seq)
        let history = edited.isEmpty ? [:] : try self.history(thread: thread, seqs: edited)
        for message in messages {
            items.append((.message(message), .message(thread: thread, seq: message.seq)))
            if let revisions = history[message.seq] {
                items.append(
                    (.edits(threadID: thread, seq: message.seq, revisions), .edits(thread: thread, seq: message.seq))
                )
            }
        }
        guard messages.count == limit, let last = messages.last else { return .threads(after: thread) }
        return .edits(thread: thread, seq: last.seq)
    }

    /// The stored edit history of some messages of a thread, by sequence.
    private func history(thread: String, seqs: [Int64]) throws -> [Int64: [MessageRepository.Revision]] {
        let result = try self.transaction.query(
            """
            SELECT seq, revision, body, edited_by, edited_by_role,
                   (extract(epoch FROM edited_at) * 1000000)::int8 AS at_us
            FROM chat.message_edits
            WHERE tenant_id = \(self.context.tenantID) AND thread_id = \(thread)
              AND seq = ANY (\(seqs.map(String.init))::int8[])
            ORDER BY seq, revision
            """
        )
        var history: [Int64: [MessageRepository.Revision]] = [:]
        for row in 0..<result.rowCount {
            history[try result.requiredInt64(row: row, column: "seq"), default: []].append(
                MessageRepository.Revision(
                    revision: Int(try result.requiredInt64(row: row, column: "revision")),
                    body: try result.requiredString(row: row, column: "body"),
                    editedBy: try result.requiredString(row: row, column: "edited_by"),
                    editedByRole: try result.requiredString(row: row, column: "edited_by_role"),
                    editedAtMicros: try result.requiredInt64(row: row, column: "at_us")
                )
            )
        }
        return history
    }
}

/// The elements of a one-dimensional PostgreSQL text array of UUIDs (`{a,b}`): no quoting is needed for them.
func parseTextArray(_ text: String) -> [String] {
    let inner = text.dropFirst().dropLast()
    return inner.isEmpty ? [] : inner.split(separator: ",").map(String.init)
}

/// The chat events' numbers, for `type = ANY (...)`: what an erasure or retention marks erased, and what an export
/// lists among a learner's events.
let chatEventNumbers = EventType.chatEvents.map { String($0.rawValue) }.sorted()
