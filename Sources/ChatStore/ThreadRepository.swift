internal import ChatDomain
internal import ChatProto

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
    /// The position of the thread's newest event (a message created, edited or deleted; the thread updated).
    public var eventSeq: Int64
    /// The position of the thread's newest update (0 when it was never updated).
    public var metaEventSeq: Int64

    static let columns = Self.columns(alias: "")

    /// The select list, with each column qualified by `alias` (e.g. `t.`) when joining.
    static func columns(alias p: String) -> String {
        """
        \(p)id::text AS id, \(p)learner_id::text AS learner_id, \(p)title AS title, \(p)state AS state, \
        \(p)last_seq AS last_seq, \(p)created_by AS created_by, \(p)created_by_role AS created_by_role, \
        (extract(epoch FROM \(p)created_at) * 1000000)::int8 AS created_at_us, \
        (extract(epoch FROM \(p)updated_at) * 1000000)::int8 AS updated_at_us, \
        (extract(epoch FROM \(p)last_activity_at) * 1000000)::int8 AS last_activity_at_us, \
        \(p)event_seq AS event_seq, \(p)meta_event_seq AS meta_event_seq
        """
    }

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
        self.eventSeq = try result.requiredInt64(row: row, column: "event_seq")
        self.metaEventSeq = try result.requiredInt64(row: row, column: "meta_event_seq")
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
            WITH created AS (
                INSERT INTO chat.threads (tenant_id, learner_id, title, created_by, created_by_role)
                VALUES (\(context.tenantID), \(learnerID), \(title), \(context.userID), \(context.role.claimName))
                RETURNING *
            ), event AS (
                INSERT INTO chat.outbox (tenant_id, type, learner_id, thread_id, payload)
                SELECT tenant_id, \(EventType.threadCreated), learner_id, id,
                       jsonb_build_object('title', title, 'created_by', created_by)
                FROM created
            )
            SELECT \(unsafeRaw: ThreadRecord.columns) FROM created
            """
        do {
            return try await self.pool.tenantBatch(context, [statement]) { results in
                try ThreadRecord(results[0], row: 0)
            }
        } catch {
            throw mapRLS(error)
        }
    }

    /// Reads one thread, with the caller's unread count.
    ///
    /// - Throws: `.notFound` when it does not exist or is outside the caller's tenant or scope.
    public func get(_ context: TenantContext, id: String) async throws -> (ThreadRecord, unread: Int64) {
        let statement: SQL = """
            SELECT \(unsafeRaw: ThreadRecord.columns(alias: "t.")), t.last_seq - coalesce(r.read_seq, 0) AS unread
            FROM chat.threads t
            LEFT JOIN chat.read_cursors r
                ON r.tenant_id = t.tenant_id AND r.thread_id = t.id AND r.user_id = \(context.userID)
            WHERE t.tenant_id = \(context.tenantID) AND t.id = \(id)
            """
        return try await self.pool.tenantBatch(context, [statement]) { results in
            guard results[0].rowCount == 1 else { throw StorageError(code: .notFound, detail: "thread") }
            return (try ThreadRecord(results[0], row: 0), try results[0].requiredInt64(row: 0, column: "unread"))
        }
    }

    /// Deletes a thread with its messages, edits and read cursors, and records the event.
    ///
    /// - Throws: `.notFound` when it does not exist or is outside the caller's tenant or scope.
    /// - Returns: the learner the thread was about.
    @discardableResult
    public func delete(_ context: TenantContext, id: String) async throws -> String {
        let statement: SQL = """
            WITH deleted AS (
                DELETE FROM chat.threads WHERE tenant_id = \(context.tenantID) AND id = \(id)
                RETURNING tenant_id, id, learner_id, last_seq, event_seq
            ), event AS (
                INSERT INTO chat.outbox (tenant_id, type, learner_id, thread_id, event_seq, payload)
                SELECT tenant_id, \(EventType.threadDeleted), learner_id, id, event_seq + 1,
                       jsonb_build_object('deleted_by', \(context.userID)::text, 'messages', last_seq)
                FROM deleted
            )
            SELECT learner_id::text AS learner_id FROM deleted
            """
        return try await self.pool.tenantBatch(context, [threadEventLock(id), statement]) { results in
            guard results[1].rowCount == 1 else { throw StorageError(code: .notFound, detail: "thread") }
            return try results[1].requiredString(row: 0, column: "learner_id")
        }
    }

    /// Changes a thread's title and/or state (1 active, 2 archived), and records the event; returns the thread with
    /// the caller's unread count, in the same round trip.
    ///
    /// - Throws: `.notFound` when it does not exist or is outside the caller's tenant or scope.
    public func update(_ context: TenantContext, id: String, title: String?, state: Int?) async throws
        -> (ThreadRecord, unread: Int64)
    {
        let statement: SQL = """
            WITH updated AS (
                UPDATE chat.threads
                SET title = coalesce(\(title), title), state = coalesce(\(state)::smallint, state), updated_at = now(),
                    event_seq = event_seq + 1, meta_event_seq = event_seq + 1
                WHERE tenant_id = \(context.tenantID) AND id = \(id)
                RETURNING *
            ), event AS (
                INSERT INTO chat.outbox (tenant_id, type, learner_id, thread_id, event_seq, payload)
                SELECT tenant_id, \(EventType.threadUpdated), learner_id, id, event_seq,
                       jsonb_build_object('title', title, 'state', state, 'updated_by', \(context.userID)::text)
                FROM updated
            )
            SELECT \(unsafeRaw: ThreadRecord.columns(alias: "u.")), u.last_seq - coalesce(r.read_seq, 0) AS unread
            FROM updated u
            LEFT JOIN chat.read_cursors r
                ON r.tenant_id = u.tenant_id AND r.thread_id = u.id AND r.user_id = \(context.userID)
            """
        return try await self.pool.tenantBatch(context, [threadEventLock(id), statement]) { results in
            guard results[1].rowCount == 1 else { throw StorageError(code: .notFound, detail: "thread") }
            return (try ThreadRecord(results[1], row: 0), try results[1].requiredInt64(row: 0, column: "unread"))
        }
    }

    /// A page of threads, newest activity first, each with the caller's unread count.
    public struct Page: Sendable {
        /// The threads and the caller's unread count of each.
        public var threads: [(ThreadRecord, unread: Int64)]
        /// Where the next page starts; nil on the last page.
        public var next: ThreadCursor?
    }

    /// Lists threads by activity (newest first) as of the walk's start, after `cursor`: a stable walk. Every thread
    /// that existed when the walk began (its first page) is returned exactly once, however many messages arrive
    /// while the client pages: a thread that had activity since the walk began keeps the place its activity as of
    /// the walk's start gives it (its newest message up to then), so it neither jumps ahead of the cursor (and is
    /// skipped) nor comes round again. Threads created after the walk began are not part of it.
    ///
    /// The walk starts a second before the first page's statement runs (so that a message whose transaction was
    /// still committing then cannot move a thread already placed); threads created in that second are at the top.
    /// This relies on a thread's `last_activity_at` being its creation or its newest message's `created_at`
    /// (`MessageRepository.sendStatement` keeps it so).
    ///
    /// - Parameters:
    ///   - learnerID: only this learner's threads, when set.
    ///   - state: only this state, when set.
    ///   - cursor: where the previous page ended (and when the walk started); nil for the first page.
    ///   - limit: at most this many.
    public func list(
        _ context: TenantContext,
        learnerID: String?,
        state: Int?,
        after cursor: ThreadCursor?,
        limit: Int
    ) async throws -> Page {
        let statement: SQL = """
            WITH walk AS (
                SELECT coalesce(
                    timestamptz 'epoch' + \(cursor?.walkStartMicros)::int8 * interval '1 microsecond',
                    clock_timestamp() - interval '1 second') AS t0
            ), placed AS (
                (SELECT t.*, t.last_activity_at AS walk_at
                 FROM chat.threads t, walk
                 WHERE t.tenant_id = \(context.tenantID) AND t.last_activity_at <= walk.t0
                   AND (\(learnerID)::uuid IS NULL OR t.learner_id = \(learnerID)::uuid)
                   AND (\(state)::smallint IS NULL OR t.state = \(state)::smallint)
                   AND (\(cursor?.activityMicros)::int8 IS NULL
                        OR (t.last_activity_at, t.id)
                           < (timestamptz 'epoch' + \(cursor?.activityMicros)::int8 * interval '1 microsecond',
                              \(cursor?.id)::uuid))
                 ORDER BY t.last_activity_at DESC, t.id DESC
                 LIMIT \(limit + 1))
                UNION ALL
                (SELECT t.*, greatest(t.created_at, coalesce(
                        (SELECT m.created_at FROM chat.messages m
                         WHERE m.tenant_id = t.tenant_id AND m.thread_id = t.id AND m.created_at <= walk.t0
                         ORDER BY m.seq DESC LIMIT 1),
                        t.created_at)) AS walk_at
                 FROM chat.threads t, walk
                 WHERE t.tenant_id = \(context.tenantID) AND t.last_activity_at > walk.t0
                   AND (\(learnerID)::uuid IS NULL OR t.learner_id = \(learnerID)::uuid)
                   AND (\(state)::smallint IS NULL OR t.state = \(state)::smallint))
            )
            SELECT \(unsafeRaw: ThreadRecord.columns(alias: "c.")), c.last_seq - coalesce(r.read_seq, 0) AS unread,
                   (extract(epoch FROM c.walk_at) * 1000000)::int8 AS walk_at_us,
                   (extract(epoch FROM walk.t0) * 1000000)::int8 AS walk_start_us
            FROM placed c
            CROSS JOIN walk
            LEFT JOIN chat.read_cursors r
                ON r.tenant_id = c.tenant_id AND r.thread_id = c.id AND r.user_id = \(context.userID)
            WHERE \(cursor?.activityMicros)::int8 IS NULL
               OR (c.walk_at, c.id)
                  < (timestamptz 'epoch' + \(cursor?.activityMicros)::int8 * interval '1 microsecond', \(cursor?.id)::uuid)
            ORDER BY c.walk_at DESC, c.id DESC
            LIMIT \(limit + 1)
            """
        return try await self.pool.tenantBatch(context, [statement]) { results in
            let result = results[0]
            var threads: [(ThreadRecord, unread: Int64)] = []
            for row in 0..<min(result.rowCount, limit) {
                threads.append(
                    (try ThreadRecord(result, row: row), try result.requiredInt64(row: row, column: "unread"))
                )
            }
            var next: ThreadCursor?
            if result.rowCount > limit, let last = threads.last {
                next = ThreadCursor(
                    walkStartMicros: try result.requiredInt64(row: limit - 1, column: "walk_start_us"),
                    activityMicros: try result.requiredInt64(row: limit - 1, column: "walk_at_us"),
                    id: last.0.id
                )
            }
            return Page(threads: threads, next: next)
        }
    }
}

/// Where a page of threads ends: when the walk started, and the last thread's place in it (its activity as of the
/// walk's start, and its id).
public struct ThreadCursor: Sendable, Hashable {
    /// When the walk started, microseconds since the epoch.
    public var walkStartMicros: Int64
    /// Microseconds since the epoch.
    public var activityMicros: Int64
    /// The thread id.
    public var id: String

    /// Creates a cursor.
    public init(walkStartMicros: Int64, activityMicros: Int64, id: String) {
        self.walkStartMicros = walkStartMicros
        self.activityMicros = activityMicros
        self.id = id
    }
}

/// The lock every transaction that records an event of a thread takes first, before it writes anything (so before
/// it has a transaction id): a transaction-scoped advisory lock on the thread. A transaction's id is assigned at its
/// first write, and a writer that waits for a row lock already has one; taking this lock first means that the
/// events of one thread get increasing transaction ids in commit order, so the outbox read in `(tx_id, id)` order
/// below the commit watermark keeps every thread's events in their order.
/// A call's idempotency key is inserted after this lock, not before it (`IdempotencyClaim.around`): its insert is a
/// write, and would give the transaction its id before it waits for the lock.
func threadEventLock(_ threadID: String) -> SQL {
    var lock: SQL = "SELECT pg_advisory_xact_lock(\(threadEventLockClass)::int4, hashtext(\(threadID)::uuid::text))"
    lock.takesLocksOnly = true
    return lock
}

/// The first key of the thread event locks: "chat" as a 32-bit integer.
let threadEventLockClass: Int32 = 0x6368_6174

/// Maps a row-level security refusal (42501) to `.permissionDenied`.
func mapRLS(_ error: any Error) -> any Error {
    if let error = error as? StorageError, error.sqlState == "42501" {
        return StorageError(code: .permissionDenied, sqlState: error.sqlState, detail: error.detail)
    }
    return error
}
