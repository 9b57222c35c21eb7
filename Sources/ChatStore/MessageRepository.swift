internal import ChatDomain
internal import ChatProto

/// A message as stored.
public struct MessageRecord: Sendable, Hashable {
    public var id: String
    public var threadID: String
    public var seq: Int64
    public var learnerID: String
    public var authorID: String
    public var authorRole: String
    public var body: String
    public var idempotencyKey: String
    public var createdAtMicros: Int64
    public var editedAtMicros: Int64?
    public var editCount: Int
    public var deletedAtMicros: Int64?
    public var deletedBy: String?
    public var deletedByRole: String?
    /// The position of the message's newest event in its thread's event sequence.
    public var eventSeq: Int64

    static let columns = """
        id::text AS id, thread_id::text AS thread_id, seq, learner_id::text AS learner_id, author_id, author_role, \
        body, idempotency_key, (extract(epoch FROM created_at) * 1000000)::int8 AS created_at_us, \
        (extract(epoch FROM edited_at) * 1000000)::int8 AS edited_at_us, edit_count, \
        (extract(epoch FROM deleted_at) * 1000000)::int8 AS deleted_at_us, deleted_by, deleted_by_role, \
        event_seq
        """

    init(_ result: PGResult, row: Int) throws(StorageError) {
        self.id = try result.requiredString(row: row, column: "id")
        self.threadID = try result.requiredString(row: row, column: "thread_id")
        self.seq = try result.requiredInt64(row: row, column: "seq")
        self.learnerID = try result.requiredString(row: row, column: "learner_id")
        self.authorID = try result.requiredString(row: row, column: "author_id")
        self.authorRole = try result.requiredString(row: row, column: "author_role")
        self.body = try result.requiredString(row: row, column: "body")
        self.idempotencyKey = try result.requiredString(row: row, column: "idempotency_key")
        self.createdAtMicros = try result.requiredInt64(row: row, column: "created_at_us")
        self.editedAtMicros = try result.optionalInt64(row: row, column: "edited_at_us")
        self.editCount = Int(try result.requiredInt64(row: row, column: "edit_count"))
        self.deletedAtMicros = try result.optionalInt64(row: row, column: "deleted_at_us")
        self.deletedBy = try result.optionalString(row: row, column: "deleted_by")
        self.deletedByRole = try result.optionalString(row: row, column: "deleted_by_role")
        self.eventSeq = try result.requiredInt64(row: row, column: "event_seq")
    }
}

/// The outcome of a send.
public struct SendOutcome: Sendable, Hashable {
    /// The message: the new one, or the original when the idempotency key was seen before.
    public var message: MessageRecord
    /// False when this send was a retry that returned the original.
    public var created: Bool
}

/// Messages, read and written under the caller's tenant context.
public struct MessageRepository: Sendable {
    let pool: PGPool

    /// Creates the repository over a pool.
    public init(pool: PGPool) {
        self.pool = pool
    }

    /// Sends a message: allocates the next sequence number under the thread's row lock and inserts the message, in
    /// one statement, one round trip and one transaction. The lock is held to commit, so within a thread commit
    /// order is sequence order, and a rollback undoes the counter (no gap). `created_at` is read under the lock
    /// (`clock_timestamp()`), so it also follows the sequence.
    ///
    /// Idempotent per (tenant, author, key): a retry returns the original message. Two concurrent first attempts
    /// race on the unique key; the loser's transaction rolls back (its sequence with it) and is retried once,
    /// which then finds the winner's message.
    ///
    /// - Throws: `.notFound` when the thread does not exist or is outside the caller's scope; `.conflict` when the
    ///   key was used before for a different body or thread.
    public func send(
        _ context: TenantContext,
        threadID: String,
        body: String,
        idempotencyKey: String
    ) async throws -> SendOutcome {
        let statements = [
            threadEventLock(threadID),
            Self.sendStatement(context, threadID: threadID, body: body, idempotencyKey: idempotencyKey),
        ]
        var attempt = 0
        while true {
            attempt += 1
            do {
                let outcome = try await self.pool.tenantBatch(context, statements) { results in
                    let result = results[1]
                    guard result.rowCount == 1 else { throw StorageError(code: .notFound, detail: "thread") }
                    return SendOutcome(
                        message: try MessageRecord(result, row: 0),
                        created: try result.bool(row: 0, column: result.column(named: "created")) ?? false
                    )
                }
                if !outcome.created && (outcome.message.body != body || outcome.message.threadID != threadID) {
                    throw StorageError(
                        code: .conflict,
                        detail: "idempotency key reused with a different message"
                    )
                }
                return outcome
            } catch let error as StorageError where error.sqlState == "23505" && attempt == 1 {
                continue
            } catch let error as StorageError where error.sqlState == "23505" {
                // The original exists but is no longer visible to its author (the scope changed): still a key reuse.
                throw StorageError(code: .conflict, detail: "idempotency key already used")
            } catch {
                throw mapRLS(error)
            }
        }
    }

