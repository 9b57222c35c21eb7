public import ChatAuth
internal import ChatDomain
public import ChatProto
public import ChatRPC
public import ChatStore

/// `CallHeader.idempotency_key` for every unary mutation: a retry with the same key and the same request within the
/// window returns the first attempt's outcome, status included, without running again; the same key with another
/// request (another method, or other fields) is ALREADY_EXISTS. Keys belong to their caller (tenant and user) and are
/// kept in PostgreSQL under row-level security.
///
/// The first attempt's key row is inserted by its mutation's own transaction, which commits only with the outcome
/// in that row (`IdempotencyClaim`): so an attempt either took effect and stored its outcome, or did neither. When
/// the handler refuses after its transaction ran (a legal hold blocks an erasure), that transaction commits with the
/// refusal as the outcome, as it would have without a key. A failure before any effect that a retry would only
/// repeat (INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS,
/// PERMISSION_DENIED, FAILED_PRECONDITION, OUT_OF_RANGE) is stored too; one a retry may cure (UNAVAILABLE,
/// DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, CANCELLED, INTERNAL) is not, so the retry runs.
public struct Idempotency: Sendable {
    /// How long a key's outcome is kept.
    public let window: Duration
    let pool: PGPool

    /// chatd's default window: 24 hours.
    public static let defaultWindow = Duration.seconds(24 * 3600)

    /// Keys stored in `pool`'s database, kept for `window`.
    public init(pool: PGPool, window: Duration = Self.defaultWindow) {
        precondition(window >= .seconds(1), "the idempotency window is at least a second")
        self.pool = pool
        self.window = window
    }

    /// The statuses a retry would only repeat: stored as the key's outcome.
    static let finalCodes: Set<StatusCode> = [
        .invalidArgument, .notFound, .alreadyExists, .permissionDenied, .failedPrecondition, .outOfRange,
    ]

    /// Runs `handler` under the call's idempotency key, when it has one.
    func run<Request: ProtoMessage, Response: ProtoMessage>(
        _ method: ChatMethod<Request, Response>,
        _ request: Request,
        _ context: CallContext,
        _ handler: @Sendable (Request, CallContext) async throws -> Response
    ) async throws -> Response {
        let key = context.header.idempotencyKey
        guard !key.isEmpty, let principal = context.principal else { return try await handler(request, context) }
        let tenant = TenantContext(principal)
        let hash = SHA256Digest.hash(Array(method.path.utf8) + [0] + (try request.serializedBytes()))
        if let stored = try await self.lookup(tenant, key) {
            guard stored.status != nil else {
                return try await self.awaitStored(tenant, key, method: method.path, hash: hash)
            }
            return try Self.replay(stored, method: method.path, hash: hash)
        }
        let claim = IdempotencyClaim(key: key, method: method.path, requestHash: hash, window: self.window)
        let response: Response
        do {
            response = try await IdempotencyClaim.$current.withValue(claim) { try await handler(request, context) }
        } catch {
            let final = (error as? any ChatStatusConvertible)?.rpcError.callStatus
            if let final, Self.finalCodes.contains(final.code), claim.isHolding {
                // The handler decided after its transaction ran (a legal hold refused an erasure, say): what that
                // transaction did (the refusal's audit record) commits, with this status as the key's outcome.
                try await Self.commit(claim, status: try final.serializedBytes(), response: nil)
                throw error
            }
            await claim.rollback()
            if claim.conflicted {
                // Another attempt with the key committed while this one waited for it: its outcome is the answer.
                return try await self.awaitStored(tenant, key, method: method.path, hash: hash)
            }
            if let final, Self.finalCodes.contains(final.code) {
                try? await self.store(tenant, claim, status: final, response: nil)
            }
            throw error
        }
        let ok = try CallStatus(code: .ok).serializedBytes()
        let bytes = try response.serializedBytes()
        if claim.isHolding {
            try await Self.commit(claim, status: ok, response: bytes)
        } else {
            // The handler wrote nothing through a tenant transaction: store the outcome on its own.
            try await self.store(tenant, claim, status: CallStatus(code: .ok), response: bytes)
        }
        return response
    }

    /// Commits the claim's transaction with the outcome; a failure there leaves the outcome unknown.
    static func commit(_ claim: IdempotencyClaim, status: [UInt8], response: [UInt8]?) async throws {
        do {
            try await claim.commit(status: status, response: response)
        } catch {
            throw RPCError(
                .unavailable,
                "the outcome of this call is unknown (the database went away at commit); retry with the same "
                    + "idempotency key",
                details: [StatusDetail(detail: .retryInfo(RetryInfo(retryAfterMs: 200)))]
            )
        }
    }

