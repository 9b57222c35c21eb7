internal import ChatDomain
public import ChatProto

/// A position in the outbox's commit order: after the event with transaction id `txID` and id `id`.
///
/// Events are read only below the commit watermark (the oldest transaction still running), in `(tx_id, id)` order,
/// so an event whose transaction commits late is never skipped: it is not readable until every event before it is.
public struct OutboxCursor: Sendable, Hashable, Comparable {
    /// The transaction id (`xid8`) of the last event delivered.
    public var txID: UInt64
    /// The id of the last event delivered.
    public var id: Int64

    /// Before every event.
    public static let origin = OutboxCursor(txID: 0, id: 0)

    /// Creates a cursor.
    public init(txID: UInt64, id: Int64) {
        self.txID = txID
        self.id = id
    }

    /// The opaque text form given to clients: `e1.<tx>.<id>`.
    public var token: String { "e1.\(self.txID).\(self.id)" }

    /// Parses the text form; nil when it is not one.
    public init?(token: String) {
        guard token.utf8.count <= 48 else { return nil }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "e1",
            parts[1].utf8.allSatisfy({ (0x30...0x39).contains($0) }),
            parts[2].utf8.allSatisfy({ (0x30...0x39).contains($0) }),
            let tx = UInt64(parts[1]), let id = Int64(parts[2])
        else { return nil }
        self.init(txID: tx, id: id)
    }

    public static func < (lhs: OutboxCursor, rhs: OutboxCursor) -> Bool {
        (lhs.txID, lhs.id) < (rhs.txID, rhs.id)
    }
}

/// An outbox event as stored, with the message it is about when it was read for a watch stream.
public struct OutboxRecord: Sendable, Hashable {
    public var id: Int64
    public var txID: UInt64
    /// The event's type (the `type` column holds its number; a number this contract lacks is `.unrecognized`).
    public var type: EventType
    public var learnerID: String?
    public var threadID: String?
    /// Message events: the message's sequence.
    public var seq: Int64?
    /// Thread events: the event's position in the thread's event sequence.
    public var eventSeq: Int64?
    /// The JSON payload; nil after the learner's erasure.
    public var payloadJSON: String?
    public var erased: Bool
    public var occurredAtMicros: Int64
    /// The message as it is now (message events read with messages, when it still exists).
    public var message: MessageRecord?

    /// The position right after this event.
    public var cursor: OutboxCursor { OutboxCursor(txID: self.txID, id: self.id) }
}

/// The reads behind live delivery: a thread's changes after a position, and the outbox in commit order.
public struct LiveRepository: Sendable {
    let pool: PGPool

    /// Creates the repository over a pool.
    public init(pool: PGPool) {
        self.pool = pool
    }

    /// A thread and the messages whose newest event comes after a position.
    public struct ThreadChanges: Sendable {
        /// The thread; nil when it does not exist (deleted) or is outside the caller's scope.
        public var thread: ThreadRecord?
        /// Messages with `eventSeq` greater than the position, in `eventSeq` order, each as it is now.
        public var messages: [MessageRecord]
    }

    /// Reads the thread and the messages changed after `after` (at most `limit`), in one round trip.
    public func threadChanges(_ context: TenantContext, threadID: String, after: Int64, limit: Int) async throws
        -> ThreadChanges
    {
        let statements: [SQL] = [
            """
            SELECT \(unsafeRaw: ThreadRecord.columns) FROM chat.threads
            WHERE tenant_id = \(context.tenantID) AND id = \(threadID)
            """,
            """
            SELECT \(unsafeRaw: MessageRecord.columns) FROM chat.messages
            WHERE tenant_id = \(context.tenantID) AND thread_id = \(threadID) AND event_seq > \(after)
            ORDER BY event_seq LIMIT \(limit)
            """,
        ]
        return try await self.pool.tenantBatch(context, statements) { results in
            let thread = results[0].rowCount == 1 ? try ThreadRecord(results[0], row: 0) : nil
            var messages: [MessageRecord] = []
            messages.reserveCapacity(results[1].rowCount)
            for row in 0..<results[1].rowCount {
                messages.append(try MessageRecord(results[1], row: row))
            }
            return ThreadChanges(thread: thread, messages: messages)
        }
    }

