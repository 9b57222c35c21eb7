internal import ChatDomain
internal import Dispatch
internal import Foundation
internal import Synchronization

/// An idempotency key being used by the mutation the current task runs. The mutation's transaction (the first
/// `tenantBatch` or `withTenantTransaction` of the call) inserts the key's row first and is then held open: the
/// caller builds its response, and the transaction commits with the outcome stored in the same row. So a key's outcome
/// is stored exactly when the mutation's effect committed, and a concurrent or later attempt with the key either
/// waits for that transaction and replays its outcome, or (if it rolled back) runs itself.
///
/// Set with `IdempotencyClaim.$current.withValue(claim) { ... }` around the handler; `commit(status:response:)` or
/// `rollback()` ends the held transaction, and must be called whenever `isHolding` is true.
public final class IdempotencyClaim: Sendable {
    /// The key, 16 to 64 bytes.
    public let key: [UInt8]
    /// The method the key is used for.
    public let method: String
    /// SHA-256 of the method and the request.
    public let requestHash: [UInt8]
    /// How long the key's outcome is kept.
    public let window: Duration

    private enum Phase {
        case idle
        case claiming
        case holding(HeldTransaction)
        case ended
    }

    private struct State {
        var phase = Phase.idle
        /// Another attempt with the key committed first (SQLSTATE CH409).
        var conflicted = false
        /// Work to do once the transaction committed (live notifications).
        var afterCommit: [@Sendable () -> Void] = []
    }

    private let state = Mutex(State())

    /// The claim of the call the current task serves.
    @TaskLocal public static var current: IdempotencyClaim?

    /// SQLSTATE of `chat.claim_idempotency_key` when another attempt with the key committed.
    public static let conflictState = "CH409"

    /// Creates a claim.
    public init(key: [UInt8], method: String, requestHash: [UInt8], window: Duration) {
        self.key = key
        self.method = method
        self.requestHash = requestHash
        self.window = window
    }

    /// True while a transaction with the key's row is open, waiting for `commit` or `rollback`.
    public var isHolding: Bool {
        self.state.withLock { if case .holding = $0.phase { true } else { false } }
    }

    /// True when another attempt with the key committed before this one could claim it.
    public var conflicted: Bool { self.state.withLock { $0.conflicted } }

    /// Runs `work` once the key's transaction has committed, or now when no transaction holds the key; returns at
    /// once either way.
    public func afterCommit(_ work: @escaping @Sendable () -> Void) {
        let now = self.state.withLock { state -> Bool in
            guard case .holding = state.phase else { return true }
            state.afterCommit.append(work)
            return false
        }
        if now { work() }
    }

    /// Commits the held transaction with the outcome: the encoded `CallStatus` and, on success, the response.
    ///
    /// - Throws: what COMMIT threw (the outcome is then unknown: the caller should report UNAVAILABLE).
    public func commit(status: [UInt8], response: [UInt8]?) async throws {
        guard let held = self.take() else { return }
        held.decide(.commit(status: status, response: response))
        do {
            try await held.finished()
        } catch {
            self.state.withLock { $0.afterCommit.removeAll() }
            throw error
        }
        for work in self.state.withLock({ state in
            defer { state.afterCommit.removeAll() }
            return state.afterCommit
        }) {
            work()
        }
    }

    /// Rolls the held transaction back (the mutation failed after its statements ran): nothing of it stays.
    public func rollback() async {
        guard let held = self.take() else { return }
        held.decide(.rollback)
        try? await held.finished()
        self.state.withLock { $0.afterCommit.removeAll() }
    }

    private func take() -> HeldTransaction? {
        self.state.withLock { state in
            guard case .holding(let held) = state.phase else { return nil }
            state.phase = .ended
            return held
        }
    }

    /// The first transaction of the call takes the claim; false for the others, and while one is claiming.
    func beginClaiming() -> Bool {
        self.state.withLock { state in
            guard case .idle = state.phase else { return false }
            state.phase = .claiming
            return true
        }
    }

    /// The claiming transaction failed before it held the key (it rolled back): another may try.
    func claimFailed(_ error: any Error) {
        self.state.withLock { state in
            state.phase = .idle
            if let error = error as? StorageError, error.sqlState == Self.conflictState { state.conflicted = true }
        }
    }

    /// As `claimFailed`, unless the transaction already held the key.
    func claimFailedIfClaiming(_ error: any Error) {
        let claiming = self.state.withLock { if case .claiming = $0.phase { true } else { false } }
        if claiming { self.claimFailed(error) }
    }

    func nowHolding(_ held: HeldTransaction) {
        self.state.withLock { $0.phase = .holding(held) }
    }

    /// `statements` with the key's insert placed after the leading lock-only statements and before the first one
    /// that may write: the key's insert gives the transaction its id, which must come after the thread event lock
    /// (`threadEventLock`) for the outbox to keep each thread's events in order. Returns the statements and the
    /// index of the insert's result.
    func around(_ statements: [SQL]) -> (statements: [SQL], claimIndex: Int) {
        let leading = statements.prefix { $0.takesLocksOnly }.count
        return (Array(statements[..<leading]) + [self.claimStatement] + statements[leading...], leading)
    }

    /// The statement that inserts the key's row, in the mutation's transaction.
    var claimStatement: SQL {
        """
        SELECT chat.claim_idempotency_key(decode(\(Hex.encode(self.key)), 'hex'), \(self.method), \
        decode(\(Hex.encode(self.requestHash)), 'hex'), \(Int(self.window.components.seconds)))
        """
    }