    /// The send statement: sequence allocation under the thread's row lock, the insert, and the idempotent lookup.
    /// The message's `created_at` is the thread's new `last_activity_at` (which never moves back), so a thread's
    /// activity is always its creation or its newest message: the stable walk of `ThreadRepository.list` needs it.
    static func sendStatement(
        _ context: TenantContext,
        threadID: String,
        body: String,
        idempotencyKey: String
    ) -> SQL {
        let columns = MessageRecord.columns
        let statement: SQL = """
            WITH existing AS (
                SELECT \(unsafeRaw: columns) FROM chat.messages
                WHERE tenant_id = \(context.tenantID) AND author_id = \(context.userID)
                  AND idempotency_key = \(idempotencyKey)
            ), bumped AS (
                UPDATE chat.threads
                SET last_seq = last_seq + 1, event_seq = event_seq + 1,
                    last_activity_at = greatest(last_activity_at, clock_timestamp()), updated_at = clock_timestamp()
                WHERE tenant_id = \(context.tenantID) AND id = \(threadID) AND NOT EXISTS (SELECT 1 FROM existing)
                RETURNING tenant_id, id, learner_id, last_seq, event_seq, last_activity_at
            ), inserted AS (
                INSERT INTO chat.messages
                    (tenant_id, thread_id, seq, learner_id, author_id, author_role, body, idempotency_key, created_at,
                     event_seq)
                SELECT tenant_id, id, last_seq, learner_id, \(context.userID), \(context.role.claimName), \(body),
                       \(idempotencyKey), last_activity_at, event_seq
                FROM bumped
                RETURNING \(unsafeRaw: columns)
            ), event AS (
                INSERT INTO chat.outbox (tenant_id, type, learner_id, thread_id, seq, event_seq, payload)
                SELECT \(context.tenantID)::uuid, \(EventType.messageCreated), learner_id::uuid,
                       thread_id::uuid, seq, event_seq,
                       jsonb_build_object('message_id', id, 'author_id', author_id, 'body', body)
                FROM inserted
            )
            SELECT true AS created, * FROM inserted
            UNION ALL
            SELECT false AS created, * FROM existing
            """
        return statement
    }

    /// Reads one message.
    ///
    /// - Throws: `.notFound` when it does not exist or is outside the caller's tenant or scope.
    public func get(_ context: TenantContext, threadID: String, seq: Int64) async throws -> MessageRecord {
        let statement: SQL = """
            SELECT \(unsafeRaw: MessageRecord.columns) FROM chat.messages
            WHERE tenant_id = \(context.tenantID) AND thread_id = \(threadID) AND seq = \(seq)
            """
        return try await self.pool.tenantBatch(context, [statement]) { results in
            guard results[0].rowCount == 1 else { throw StorageError(code: .notFound, detail: "message") }
            return try MessageRecord(results[0], row: 0)
        }
    }

    /// Which messages a page holds.
    public enum Bound: Sendable, Hashable {
        /// Oldest first, strictly after this sequence.
        case after(Int64)
        /// Newest first, strictly before this sequence.
        case before(Int64)
        /// Newest first, from the head.
        case latest
    }

    /// Reads a page of a thread's messages.
    ///
    /// - Throws: `.notFound` when the thread does not exist or is outside the caller's tenant or scope.
    public func list(_ context: TenantContext, threadID: String, bound: Bound, limit: Int) async throws
        -> [MessageRecord]
    {
        let (after, before, ascending): (Int64?, Int64?, Bool) =
            switch bound {
            case .after(let seq): (seq, nil, true)
            case .before(let seq): (nil, seq, false)
            case .latest: (nil, nil, false)
            }
        let order = ascending ? "ASC" : "DESC"
        let statements: [SQL] = [
            "SELECT 1 FROM chat.threads WHERE tenant_id = \(context.tenantID) AND id = \(threadID)",
            """
            SELECT \(unsafeRaw: MessageRecord.columns) FROM chat.messages
            WHERE tenant_id = \(context.tenantID) AND thread_id = \(threadID)
              AND (\(after)::int8 IS NULL OR seq > \(after)::int8)
              AND (\(before)::int8 IS NULL OR seq < \(before)::int8)
            ORDER BY seq \(unsafeRaw: order) LIMIT \(limit)
            """,
        ]
        return try await self.pool.tenantBatch(context, statements) { results in
            guard results[0].rowCount == 1 else { throw StorageError(code: .notFound, detail: "thread") }
            var records: [MessageRecord] = []
            records.reserveCapacity(results[1].rowCount)
            for row in 0..<results[1].rowCount {
                records.append(try MessageRecord(results[1], row: row))
            }
            return records
        }
    }

