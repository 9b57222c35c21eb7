public import ChatDomain
internal import ChatProto
public import ChatRPC
public import CoreMetrics
internal import Foundation
internal import Logging
internal import Synchronization

/// Authenticates and authorizes every call before its handler runs.
///
/// A bearer token in `authorization` is verified and becomes the principal. Without a token, a caller with a
/// verified client certificate whose common name is `service:<name>` is a service principal; it names the tenant it
/// acts for in the `tenant-id` metadata entry. A service principal (certificate, or token with the `service` role)
/// may act only for the tenants `ServiceTenants` allows it; a call for another is PERMISSION_DENIED, and every call
/// of a service that may act for several tenants is logged with its tenant. The method's entry in `AuthorizationTable` decides: public methods need
/// nothing, unknown methods are refused, and a missing permission is PERMISSION_DENIED naming the permission. The
/// principal is the call context's `principal`, for the handler and the storage layer.
public struct AuthInterceptor: ServerInterceptor {
    let verifier: TokenVerifier
    let serviceTenants: ServiceTenants
    let clock: @Sendable () -> Int64
    let verified = VerifiedTokens(capacity: 4096)
    /// `chat_token_verifications_total` by `result`; nil without metrics.
    let verifications: Verifications?

    /// Creates the interceptor.
    ///
    /// - Parameters:
    ///   - verifier: the token verifier.
    ///   - serviceTenants: the tenants each service principal may act for (none, unless listed).
    ///   - clock: the current time in seconds since the epoch (tests pass a fixed one).
    ///   - metrics: counts token verifications by result, when given.
    public init(
        verifier: TokenVerifier,
        serviceTenants: ServiceTenants,
        clock: (@Sendable () -> Int64)? = nil,
        metrics: (any MetricsFactory)? = nil
    ) {
        self.verifier = verifier
        self.serviceTenants = serviceTenants
        self.clock = clock ?? { Int64(Date().timeIntervalSince1970) }
        self.verifications = metrics.map(Verifications.init(factory:))
    }

    /// How bearer tokens fared: `valid` (verified now), `cached` (verified before, still within `exp`), `rejected`.
    struct Verifications: Sendable {
        static let name = "chat_token_verifications_total"
        let valid: Counter
        let cached: Counter
        let rejected: Counter

        init(factory: any MetricsFactory) {
            self.valid = Counter(label: Self.name, dimensions: [("result", "valid")], factory: factory)
            self.cached = Counter(label: Self.name, dimensions: [("result", "cached")], factory: factory)
            self.rejected = Counter(label: Self.name, dimensions: [("result", "rejected")], factory: factory)
        }
    }

    public func intercept(
        _ context: CallContext,
        next: @Sendable (CallContext) async throws -> Void
    ) async throws {
        let permission: Permission
        switch AuthorizationTable.decision(for: context.method) {
        case .publicMethod:
            try await next(context)
            return
        case .unknownMethod:
            throw AuthError(.permissionDenied, "\(context.method) is not in the authorization table")
        case .requires(let required):
            permission = required
        }
        let principal = try self.authenticate(context)
        if principal.role == .service {
            let service = Self.serviceName(principal.userID)
            guard self.serviceTenants.allows(service, tenant: principal.tenantID) else {
                context.logger.warning(
                    "service refused for a tenant it may not act for",
                    metadata: [LogKey.service: "\(service)", LogKey.tenant: "\(principal.tenantID)"]
                )
                throw AuthError(
                    .permissionDenied,
                    "the service \(service) may not act for tenant \(principal.tenantID) (see chatd --service-tenants)"
                )
            }
            if self.serviceTenants.isCrossTenant(service) {
                context.logger.info(
                    "cross-tenant service call",
                    metadata: [LogKey.service: "\(service)", LogKey.tenant: "\(principal.tenantID)"]
                )
            }
        }
        guard principal.permissions.contains(permission) else {
            throw AuthError(
                .permissionDenied,
                "\(context.method) needs the permission \(permission.rawValue), which the \(principal.role.claimName) "
                    + "role does not have"
            )
        }
        var context = context
        context.principal = principal
        try await next(context)
    }

    func authenticate(_ context: CallContext) throws(AuthError) -> Principal {
        let authorization = context.header.authorization
        if !authorization.isEmpty {
            guard authorization.hasPrefix("Bearer "), authorization.utf8.count > 7 else {
                throw AuthError(.unauthenticated, "authorization must be \"Bearer <token>\"")
            }
            let token = String(authorization.dropFirst(7))
            let now = self.clock()
            let (keys, generation) = self.verifier.keyRing.current
            if let claims = self.verified.claims(
                for: token,
                now: now,
                leeway: self.verifier.leewaySeconds,
                generation: generation
            ) {
                self.verifications?.cached.increment()
                return Principal(claims: claims)
            }
            let claims: TokenClaims
            do {
                claims = try self.verifier.verify(token, now: now, keys: keys)
            } catch {
                self.verifications?.rejected.increment()
                throw error
            }
            self.verifications?.valid.increment()
            self.verified.insert(token, claims, generation: generation)
            return Principal(claims: claims)
        }
        if let identity = context.peerIdentity, identity.hasPrefix("service:"), identity.utf8.count > 8 {
            guard let entry = context.header.metadata.first(where: { $0.key == "tenant-id" }),
                let tenant = String(validating: entry.value, as: UTF8.self), UUIDText.isValid(tenant)
            else {
                throw AuthError(
                    .unauthenticated,
                    "a service certificate must name its tenant in the tenant-id metadata"
                )
            }
            return Principal(
                userID: identity,
                tenantID: tenant.lowercased(),
                role: .service,
                learnerScope: [],
                permissions: AuthorizationTable.rolePermissions[.service] ?? []
            )
        }
        throw AuthError(.unauthenticated, "this method needs a bearer token or a service certificate")
    }
}

extension AuthInterceptor {
    /// A service principal's name: its certificate's common name without `service:`, or its token's `sub`.
    static func serviceName(_ userID: String) -> String {
        userID.hasPrefix("service:") ? String(userID.dropFirst(8)) : userID
    }
}

/// Tokens verified before, with their claims, until they expire: a client sends the same token on every call, and
/// verifying its signature again was about a twentieth of the server's CPU per call. Only successful verifications
/// are kept; an entry is used only while `now` is within the token's `exp` (plus the verifier's leeway) and only
/// under the key generation it was verified with, so the answer is the one verification would give (a key the
/// ring no longer holds fails at once; `nbf` passed already).
final class VerifiedTokens: Sendable {
    private let capacity: Int
    private let entries: Mutex<(generation: UInt64, claims: [String: TokenClaims])>

    init(capacity: Int) {
        self.capacity = capacity
        self.entries = Mutex((0, [:]))
    }

    func claims(for token: String, now: Int64, leeway: Int64, generation: UInt64) -> TokenClaims? {
        self.entries.withLock { entries in
            guard entries.generation == generation else {
                // The keys changed since these were verified: verify again.
                entries = (generation, [:])
                return nil
            }
            guard let claims = entries.claims[token] else { return nil }
            guard now <= claims.expiresAt + leeway else {
                entries.claims[token] = nil
                return nil
            }
            return claims
        }
    }

    func insert(_ token: String, _ claims: TokenClaims, generation: UInt64) {
        self.entries.withLock { entries in
            guard entries.generation == generation else { return }
            // Full: start over (bounded memory; the next calls verify again).
            if entries.claims.count >= self.capacity { entries.claims.removeAll(keepingCapacity: true) }
            entries.claims[token] = claims
        }
    }
}
