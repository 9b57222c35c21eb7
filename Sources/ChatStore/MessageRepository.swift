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

    static let columns = """
        id::text AS id, thread_id::text AS thread_id, seq, learner_id::text AS learner_id, author_id, author_role, \
        body, idempotency_key, (extract(epoch FROM created_at) * 1000000)::int8 AS created_at_us, \
        (extract(epoch FROM edited_at) * 1000000)::int8 AS edited_at_us, edit_count, \
        (extract(epoch FROM deleted_at) * 1000000)::int8 AS deleted_at_us, deleted_by, deleted_by_role
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
        let statement = Self.sendStatement(context, threadID: threadID, body: body, idempotencyKey: idempotencyKey)
        var attempt = 0
        while true {
            attempt += 1
            do {
                let outcome = try await self.pool.tenantBatch(context, [statement]) { results in
                    let result = results[0]
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
            } catch {
                throw mapRLS(error)
            }
        }
    }

    /// The send statement: sequence allocation under the thread's row lock, the insert, and the idempotent lookup.
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
                SET last_seq = last_seq + 1, last_activity_at = clock_timestamp(), updated_at = clock_timestamp()
                WHERE tenant_id = \(context.tenantID) AND id = \(threadID) AND NOT EXISTS (SELECT 1 FROM existing)
                RETURNING tenant_id, id, learner_id, last_seq
            ), inserted AS (
                INSERT INTO chat.messages
                    (tenant_id, thread_id, seq, learner_id, author_id, author_role, body, idempotency_key, created_at)
                SELECT tenant_id, id, last_seq, learner_id, \(context.userID), \(context.role.rawValue), \(body),
                       \(idempotencyKey), clock_timestamp()
                FROM bumped
                RETURNING \(unsafeRaw: columns)
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

    /// Reads the messages of a thread with a sequence greater than `afterSeq`, oldest first.
    ///
    /// - Parameters:
    ///   - afterSeq: 0 for the beginning.
    ///   - limit: at most this many.
    public func list(
        _ context: TenantContext,
        threadID: String,
        afterSeq: Int64,
        limit: Int
    ) async throws -> [MessageRecord] {
        let statement: SQL = """
            SELECT \(unsafeRaw: MessageRecord.columns) FROM chat.messages
            WHERE tenant_id = \(context.tenantID) AND thread_id = \(threadID) AND seq > \(afterSeq)
            ORDER BY seq LIMIT \(limit)
            """
        return try await self.pool.tenantBatch(context, [statement]) { results in
            var records: [MessageRecord] = []
            records.reserveCapacity(results[0].rowCount)
            for row in 0..<results[0].rowCount {
                records.append(try MessageRecord(results[0], row: row))
            }
            return records
        }
    }
}
