/// A thread as stored.
public struct ThreadRecord: Sendable, Hashable {
    public var id: String
    public var learnerID: String
    public var title: String
    /// 1 = active, 2 = archived (the contract's `ThreadState` numbers).
    public var state: Int
    public var lastSeq: Int64
    public var createdBy: String
    public var createdByRole: String
    public var createdAtMicros: Int64
    public var updatedAtMicros: Int64
    public var lastActivityAtMicros: Int64

    static let columns = """
        id::text AS id, learner_id::text AS learner_id, title, state, last_seq, created_by, created_by_role, \
        (extract(epoch FROM created_at) * 1000000)::int8 AS created_at_us, \
        (extract(epoch FROM updated_at) * 1000000)::int8 AS updated_at_us, \
        (extract(epoch FROM last_activity_at) * 1000000)::int8 AS last_activity_at_us
        """

    init(_ result: PGResult, row: Int) throws(StorageError) {
        self.id = try result.requiredString(row: row, column: "id")
        self.learnerID = try result.requiredString(row: row, column: "learner_id")
        self.title = try result.requiredString(row: row, column: "title")
        self.state = Int(try result.requiredInt64(row: row, column: "state"))
        self.lastSeq = try result.requiredInt64(row: row, column: "last_seq")
        self.createdBy = try result.requiredString(row: row, column: "created_by")
        self.createdByRole = try result.requiredString(row: row, column: "created_by_role")
        self.createdAtMicros = try result.requiredInt64(row: row, column: "created_at_us")
        self.updatedAtMicros = try result.requiredInt64(row: row, column: "updated_at_us")
        self.lastActivityAtMicros = try result.requiredInt64(row: row, column: "last_activity_at_us")
    }

    static func all(_ result: PGResult) throws(StorageError) -> [ThreadRecord] {
        var records: [ThreadRecord] = []
        records.reserveCapacity(result.rowCount)
        for row in 0..<result.rowCount {
            records.append(try ThreadRecord(result, row: row))
        }
        return records
    }
}

/// Threads, read and written under the caller's tenant context. Every statement names the tenant explicitly
/// (one shard under Citus) and row-level security checks it again.
public struct ThreadRepository: Sendable {
    let pool: PGPool

    /// Creates the repository over a pool.
    public init(pool: PGPool) {
        self.pool = pool
    }

    /// Creates a thread about a learner.
    ///
    /// - Throws: `.permissionDenied` when the learner is outside the caller's scope.
    public func create(_ context: TenantContext, learnerID: String, title: String) async throws -> ThreadRecord {
        let statement: SQL = """
            INSERT INTO chat.threads (tenant_id, learner_id, title, created_by, created_by_role)
            VALUES (\(context.tenantID), \(learnerID), \(title), \(context.userID), \(context.role.rawValue))
            RETURNING \(unsafeRaw: ThreadRecord.columns)
            """
        do {
            return try await self.pool.tenantBatch(context, [statement]) { results in
                try ThreadRecord(results[0], row: 0)
            }
        } catch {
            throw mapRLS(error)
        }
    }

    /// Reads one thread.
    ///
    /// - Throws: `.notFound` when it does not exist or is outside the caller's tenant or scope.
    public func get(_ context: TenantContext, id: String) async throws -> ThreadRecord {
        let statement: SQL = """
            SELECT \(unsafeRaw: ThreadRecord.columns) FROM chat.threads
            WHERE tenant_id = \(context.tenantID) AND id = \(id)
            """
        return try await self.pool.tenantBatch(context, [statement]) { results in
            guard results[0].rowCount == 1 else { throw StorageError(code: .notFound, detail: "thread") }
            return try ThreadRecord(results[0], row: 0)
        }
    }

    /// Deletes a thread with its messages, edits and read cursors.
    ///
    /// - Throws: `.notFound` when it does not exist or is outside the caller's tenant or scope.
    public func delete(_ context: TenantContext, id: String) async throws {
        let statement: SQL = "DELETE FROM chat.threads WHERE tenant_id = \(context.tenantID) AND id = \(id)"
        try await self.pool.tenantBatch(context, [statement]) { results in
            guard results[0].affectedRows == 1 else { throw StorageError(code: .notFound, detail: "thread") }
        }
    }
}

/// Maps a row-level security refusal (42501) to `.permissionDenied`.
func mapRLS(_ error: any Error) -> any Error {
    if let error = error as? StorageError, error.sqlState == "42501" {
        return StorageError(code: .permissionDenied, sqlState: error.sqlState, detail: error.detail)
    }
    return error
}
