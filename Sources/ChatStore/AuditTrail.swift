internal import ChatDomain
internal import ChatProto

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

extension PrivacyRepository {
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
