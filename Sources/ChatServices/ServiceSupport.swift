public import ChatAuth
internal import ChatDomain
internal import ChatProto
public import ChatRPC
public import ChatStore

extension StorageError: ChatStatusConvertible {
    /// What a caller sees: not found and out of scope are the same NOT_FOUND; lost connections are retryable
    /// UNAVAILABLE; anything else is INTERNAL. The database's own text never reaches a caller: an error that came
    /// from the server (it has a SQLSTATE) gets a message of ours, and `detail` is shown only when the repository
    /// wrote it (then it names the resource or the rule).
    public var rpcError: RPCError {
        let ours = self.sqlState == nil
        switch self.code {
        case .notFound: return RPCError(.notFound, ours ? "\(self.detail) not found" : "not found")
        case .conflict:
            return RPCError(.alreadyExists, ours ? self.detail : "conflicts with an existing record")
        case .permissionDenied:
            return RPCError(
                .permissionDenied,
                ours
                    ? "not allowed: \(self.detail)"
                    : "not allowed: the database refused a row outside the caller's tenant or learner scope"
            )
        case .failedPrecondition:
            return RPCError(.failedPrecondition, ours ? self.detail : "the record is not in a state that allows this")
        case .overloaded:
            return RPCError(
                .resourceExhausted,
                "chatd is shedding load: too many calls are waiting for the database; retry after the delay",
                details: [StatusDetail(detail: .retryInfo(RetryInfo(retryAfterMs: 250)))],
                notProcessed: self.hadNoEffect
            )
        case .admissionTimeout:
            return RPCError(
                .unavailable,
                "no database connection became free in time; retry",
                details: [StatusDetail(detail: .retryInfo(RetryInfo(retryAfterMs: 100)))],
                notProcessed: self.hadNoEffect
            )
        case .timedOut:
            return RPCError(.deadlineExceeded, "a database statement ran past the call's deadline and was cancelled")
        default:
            if self.isRetryable {
                return RPCError(
                    .unavailable,
                    "the database is unavailable; retry",
                    details: [StatusDetail(detail: .retryInfo(RetryInfo(retryAfterMs: 200)))]
                )
            }
            return RPCError(.internal, "internal storage error")
        }
    }
}

extension CallContext {
    /// The authenticated principal, or UNAUTHENTICATED (a protected method always has one after the interceptor).
    func requirePrincipal() throws -> Principal {
        guard let principal = self.principal else { throw RPCError(.unauthenticated, "no credentials") }
        return principal
    }
}

/// Request validation: INVALID_ARGUMENT naming the field and the limit.
enum Validate {
    static func uuid(_ value: String, _ field: String) throws -> String {
        let bytes = Array(value.utf8)
        let valid =
            bytes.count == 36
            && bytes.enumerated().allSatisfy { index, byte in
                [8, 13, 18, 23].contains(index)
                    ? byte == UInt8(ascii: "-")
                    : (0x30...0x39).contains(byte) || (0x61...0x66).contains(byte) || (0x41...0x46).contains(byte)
            }
        guard valid else { throw RPCError.invalidArgument(field: field, "must be a UUID") }
        return value.lowercased()
    }

    static func title(_ value: String) throws -> String {
        let count = value.unicodeScalars.count
        guard count >= 1, count <= 200 else { throw RPCError.invalidArgument(field: "title", "1 to 200 characters") }
        guard !value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw RPCError.invalidArgument(field: "title", "no control characters")
        }
        return value
    }

    static func body(_ value: String) throws -> String {
        let count = value.utf8.count
        guard count >= 1, count <= 4096 else { throw RPCError.invalidArgument(field: "body", "1 to 4096 bytes") }
        return value
    }

    /// SendMessage's message key: the body's `idempotency_key` when set (1 to 64 bytes), else one derived from the
    /// call header's key, so that a message has one key either way. The header key wins for retries: a retry with
    /// it replays the first attempt's whole outcome before the body key is looked at; the body key then dedupes
    /// the message itself (a client that sets only it gets the message back on a retry, as before).
    static func messageKey(body: String, header: [UInt8]) throws -> String {
        let count = body.utf8.count
        if count == 0 && !header.isEmpty {
            return "h:" + Base64URL.encode(SHA256Digest.hash(header))
        }
        guard count >= 1, count <= 64 else {
            throw RPCError.invalidArgument(
                field: "idempotency_key",
                "1 to 64 bytes, required unless the call header has an idempotency key"
            )
        }
        return body
    }

    static func pageSize(_ value: UInt32, field: String = "page.page_size") throws -> Int {
        guard value <= 200 else { throw RPCError.invalidArgument(field: field, "at most 200") }
        return value == 0 ? 50 : Int(value)
    }

    static func seq(_ value: UInt64, _ field: String) throws -> Int64 {
        guard value >= 1, value <= UInt64(Int64.max) else { throw RPCError.invalidArgument(field: field, "at least 1") }
        return Int64(value)
    }
}

