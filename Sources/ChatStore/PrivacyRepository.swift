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
/// officer or tenant admin: the privacy tables' policies admit no one else). One file per job: PrivacyExport,
/// PrivacyErasure, LegalHolds, Retention and AuditTrail.
public struct PrivacyRepository: Sendable {
    let pool: PGPool

    /// Creates the repository over a pool.
    public init(pool: PGPool) {
        self.pool = pool
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

/// What an erased event keeps of its outbox row: its position (id, transaction id), type and ids. The outbox is
/// insert-only (migration 8): erasure and retention delete the row and insert these columns again, erased and
/// without payload, as the event's tombstone (SELECT FOR UPDATE needs the UPDATE privilege, which the application
/// role does not have on the outbox: the DELETE takes the row locks).
let outboxTombstoneColumns = "tenant_id, id, type, learner_id, thread_id, seq, event_seq, occurred_at, tx_id"
