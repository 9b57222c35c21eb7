internal import ChatDomain
internal import ChatProto

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

extension PrivacyRepository {
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