    /// The newest event position of each of `threadIDs` that exists (a cheap check for missed notifications).
    public func threadPositions(_ context: TenantContext, threadIDs: [String]) async throws -> [String: Int64] {
        let statement: SQL = """
            SELECT id::text AS id, event_seq FROM chat.threads
            WHERE tenant_id = \(context.tenantID) AND id = ANY (\(threadIDs)::uuid[])
            """
        return try await self.pool.tenantBatch(context, [statement]) { results in
            var positions: [String: Int64] = [:]
            for row in 0..<results[0].rowCount {
                positions[try results[0].requiredString(row: row, column: "id")] =
                    try results[0].requiredInt64(row: row, column: "event_seq")
            }
            return positions
        }
    }

    /// The cursor of "now": every event readable so far is before it, every event still to commit after it.
    public func currentCursor(_ context: TenantContext) async throws -> OutboxCursor {
        try await self.pool.tenantBatch(context, [Self.watermarkStatement]) { results in
            try Self.watermark(results[0])
        }
    }

    static let watermarkStatement: SQL = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS xmin"

    /// (xmin, 0): the events of transactions below the oldest one still running are all in the past; those of xmin
    /// itself and later are still to come.
    static func watermark(_ result: PGResult) throws(StorageError) -> OutboxCursor {
        guard let xmin = UInt64(try result.requiredString(row: 0, column: "xmin")) else {
            throw StorageError(code: .unexpectedResult, detail: "unreadable transaction id")
        }
        return OutboxCursor(txID: xmin, id: 0)
    }

    /// The commit position of the tenant's newest trimmed event (migration 7), or nil when nothing was trimmed: a
    /// cursor before or at it may have lost events.
    public func outboxHorizon(_ context: TenantContext) async throws -> OutboxCursor? {
        let statement: SQL = """
            SELECT tx_id::text AS tx, id FROM chat.outbox_horizon WHERE tenant_id = \(context.tenantID)
            """
        return try await self.pool.tenantBatch(context, [statement]) { results -> OutboxCursor? in
            guard results[0].rowCount == 1 else { return nil }
            guard let tx = UInt64(try results[0].requiredString(row: 0, column: "tx")) else {
                throw StorageError(code: .unexpectedResult, detail: "unreadable transaction id")
            }
            return OutboxCursor(txID: tx, id: try results[0].requiredInt64(row: 0, column: "id"))
        }
    }

    /// The position of the tenant's newest readable event, or nil when there is none.
    public func newestCursor(_ context: TenantContext) async throws -> OutboxCursor? {
        let statement: SQL = """
            SELECT tx_id::text AS tx, id FROM chat.outbox
            WHERE tenant_id = \(context.tenantID) AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
            ORDER BY tx_id DESC, id DESC LIMIT 1
            """
        return try await self.pool.tenantBatch(context, [statement]) { results -> OutboxCursor? in
            guard results[0].rowCount == 1 else { return nil }
            guard let tx = UInt64(try results[0].requiredString(row: 0, column: "tx")) else {
                throw StorageError(code: .unexpectedResult, detail: "unreadable transaction id")
            }
            return OutboxCursor(txID: tx, id: try results[0].requiredInt64(row: 0, column: "id"))
        }
    }