    /// A stored outcome.
    struct Stored: Sendable {
        var method: String
        var hash: [UInt8]
        /// The encoded `CallStatus` (empty for OK); nil while the first attempt has not stored it.
        var status: [UInt8]?
        var response: [UInt8]?
    }

    static func replay<Response: ProtoMessage>(_ stored: Stored, method: String, hash: [UInt8]) throws -> Response {
        guard stored.method == method, stored.hash == hash else {
            throw RPCError(
                .alreadyExists,
                "idempotency_key: already used for a different request (\(stored.method == method ? "other fields" : stored.method)) "
                    + "within the idempotency window",
                details: [
                    StatusDetail(
                        detail: .fieldViolation(
                            FieldViolation(
                                field: "idempotency_key",
                                description: "already used for a different request"
                            )
                        )
                    )
                ]
            )
        }
        let status = try CallStatus(serializedBytes: stored.status ?? [])
        guard status.code == .ok else { throw RPCError(status: status) }
        return try Response(serializedBytes: stored.response ?? [])
    }

    /// The key's stored outcome, waiting briefly for a concurrent attempt that holds the key to store its own.
    private func awaitStored<Response: ProtoMessage>(
        _ tenant: TenantContext,
        _ key: [UInt8],
        method: String,
        hash: [UInt8]
    ) async throws -> Response {
        for _ in 0..<50 {
            if let stored = try await self.lookup(tenant, key), stored.status != nil {
                return try Self.replay(stored, method: method, hash: hash)
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw RPCError(
            .aborted,
            "another attempt with this idempotency key has not finished; retry",
            details: [StatusDetail(detail: .retryInfo(RetryInfo(retryAfterMs: 500)))]
        )
    }

    private func lookup(_ tenant: TenantContext, _ key: [UInt8]) async throws -> Stored? {
        let statement: SQL = """
            SELECT method, encode(request_hash, 'hex') AS hash, encode(status, 'hex') AS status,
                   encode(response, 'hex') AS response
            FROM chat.idempotency_keys
            WHERE tenant_id = \(tenant.tenantID) AND user_id = \(tenant.userID)
              AND key = decode(\(Hex.encode(key)), 'hex') AND expires_at > now()
            """
        return try await self.pool.tenantBatch(tenant, [statement]) { results in
            let result = results[0]
            guard result.rowCount == 1 else { return nil }
            return Stored(
                method: try result.requiredString(row: 0, column: "method"),
                hash: Self.bytes(try result.requiredString(row: 0, column: "hash")),
                status: try result.optionalString(row: 0, column: "status").map(Self.bytes),
                response: try result.optionalString(row: 0, column: "response").map(Self.bytes)
            )
        }
    }

    /// Stores an outcome that has no transaction of its own (a failure that changed nothing).
    private func store(
        _ tenant: TenantContext,
        _ claim: IdempotencyClaim,
        status: CallStatus,
        response: [UInt8]?
    ) async throws {
        let statement: SQL = """
            INSERT INTO chat.idempotency_keys (tenant_id, user_id, key, method, request_hash, status, response,
                                               expires_at)
            VALUES (\(tenant.tenantID), \(tenant.userID), decode(\(Hex.encode(claim.key)), 'hex'), \(claim.method),
                    decode(\(Hex.encode(claim.requestHash)), 'hex'), decode(\(Hex.encode(try status.serializedBytes())), 'hex'),
                    decode(\(response.map(Hex.encode)), 'hex'),
                    now() + \(Int(claim.window.components.seconds)) * interval '1 second')
            ON CONFLICT (tenant_id, user_id, key) DO NOTHING
            """
        try await self.pool.tenantBatch(tenant, [statement]) { _ in () }
    }

    static func bytes(_ text: String) -> [UInt8] { Hex.decode(text) ?? [] }
}

extension Router {
    /// Registers a unary mutation (the contract gives it no idempotency_level), run under the call's idempotency
    /// key (`Idempotency`).
    public mutating func register<Request, Response>(
        mutation method: ChatMethod<Request, Response>,
        idempotency: Idempotency,
        _ handler: @escaping @Sendable (Request, CallContext) async throws -> Response
    ) {
        precondition(!method.idempotent, "\(method.path) is marked idempotent in proto/: not a mutation")
        self.register(method) { request, context in
            try await idempotency.run(method, request, context, handler)
        }
    }
}