    /// Whether the message exists for the caller and is deleted: read after an edit or a delete that changed
    /// nothing, to say why.
    static func stateStatement(_ context: TenantContext, threadID: String, seq: Int64) -> SQL {
        """
        SELECT deleted_at IS NOT NULL AS deleted FROM chat.messages
        WHERE tenant_id = \(context.tenantID) AND thread_id = \(threadID) AND seq = \(seq)
        """
    }

    /// The CTE `bumped` that gives the `target` message's change the thread's next event position.
    static let nextEventPosition = """
        bumped AS (
            UPDATE chat.threads t SET event_seq = t.event_seq + 1
            FROM target WHERE t.tenant_id = target.tenant_id AND t.id = target.thread_id
            RETURNING t.event_seq
        )
        """

    /// Why an edit or a delete did not happen.
    static func explainMissing(_ result: PGResult) throws -> StorageError {
        guard result.rowCount == 1 else { return StorageError(code: .notFound, detail: "message") }
        if try result.bool(row: 0, column: result.column(named: "deleted")) == true {
            return StorageError(code: .failedPrecondition, detail: "the message was deleted")
        }
        return StorageError(code: .permissionDenied, detail: "only the author may change a message")
    }

    /// Replaces a message's body. The first edit stores the original as revision 1; every edit stores its text as
    /// the next revision. Only the author may edit; a deleted message cannot be edited.
    public func edit(_ context: TenantContext, threadID: String, seq: Int64, body: String) async throws
        -> MessageRecord
    {
        let statements: [SQL] = [
            threadEventLock(threadID),
            """
            WITH target AS (
                SELECT * FROM chat.messages
                WHERE tenant_id = \(context.tenantID) AND thread_id = \(threadID) AND seq = \(seq)
                  AND deleted_at IS NULL AND author_id = \(context.userID)
                FOR UPDATE
            ), original AS (
                INSERT INTO chat.message_edits
                    (tenant_id, thread_id, seq, revision, learner_id, body, edited_by, edited_by_role, edited_at)
                SELECT tenant_id, thread_id, seq, 1, learner_id, body, author_id, author_role, created_at
                FROM target WHERE edit_count = 0
            ), revision AS (
                INSERT INTO chat.message_edits
                    (tenant_id, thread_id, seq, revision, learner_id, body, edited_by, edited_by_role, edited_at)
                SELECT tenant_id, thread_id, seq, edit_count + 2, learner_id, \(body), \(context.userID),
                       \(context.role.claimName), clock_timestamp()
                FROM target
            ), \(unsafeRaw: Self.nextEventPosition), updated AS (
                UPDATE chat.messages m SET body = \(body), edited_at = clock_timestamp(), edit_count = m.edit_count + 1,
                    event_seq = bumped.event_seq
                FROM target, bumped
                WHERE m.tenant_id = target.tenant_id AND m.thread_id = target.thread_id AND m.seq = target.seq
                RETURNING m.*
            ), event AS (
                INSERT INTO chat.outbox (tenant_id, type, learner_id, thread_id, seq, event_seq, payload)
                SELECT tenant_id, \(EventType.messageEdited), learner_id, thread_id, seq, event_seq,
                       jsonb_build_object('message_id', id, 'edited_by', \(context.userID)::text, 'body', body)
                FROM updated
            )
            SELECT \(unsafeRaw: MessageRecord.columns) FROM updated
            """,
            Self.stateStatement(context, threadID: threadID, seq: seq),
        ]
        return try await self.pool.tenantBatch(context, statements) { results in
            guard results[1].rowCount == 1 else { throw try Self.explainMissing(results[2]) }
            return try MessageRecord(results[1], row: 0)
        }
    }

