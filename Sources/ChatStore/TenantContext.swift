/// Who a database transaction acts for. Every tenant transaction sets these first, transaction-local, and the
/// row-level security policies read them: no context means no rows.
public struct TenantContext: Sendable, Hashable {
    /// The role, as the policies know it.
    public enum Role: String, Sendable, Hashable, CaseIterable {
        case learner
        case guardian
        case teacher
        case tenantAdmin = "tenant_admin"
        case service
        case privacyOfficer = "privacy_officer"

        /// Roles that see every learner of their tenant; the others see only their learner scope.
        public var seesWholeTenant: Bool {
            switch self {
            case .tenantAdmin, .service, .privacyOfficer: true
            case .learner, .guardian, .teacher: false
            }
        }
    }

    /// The tenant (school district), a UUID.
    public var tenantID: String
    /// The acting user (`sub` of the token, or the service identity).
    public var userID: String
    /// The acting role.
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
        set_config('app.role', \(self.role.rawValue), true), set_config('app.learner_scope', \(self.learnerScope), true), \
        set_config('statement_timeout', coalesce(\(timeout)::text, current_setting('statement_timeout')), true)
        """
    }
}
