public import ChatDomain
public import ChatProto

/// Who a database transaction acts for. Every tenant transaction sets these first, transaction-local, and the
/// row-level security policies read them: no context means no rows.
public struct TenantContext: Sendable, Hashable {
    /// The tenant (school district), a UUID.
    public var tenantID: String
    /// The acting user (`sub` of the token, or the service identity).
    public var userID: String
    /// The acting role; the policies see its `claimName` in `app.role`.
    public var role: Role
    /// The learners (UUIDs) a learner, guardian or teacher may see; ignored for roles that see the whole tenant.
    public var learnerScope: [String]

    /// Creates a context.
    public init(tenantID: String, userID: String, role: Role, learnerScope: [String] = []) {
        self.tenantID = tenantID
        self.userID = userID
        self.role = role
        self.learnerScope = learnerScope
    }

    /// The statement that installs the context for the current transaction only (`set_config(..., true)`), with
    /// the call's statement timeout when there is one: it travels in the same pipeline as the statements it bounds.
    func setConfigStatement(statementTimeoutMilliseconds timeout: Int?) -> SQL {
        """
        SELECT set_config('app.tenant_id', \(self.tenantID), true), set_config('app.user_id', \(self.userID), true), \
        set_config('app.role', \(self.role.claimName), true), set_config('app.learner_scope', \(self.learnerScope), true), \
        set_config('statement_timeout', coalesce(\(timeout)::text, current_setting('statement_timeout')), true)
        """
    }
}

extension TenantContext {
    /// The context a principal's transactions run with: the storage layer's row-level security sees the same
    /// tenant, user, role and learner scope the interceptor authorized.
    public init(_ principal: Principal) {
        self.init(
            tenantID: principal.tenantID,
            userID: principal.userID,
            role: principal.role,
            learnerScope: principal.learnerScope
        )
    }
}