    /// Deletes a message: a tombstone that keeps its sequence and says who deleted it; the body and the edit
    /// history are removed. The author may delete; so may a moderator when `moderator` is true.
    public func delete(_ context: TenantContext, threadID: String, seq: Int64, moderator: Bool) async throws
        -> MessageRecord
    {
        let statements: [SQL] = [
            threadEventLock(threadID),
            """
            WITH target AS (
                SELECT tenant_id, thread_id, seq FROM chat.messages
                WHERE tenant_id = \(context.tenantID) AND thread_id = \(threadID) AND seq = \(seq)
                  AND deleted_at IS NULL AND (author_id = \(context.userID) OR \(moderator))
                FOR UPDATE
            ), \(unsafeRaw: Self.nextEventPosition), updated AS (
                UPDATE chat.messages m
                SET body = '', deleted_at = clock_timestamp(), deleted_by = \(context.userID),
                    deleted_by_role = \(context.role.claimName), event_seq = bumped.event_seq
                FROM target, bumped
                WHERE m.tenant_id = target.tenant_id AND m.thread_id = target.thread_id AND m.seq = target.seq
                RETURNING m.*
            ), history AS (
                DELETE FROM chat.message_edits e USING updated
                WHERE e.tenant_id = updated.tenant_id AND e.thread_id = updated.thread_id AND e.seq = updated.seq
            ), event AS (
                INSERT INTO chat.outbox (tenant_id, type, learner_id, thread_id, seq, event_seq, payload)
                SELECT tenant_id, \(EventType.messageDeleted), learner_id, thread_id, seq, event_seq,
                       jsonb_build_object('message_id', id, 'deleted_by', \(context.userID)::text)
                FROM updated
            )
            SELECT \(unsafeRaw: MessageRecord.columns) FROM updated
            """,
            Self.stateStatement(context, threadID: threadID, seq: seq),
        ]
        return try await self.pool.tenantBatch(context, statements) { results in
            guard results[1].rowCount == 1 else { throw try Self.explainMissing(results[2]) }
            return try MessageRecord(results[1], row: 0)
        }
    }

    /// One revision of a message.
    public struct Revision: Sendable, Hashable {
        public var revision: Int
        public var body: String
        public var editedBy: String
        public var editedByRole: String
        public var editedAtMicros: Int64
    }

    /// Every revision of a message, oldest first; a message never edited has its current text as revision 1.
    public func edits(_ context: TenantContext, threadID: String, seq: Int64) async throws -> [Revision] {
        let statements: [SQL] = [
            """
            SELECT body, author_id, author_role, (extract(epoch FROM created_at) * 1000000)::int8 AS at_us,
                   edit_count, deleted_at IS NOT NULL AS deleted
            FROM chat.messages WHERE tenant_id = \(context.tenantID) AND thread_id = \(threadID) AND seq = \(seq)
            """,
            """
            SELECT revision, body, edited_by, edited_by_role, (extract(epoch FROM edited_at) * 1000000)::int8 AS at_us
            FROM chat.message_edits
            WHERE tenant_id = \(context.tenantID) AND thread_id = \(threadID) AND seq = \(seq) ORDER BY revision
            """,
        ]
        return try await self.pool.tenantBatch(context, statements) { results in
            let message = results[0]
            guard message.rowCount == 1 else { throw StorageError(code: .notFound, detail: "message") }
            let history = results[1]
            if history.rowCount == 0 {
                if try message.bool(row: 0, column: message.column(named: "deleted")) == true { return [] }
                return [
                    Revision(
                        revision: 1,
                        body: try message.requiredString(row: 0, column: "body"),
                        editedBy: try message.requiredString(row: 0, column: "author_id"),
                        editedByRole: try message.requiredString(row: 0, column: "author_role"),
                        editedAtMicros: try message.requiredInt64(row: 0, column: "at_us")
                    )
                ]
            }
            return try (0..<history.rowCount).map { row in
                Revision(
                    revision: Int(try history.requiredInt64(row: row, column: "revision")),
                    body: try history.requiredString(row: row, column: "body"),
                    editedBy: try history.requiredString(row: row, column: "edited_by"),
                    editedByRole: try history.requiredString(row: row, column: "edited_by_role"),
                    editedAtMicros: try history.requiredInt64(row: row, column: "at_us")
                )
            }
        }
    }

    /// Moves the caller's read cursor forward (never back; clamped to the head).
    ///
    /// - Returns: the cursor after the call and the unread count.
    public func markRead(_ context: TenantContext, threadID: String, upTo seq: Int64) async throws
        -> (readSeq: Int64, unread: Int64)
    {
        let statement: SQL = """
            WITH thread AS (
                SELECT tenant_id, id, learner_id, last_seq FROM chat.threads
                WHERE tenant_id = \(context.tenantID) AND id = \(threadID)
            ), cursor AS (
                INSERT INTO chat.read_cursors (tenant_id, user_id, thread_id, learner_id, read_seq)
                SELECT tenant_id, \(context.userID), id, learner_id, least(\(seq)::int8, last_seq) FROM thread
                ON CONFLICT (tenant_id, user_id, thread_id) DO UPDATE
                SET read_seq = greatest(chat.read_cursors.read_seq, excluded.read_seq), updated_at = now()
                RETURNING read_seq
            )
            SELECT cursor.read_seq, thread.last_seq - cursor.read_seq AS unread FROM cursor, thread
            """
        return try await self.pool.tenantBatch(context, [statement]) { results in
            guard results[0].rowCount == 1 else { throw StorageError(code: .notFound, detail: "thread") }
            return (
                try results[0].requiredInt64(row: 0, column: "read_seq"),
                try results[0].requiredInt64(row: 0, column: "unread")
            )
        }
    }
}