    /// Reads outbox events after `cursor` in commit order, only below the commit watermark, and the watermark as
    /// it was before the read: when fewer than `limit` events come back, every event before the watermark has been
    /// seen, so a reader may move its cursor up to it.
    ///
    /// - Parameters:
    ///   - types: only these event types.
    ///   - learnerID: only this learner's events, when set.
    ///   - withMessages: attach each message event's message as it is now.
    public func outbox(
        _ context: TenantContext,
        after cursor: OutboxCursor,
        types: [EventType],
        learnerID: String?,
        withMessages: Bool,
        limit: Int
    ) async throws -> (watermark: OutboxCursor, records: [OutboxRecord]) {
        let typeList = types.map { String($0.rawValue) }
        let messageTypes = EventType.messageEvents.map { String($0.rawValue) }
        let statement: SQL = """
            SELECT o.id AS o_id, o.tx_id::text AS o_tx, o.type AS o_type, o.learner_id::text AS o_learner,
                   o.thread_id::text AS o_thread, o.seq AS o_seq, o.event_seq AS o_event_seq,
                   o.payload::text AS o_payload, o.erased AS o_erased,
                   (extract(epoch FROM o.occurred_at) * 1000000)::int8 AS o_at, m.*
            FROM chat.outbox o
            LEFT JOIN LATERAL (
                SELECT \(unsafeRaw: MessageRecord.columns) FROM chat.messages
                WHERE \(withMessages) AND o.type = ANY (\(messageTypes)::int2[])
                  AND tenant_id = o.tenant_id AND thread_id = o.thread_id AND seq = o.seq
            ) m ON true
            WHERE o.tenant_id = \(context.tenantID)
              AND (o.tenant_id, o.tx_id, o.id) > (\(context.tenantID)::uuid, \(String(cursor.txID))::xid8, \(cursor.id))
              AND o.tx_id < pg_snapshot_xmin(pg_current_snapshot())
              AND o.type = ANY (\(typeList)::int2[])
              AND (\(learnerID)::uuid IS NULL OR o.learner_id = \(learnerID)::uuid)
            ORDER BY o.tx_id, o.id
            LIMIT \(limit)
            """
        let statements: [SQL] = [Self.watermarkStatement, statement]
        return try await self.pool.tenantBatch(context, statements) { results in
            let watermark = try Self.watermark(results[0])
            let result = results[1]
            let messageID = try result.column(named: "id")
            var records: [OutboxRecord] = []
            records.reserveCapacity(result.rowCount)
            for row in 0..<result.rowCount {
                guard let tx = UInt64(try result.requiredString(row: row, column: "o_tx")) else {
                    throw StorageError(code: .unexpectedResult, detail: "unreadable transaction id")
                }
                records.append(
                    OutboxRecord(
                        id: try result.requiredInt64(row: row, column: "o_id"),
                        txID: tx,
                        type: EventType(rawValue: Int32(try result.requiredInt64(row: row, column: "o_type"))),
                        learnerID: try result.optionalString(row: row, column: "o_learner"),
                        threadID: try result.optionalString(row: row, column: "o_thread"),
                        seq: try result.optionalInt64(row: row, column: "o_seq"),
                        eventSeq: try result.optionalInt64(row: row, column: "o_event_seq"),
                        payloadJSON: try result.optionalString(row: row, column: "o_payload"),
                        erased: try result.bool(row: row, column: result.column(named: "o_erased")) ?? false,
                        occurredAtMicros: try result.requiredInt64(row: row, column: "o_at"),
                        message: result.isNull(row: row, column: messageID) ? nil : try MessageRecord(result, row: row)
                    )
                )
            }
            return (watermark, records)
        }
    }

    /// How long the commit watermark has stood still, in seconds: the age of the oldest transaction still running
    /// that holds a transaction id (every event committed after it is unreadable until it ends); 0 when none.
    /// Transactions of other database roles show no start time to the application role and count as 0.
    public func watermarkLagSeconds() async throws -> Double {
        let statement: SQL = """
            SELECT coalesce(extract(epoch FROM clock_timestamp() - min(xact_start)), 0)::float8::text AS lag
            FROM pg_stat_activity WHERE backend_xid = xid(pg_snapshot_xmin(pg_current_snapshot()))
            """
        return try await self.pool.withConnection { connection in
            let result = try connection.query(statement)
            return Double(try result.requiredString(row: 0, column: "lag")) ?? 0
        }
    }

    /// The tenant's events readable after `cursor` (below the watermark), counted up to `cap`.
    public func readableEvents(_ context: TenantContext, after cursor: OutboxCursor, cap: Int) async throws -> Int {
        let statement: SQL = """
            SELECT count(*) AS n FROM (
                SELECT 1 FROM chat.outbox
                WHERE tenant_id = \(context.tenantID)
                  AND (tenant_id, tx_id, id) > (\(context.tenantID)::uuid, \(String(cursor.txID))::xid8, \(cursor.id))
                  AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
                LIMIT \(cap)
            ) readable
            """
        return try await self.pool.tenantBatch(context, [statement]) { results in
            Int(try results[0].requiredInt64(row: 0, column: "n"))
        }
    }

    /// The threads among `ids` that exist and are in the caller's scope.
    public func threads(_ context: TenantContext, ids: [String]) async throws -> [String: ThreadRecord] {
        let statement: SQL = """
            SELECT \(unsafeRaw: ThreadRecord.columns) FROM chat.threads
            WHERE tenant_id = \(context.tenantID) AND id = ANY (\(ids)::uuid[])
            """
        return try await self.pool.tenantBatch(context, [statement]) { results in
            var threads: [String: ThreadRecord] = [:]
            for record in try ThreadRecord.all(results[0]) { threads[record.id] = record }
            return threads
        }
    }
}
