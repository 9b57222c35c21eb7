internal import ChatDomain
internal import ChatProto

/// A tenant's retention policy.
public struct RetentionPolicyRecord: Sendable, Hashable {
    /// Messages older than this many days are removed; 0 keeps them forever.
    public var messageRetentionDays: Int
    public var updatedBy: String
    public var updatedByRole: String
    public var updatedAtMicros: Int64
}

extension PrivacyRepository {
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
            ), replaced AS (
                DELETE FROM chat.outbox o USING events e
                WHERE o.tenant_id = \(tenant) AND o.id = e.id
                RETURNING o.*
            ), payloads AS (
                INSERT INTO chat.outbox (\(unsafeRaw: outboxTombstoneColumns), payload, erased) OVERRIDING SYSTEM VALUE
                SELECT \(unsafeRaw: outboxTombstoneColumns), NULL, true FROM replaced
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

    /// Deletes up to `batchSize` outbox events older than `window`, of every tenant, through `chat.trim_outbox`
    /// (migration 7), and moves each tenant's horizon past them; returns how many. Runs without a tenant context.
    public func trimOutbox(window: Duration, batchSize: Int) async throws -> Int {
        let seconds = max(1, Int(window.components.seconds))
        return try await self.pool.withConnection { connection in
            let result = try connection.query("SELECT chat.trim_outbox(\(seconds), \(batchSize)) AS trimmed")
            return Int(try result.requiredInt64(row: 0, column: "trimmed"))
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
}