/// The page tokens and resume cursors of this server, sealed (`TokenSealer`): each is bound to the caller's tenant
/// and user, to what it is for, and to the query it continues, so that a foreign, altered, truncated or stale-key token
/// is INVALID_ARGUMENT saying so, never a query with forged values.
public struct SealedTokens: Sendable {
    /// What a token is for: part of what it is bound to.
    enum Purpose: String, Sendable {
        case listThreads = "threads"
        case listMessages = "messages"
        case listLegalHolds = "holds"
        case listAuditRecords = "audit"
        case watchInbox = "inbox"
        case subscribeEvents = "events"
        case export = "export"
    }

    let sealer: TokenSealer

    /// What a token is bound to: the tenant, the caller and the query. Export resume tokens are the exception: an
    /// export belongs to its tenant's audit trail, and another privacy officer of the tenant (a batch job restarted
    /// under another identity) may resume it, so they are bound to the tenant and the learner only.
    private func binding(_ purpose: Purpose, _ principal: Principal, _ query: String) -> [String] {
        [principal.tenantID, purpose == .export ? "" : principal.userID, query]
    }

    /// Tokens sealed with `sealer`'s keys.
    public init(sealer: TokenSealer) {
        self.sealer = sealer
    }

    /// Seals `fields` (none containing `|`) for `principal`'s `purpose` and `query`.
    func seal(_ fields: [String], _ purpose: Purpose, for principal: Principal, query: String = "") -> String {
        self.sealBytes(Array(fields.joined(separator: "|").utf8), purpose, for: principal, query: query)
    }

    /// Opens a token sealed by `seal` with the same purpose, principal and query.
    ///
    /// - Throws: INVALID_ARGUMENT naming `field` and why (not ours, stale key, another caller or query, wrong shape).
    func open(
        _ token: String,
        _ purpose: Purpose,
        for principal: Principal,
        query: String = "",
        count: Int,
        field: String
    ) throws -> [String] {
        let payload = try self.openBytes(token, purpose, for: principal, query: query, field: field)
        guard let text = String(validating: payload, as: UTF8.self) else {
            throw RPCError.invalidArgument(field: field, "not a token of this kind")
        }
        let parts = text.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == count else { throw RPCError.invalidArgument(field: field, "not a token of this kind") }
        return parts
    }

    /// Opens a token's payload bytes.
    func openBytes(
        _ token: String,
        _ purpose: Purpose,
        for principal: Principal,
        query: String = "",
        field: String
    ) throws -> [UInt8] {
        do {
            return try self.sealer.open(
                token,
                purpose: purpose.rawValue,
                binding: self.binding(purpose, principal, query)
            )
        } catch {
            throw RPCError.invalidArgument(field: field, error.message)
        }
    }

    /// Seals raw bytes (the export token's own text form).
    func sealBytes(_ payload: [UInt8], _ purpose: Purpose, for principal: Principal, query: String = "") -> String {
        self.sealer.seal(payload, purpose: purpose.rawValue, binding: self.binding(purpose, principal, query))
    }
}

extension Validate {
    /// Microseconds since the epoch of a time PostgreSQL can hold and chatd writes: years 1 to 9999.
    static func micros(_ text: String, _ field: String) throws -> Int64 {
        guard let value = Int64(text) else { throw RPCError.invalidArgument(field: field, "not a token of this kind") }
        return try Self.micros(value, field)
    }

    static func micros(_ value: Int64, _ field: String) throws -> Int64 {
        guard (-62_135_596_800_000_000...253_402_300_799_999_999).contains(value) else {
            throw RPCError.invalidArgument(field: field, "a time from year 1 to 9999, in microseconds since the epoch")
        }
        return value
    }
}

extension Thread {
    init(_ record: ThreadRecord, unread: Int64) {
        self.init(
            id: record.id,
            learnerId: record.learnerID,
            title: record.title,
            state: ThreadState(rawValue: Int32(record.state)),
            lastSeq: UInt64(record.lastSeq),
            createdAtUs: record.createdAtMicros,
            lastActivityAtUs: record.lastActivityAtMicros,
            createdBy: Actor(userId: record.createdBy, role: Role(stored: record.createdByRole)),
            unreadCount: UInt64(max(0, unread)),
            updatedAtUs: record.updatedAtMicros,
            eventSeq: UInt64(record.eventSeq)
        )
    }
}

extension Message {
    init(_ record: MessageRecord) {
        self.init(
            id: record.id,
            threadId: record.threadID,
            seq: UInt64(record.seq),
            author: Actor(userId: record.authorID, role: Role(stored: record.authorRole)),
            body: record.body,
            createdAtUs: record.createdAtMicros,
            editedAtUs: record.editedAtMicros ?? 0,
            editCount: UInt32(record.editCount),
            deleted: record.deletedAtMicros.map {
                Tombstone(
                    deletedBy: Actor(
                        userId: record.deletedBy ?? "",
                        role: Role(stored: record.deletedByRole ?? "")
                    ),
                    deletedAtUs: $0
                )
            }
        )
    }
}
