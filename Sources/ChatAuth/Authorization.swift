public import ChatDomain

extension Principal {
    /// A principal from token claims: the role's permissions, narrowed by the `permissions` claim when present.
    public init(claims: TokenClaims) {
        let granted = AuthorizationTable.rolePermissions[claims.role] ?? []
        let narrowed = claims.permissions.map { names in Set(names.compactMap(Permission.init(rawValue:))) }
        self.init(
            userID: claims.subject,
            tenantID: claims.tenantID,
            role: claims.role,
            learnerScope: claims.learnerScope,
            permissions: narrowed.map { granted.intersection($0) } ?? granted,
            expiresAt: claims.expiresAt
        )
    }
}
