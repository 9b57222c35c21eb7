/// A transaction that runs with a tenant context installed. Statements run on the pool thread that owns the
/// connection, so the work between them is synchronous and never hops executors.
public final class TenantTransaction {
    private let connection: PGConnection
    private let context: TenantContext
    /// The idempotency key this transaction inserts first, when it holds one.
    private let claim: IdempotencyClaim?
    private(set) var begun = false
    /// True once COMMIT was sent: from then on a lost connection leaves the outcome unknown.
    private(set) var commitSent = false

    init(connection: PGConnection, context: TenantContext, claim: IdempotencyClaim? = nil) {
        self.connection = connection
        self.context = context
        self.claim = claim
    }

    /// Runs one statement. The first one travels with `BEGIN` and the context in one round trip.
    ///
    /// - Parameter statement: the statement; interpolated values are bound, never spliced.
    /// - Returns: its result.
    @discardableResult
    public func query(_ statement: SQL) throws(StorageError) -> PGResult {
        if self.begun {
            return try self.connection.pipeline([statement])[0]
        }
        self.begun = true
        let setup = self.context.setConfigStatement(
            statementTimeoutMilliseconds: self.connection.statementTimeoutMilliseconds
        )
        if let claim = self.claim {
            let (ordered, claimIndex) = claim.around([statement])
            return try self.connection.pipeline(["BEGIN", setup] + ordered)[claimIndex == 0 ? 3 : 2]
        }
        return try self.connection.pipeline(["BEGIN", setup, statement])[2]
    }

    func commit() throws(StorageError) {
        guard self.begun else { return }
        self.commitSent = true
        try self.connection.pipeline(["COMMIT"])
    }

    func rollback() {
        guard self.begun, self.connection.isHealthy else { return }
        _ = try? self.connection.pipeline(["ROLLBACK"])
    }
}

extension PGPool {
    /// Runs `work` in a transaction with the tenant context installed, committing when it returns and rolling back
    /// when it throws.
    ///
    /// The context is set with `set_config(..., true)`, so it ends with the transaction and never leaks to the next
    /// user of the connection. When the connection turns out to be lost before COMMIT was sent, nothing can have
    /// been committed, and the transaction is retried once on a fresh connection.
    ///
    /// - Parameters:
    ///   - context: the tenant, user, role and learner scope.
    ///   - work: the statements; it runs on a pool thread.
    /// - Returns: what `work` returned.
    public func withTenantTransaction<Value: Sendable>(
        _ context: TenantContext,
        _ work: @escaping @Sendable (TenantTransaction) throws -> Value
    ) async throws -> Value {
        if let claim = IdempotencyClaim.current, claim.beginClaiming() {
            // The call's idempotency key: inserted first, committed with the outcome (no transparent retry).
            return try await self.held(claim, context) { connection in
                let transaction = TenantTransaction(connection: connection, context: context, claim: claim)
                return (try work(transaction), transaction.begun)
            }
        }
        var attempt = 0
        while true {
            attempt += 1
            do {
                return try await self.withConnection { connection in
                    let transaction = TenantTransaction(connection: connection, context: context)
                    do {
                        let value = try work(transaction)
                        try transaction.commit()
                        return value
                    } catch let error as StorageError where error.code == .connectionFailed {
                        throw UncommittedFailure(error: error, commitSent: transaction.commitSent)
                    } catch {
                        transaction.rollback()
                        throw error
                    }
                }
            } catch let failure as UncommittedFailure {
                if failure.commitSent || attempt > 1 { throw failure.error }
            }
        }
    }

    /// Runs `statements` after the context in one pipeline: one round trip and one implicit transaction, which
    /// commits at the end and rolls back entirely when any statement fails.
    ///
    /// - Parameters:
    ///   - context: the tenant, user, role and learner scope.
    ///   - statements: the statements, in order.
    ///   - decode: reads the results (one per statement) on the pool thread.
    /// - Returns: what `decode` returned.
    public func tenantBatch<Value: Sendable>(
        _ context: TenantContext,
        _ statements: [SQL],
        decode: @escaping @Sendable ([PGResult]) throws -> Value
    ) async throws -> Value {
        if let claim = IdempotencyClaim.current, claim.beginClaiming() {
            // The call's idempotency key: an explicit transaction that inserts it first and stays open until the
            // caller commits it with the outcome.
            return try await self.held(claim, context) { connection in
                let setup = context.setConfigStatement(
                    statementTimeoutMilliseconds: connection.statementTimeoutMilliseconds
                )
                let (ordered, claimIndex) = claim.around(statements)
                var results = try connection.pipeline(["BEGIN", setup] + ordered)
                results.removeFirst(2)
                results.remove(at: claimIndex)
                return (try decode(results), true)
            }
        }
        return try await self.withConnection { connection in
            let setup = context.setConfigStatement(
                statementTimeoutMilliseconds: connection.statementTimeoutMilliseconds
            )
            let results = try connection.pipeline([setup] + statements)
            return try decode(Array(results.dropFirst()))
        }
    }
}

/// A connection failure inside a transaction, with whether COMMIT had been sent.
private struct UncommittedFailure: Error {
    let error: StorageError
    let commitSent: Bool
}
