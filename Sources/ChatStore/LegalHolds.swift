internal import ChatDomain
internal import ChatProto

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

extension PrivacyRepository {
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
}
