public import ChatProto

/// Who is calling: from a verified token, or from a client certificate (internal services).
public struct Principal: Sendable, Hashable {
    /// The user or service id.
    public var userID: String
    /// The tenant.
    public var tenantID: String
    /// The role.
    public var role: Role
    /// The learners in scope (ignored for roles that see the whole tenant).
    public var learnerScope: [String]
    /// What the principal may do.
    public var permissions: Set<Permission>
    /// When the credentials expire (the token's `exp`, seconds since the epoch); nil for certificate principals.
    /// Long-lived streams end then.
    public var expiresAt: Int64?

    /// Creates a principal.
    public init(
        userID: String,
        tenantID: String,
        role: Role,
        learnerScope: [String],
        permissions: Set<Permission>,
        expiresAt: Int64? = nil
    ) {
        self.userID = userID
        self.tenantID = tenantID
        self.role = role
        self.learnerScope = learnerScope
        self.permissions = permissions
        self.expiresAt = expiresAt
    }

    /// True when the principal may see rows of `learner`.
    public func hasInScope(_ learner: String) -> Bool {
        self.role.seesWholeTenant || self.learnerScope.contains(learner.lowercased())
    }
}