    /// The statement that stores the outcome in the key's row, before COMMIT, with the learner the transaction's
    /// content events were about (so that erasing the learner erases the outcome too). Privacy events and the
    /// erased tombstones an erasure writes do not count: an erasure's receipt (counts, no content) stays with its
    /// key after the learner is gone, so that a retry still gets it.
    static func outcomeStatement(key: [UInt8], status: [UInt8], response: [UInt8]?) -> SQL {
        """
        UPDATE chat.idempotency_keys SET status = decode(\(Hex.encode(status)), 'hex'), \
        response = decode(\(response.map(Hex.encode)), 'hex'), \
        learner_id = (SELECT o.learner_id FROM chat.outbox o \
                      WHERE o.tenant_id = chat.current_tenant() AND o.tx_id = pg_current_xact_id() \
                        AND o.learner_id IS NOT NULL AND NOT o.erased \
                        AND o.type = ANY (\(chatEventNumbers)::int2[]) LIMIT 1)
        WHERE tenant_id = chat.current_tenant() AND user_id = current_setting('app.user_id', true)
          AND key = decode(\(Hex.encode(key)), 'hex')
        """
    }
}

/// A transaction held open on a pool thread until its caller decides.
final class HeldTransaction: Sendable {
    enum Decision: Sendable {
        case commit(status: [UInt8], response: [UInt8]?)
        case rollback
    }

    private let semaphore = DispatchSemaphore(value: 0)
    private let decision = Mutex<Decision?>(nil)
    private let outcome = Mutex<(result: Result<Void, any Error>?, waiter: CheckedContinuation<Void, any Error>?)>(
        (nil, nil)
    )

    func decide(_ decision: Decision) {
        self.decision.withLock { $0 = decision }
        self.semaphore.signal()
    }

    /// On the pool thread: waits for the decision until `deadline`; nil when none came in time.
    func awaitDecision(until deadline: ContinuousClock.Instant) -> Decision? {
        let wait = max(0, ContinuousClock.now.duration(to: deadline) / .milliseconds(1))
        guard self.semaphore.wait(timeout: .now() + .milliseconds(Int(wait))) == .success else { return nil }
        return self.decision.withLock { $0 }
    }

    /// The transaction ended (committed, rolled back, or failed).
    func ended(_ result: Result<Void, any Error>) {
        let waiter = self.outcome.withLock { state -> CheckedContinuation<Void, any Error>? in
            state.result = result
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(with: result)
    }

    /// Waits until the transaction ended.
    func finished() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let result = self.outcome.withLock { state -> Result<Void, any Error>? in
                if state.result == nil { state.waiter = continuation }
                return state.result
            }
            if let result { continuation.resume(with: result) }
        }
    }
}

extension PGPool {
    /// Runs `body` (which begins a transaction that inserts the claim's row) on a pool connection, hands its value
    /// back as soon as it has run, and keeps the transaction open until the claim is committed or rolled back.
    func held<Value: Sendable>(
        _ claim: IdempotencyClaim,
        _ context: TenantContext,
        _ body: @escaping @Sendable (PGConnection) throws -> (Value, begun: Bool)
    ) async throws -> Value {
        let held = HeldTransaction()
        // The value reaches the caller once, whichever comes first: the caller's wait or the job's delivery.
        let delivered = Mutex<
            (waiter: CheckedContinuation<Value, any Error>?, result: Result<Value, any Error>?, done: Bool)
        >(
            (nil, nil, false)
        )
        let deliver: @Sendable (Result<Value, any Error>) -> Void = { result in
            let waiter = delivered.withLock { state -> CheckedContinuation<Value, any Error>? in
                guard !state.done else { return nil }
                guard let waiter = state.waiter else {
                    state.result = result
                    return nil
                }
                state.done = true
                return waiter
            }
            waiter?.resume(with: result)
        }
        let budgetDeadline = DatabaseBudget.current?.deadline
        let limit = self.configuration.statementTimeout
        let job = Task {
            do {
                try await self.withConnection { connection in
                    let (value, begun): (Value, begun: Bool)
                    do {
                        (value, begun) = try body(connection)
                    } catch {
                        if connection.isHealthy { _ = try? connection.pipeline(["ROLLBACK"]) }
                        claim.claimFailed(error)
                        throw error
                    }
                    claim.nowHolding(held)
                    deliver(.success(value))
                    let deadline = min(
                        budgetDeadline ?? .now.advanced(by: limit),
                        ContinuousClock.now.advanced(by: limit)
                    )
                    switch held.awaitDecision(until: deadline) {
                    case .commit(let status, let response)?:
                        let outcome = IdempotencyClaim.outcomeStatement(
                            key: claim.key,
                            status: status,
                            response: response
                        )
                        if begun {
                            try connection.pipeline([outcome, "COMMIT"])
                        } else {
                            let setup = context.setConfigStatement(
                                statementTimeoutMilliseconds: connection.statementTimeoutMilliseconds
                            )
                            try connection.pipeline(["BEGIN", setup, claim.claimStatement, outcome, "COMMIT"])
                        }
                    case .rollback?:
                        if begun { try connection.pipeline(["ROLLBACK"]) }
                    case nil:
                        if begun && connection.isHealthy { _ = try? connection.pipeline(["ROLLBACK"]) }
                        throw StorageError(code: .timedOut, detail: "the held transaction was never ended")
                    }
                }
                held.ended(.success(()))
            } catch {
                // Failed before it held the key (no connection in time, say): the claim is free again.
                claim.claimFailedIfClaiming(error)
                deliver(.failure(error))
                held.ended(.failure(error))
            }
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Value, any Error>) in
                let ready = delivered.withLock { state -> Result<Value, any Error>? in
                    if let result = state.result {
                        state.done = true
                        return result
                    }
                    state.waiter = continuation
                    return nil
                }
                if let ready { continuation.resume(with: ready) }
            }
        } onCancel: {
            job.cancel()
        }
    }
}
