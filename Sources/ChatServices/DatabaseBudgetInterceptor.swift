internal import ChatDomain
public import ChatRPC
public import ChatStore

/// Gives every call's database work the call's deadline (`DatabaseBudget`): the pool admits the call's jobs only
/// until then, and its statements get the remaining time as their `statement_timeout`. It also lets a call that the
/// pool refused before any of its work began say `not_processed`.
public struct DatabaseBudgetInterceptor: ServerInterceptor {
    /// Creates the interceptor.
    public init() {}

    public func intercept(_ context: CallContext, next: @Sendable (CallContext) async throws -> Void) async throws {
        try await DatabaseBudget.$current.withValue(DatabaseBudget(deadline: context.deadline)) {
            try await next(context)
        }
    }
}
