public import ChatProto

/// The roles are the contract's `Role` enum (proto/chat/v1/common.proto): its numbers travel in `Actor.role`, and its
/// generated `name` (`tenant_admin` for ROLE_TENANT_ADMIN) is the role in a token's `role` claim, in the
/// database's `app.role` setting and in the stored `*_role` columns. A role is added in the proto and nowhere else
/// but the tables that say what it may do (docs/ARCHITECTURE.md, "Adding a role").
extension Role {
    /// The roles a principal can have: every value of the contract but UNSPECIFIED.
    public static let assignable: [Role] = Role.allCases.filter { $0 != .unspecified }

    /// The assignable role with this name (a token's `role` claim, a stored role); nil for any other text.
    public init?(name: String) {
        guard let role = Role.assignable.first(where: { $0.name == name }) else { return nil }
        self = role
    }

    /// The role's name as claims and the database spell it; "unspecified" for a number this contract lacks.
    public var claimName: String { self.name ?? "unspecified" }

    /// Roles that see every learner of their tenant; the others see only their learner scope. The database's
    /// `chat.sees_whole_tenant()` holds the same list (RoleSQLTests compares them).
    public var seesWholeTenant: Bool {
        switch self {
        case .tenantAdmin, .service, .privacyOfficer: true
        case .learner, .guardian, .teacher, .unspecified, .unrecognized: false
        }
    }
}

extension Role {
    /// The role a stored `*_role` column names; UNSPECIFIED for a name this contract lacks (a row written by a
    /// newer version), which a caller sees as the number 0 rather than a failed read.
    public init(stored name: String) {
        self = Role(name: name) ?? .unspecified
    }
}
