/// Which tenants each service principal may act for: a file of lines `<service name> <tenant id>[,<tenant id>...]`
/// or `<service name> *` (every tenant); blank lines and `#` comments are ignored. A service not listed acts for no
/// tenant: its calls are PERMISSION_DENIED. The service name is the client certificate's common name after
/// `service:`, or the `sub` of a token with the `service` role.
public struct ServiceTenants: Sendable, Hashable {
    /// What one service may do.
    public enum Allowance: Sendable, Hashable {
        /// Every tenant.
        case everyTenant
        /// These tenants (lower-case UUIDs).
        case tenants(Set<String>)
    }

    private let allowances: [String: Allowance]

    /// No service may act for any tenant.
    public static let none = ServiceTenants(allowances: [:])

    /// Each service and how many tenants it may act for, for `--print-config` ("none" when no service may).
    public var summary: String {
        guard !self.allowances.isEmpty else { return "none" }
        return self.allowances.keys.sorted().map { name in
            switch self.allowances[name] {
            case .everyTenant: "\(name) (every tenant)"
            case .tenants(let tenants): "\(name) (\(tenants.count) tenants)"
            case nil: name
            }
        }.joined(separator: ", ")
    }

    /// The allowances, by service name.
    public init(allowances: [String: Allowance]) {
        self.allowances = allowances
    }

    /// Reads the file's text.
    ///
    /// - Throws: `AuthError(.configuration)` naming the line that is wrong.
    public init(file text: String) throws(AuthError) {
        var allowances: [String: Allowance] = [:]
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)[0]
            let parts = trimmed.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if parts.isEmpty { continue }
            func bad(_ why: String) -> AuthError {
                AuthError(.configuration, "service tenants line \(number + 1): \(why)")
            }
            guard parts.count == 2 else {
                throw bad("expected \"<service> <tenant>[,<tenant>...]\" or \"<service> *\"")
            }
            let name = String(parts[0])
            guard allowances[name] == nil else { throw bad("\(name) appears twice") }
            if parts[1] == "*" {
                allowances[name] = .everyTenant
                continue
            }
            var tenants: Set<String> = []
            for tenant in parts[1].split(separator: ",") {
                guard UUIDText.isValid(String(tenant)) else { throw bad("\(tenant) is not a tenant id (a UUID)") }
                tenants.insert(tenant.lowercased())
            }
            allowances[name] = .tenants(tenants)
        }
        self.init(allowances: allowances)
    }

    /// The allowance of `service`; nil when it is not listed.
    public func allowance(of service: String) -> Allowance? {
        self.allowances[service]
    }

    /// True when `service` may act for `tenant`.
    public func allows(_ service: String, tenant: String) -> Bool {
        switch self.allowances[service] {
        case .everyTenant?: true
        case .tenants(let tenants)?: tenants.contains(tenant.lowercased())
        case nil: false
        }
    }

    /// True when `service` may act for more than one tenant (its calls are then logged with the tenant).
    public func isCrossTenant(_ service: String) -> Bool {
        switch self.allowances[service] {
        case .everyTenant?: true
        case .tenants(let tenants)?: tenants.count > 1
        case nil: false
        }
    }
}
