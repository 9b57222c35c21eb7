public import ChatDomain
public import ChatProto
internal import Foundation

/// The claims of a verified token that chatd uses.
public struct TokenClaims: Sendable, Hashable {
    /// `sub`: the user (or service) id.
    public var subject: String
    /// `tenant_id`: the school district, a UUID.
    public var tenantID: String
    /// `role`.
    public var role: Role
    /// `learner_scope`: the learners (UUIDs) a learner, guardian or teacher may see.
    public var learnerScope: [String]
    /// `permissions`: narrows the role's permissions when present (it can never widen them).
    public var permissions: [String]?
    /// `exp`, seconds since the epoch.
    public var expiresAt: Int64
}

/// Verifies compact JWS bearer tokens (JWTs): size, structure, algorithm pinned to the key chosen by `kid`,
/// signature, then `exp`, `nbf`, `iss` and `aud` with a small leeway, then the claims chatd needs.
public struct TokenVerifier: Sendable {
    /// The longest token accepted (the CallHeader's authorization field is at most 8 KiB).
    public static let maxTokenBytes = 8 * 1024

    /// The signing keys (replaceable: `KeyRing`).
    public let keyRing: KeyRing
    /// The signing keys now.
    public var keys: JWKSet { self.keyRing.keys }
    /// The required `iss`.
    public let issuer: String
    /// The required `aud` (a member of it, when it is an array).
    public let audience: String
    /// Clock skew tolerated on `exp` and `nbf`, seconds.
    public let leewaySeconds: Int64

    /// Creates a verifier with fixed keys.
    public init(keys: JWKSet, issuer: String, audience: String, leewaySeconds: Int64 = 30) {
        self.init(keyRing: KeyRing(keys), issuer: issuer, audience: audience, leewaySeconds: leewaySeconds)
    }

    /// Creates a verifier whose keys may be replaced while it runs.
    public init(keyRing: KeyRing, issuer: String, audience: String, leewaySeconds: Int64 = 30) {
        self.keyRing = keyRing
        self.issuer = issuer
        self.audience = audience
        self.leewaySeconds = leewaySeconds
    }

    /// Verifies a token.
    ///
    /// - Parameters:
    ///   - token: the compact JWS, without `Bearer `.
    ///   - now: the current time, seconds since the epoch.
    /// - Returns: the claims.
    /// - Throws: `AuthError` UNAUTHENTICATED saying what was wrong, never echoing the token.
    public func verify(_ token: String, now: Int64) throws(AuthError) -> TokenClaims {
        try self.verify(token, now: now, keys: self.keyRing.keys)
    }

    /// Verifies a token with `keys` (a snapshot of the ring, so that a replacement during the call does not mix
    /// two key sets).
    func verify(_ token: String, now: Int64, keys: JWKSet) throws(AuthError) -> TokenClaims {
        let bytes = Array(token.utf8)
        guard bytes.count <= Self.maxTokenBytes else { throw Self.reject("the token is too long") }
        let parts = bytes.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, !parts[1].isEmpty, !parts[2].isEmpty else {
            throw Self.reject("the token is not a compact JWS")
        }
        guard let headerBytes = Base64URL.decode(parts[0]),
            let header = try? JSONDecoder().decode(Header.self, from: Data(headerBytes))
        else {
            throw Self.reject("the token header is not base64url JSON")
        }
        guard let algorithmName = header.alg else { throw Self.reject("the token names no algorithm") }
        guard let algorithm = JWSAlgorithm(rawValue: algorithmName) else {
            throw Self.reject("the token's algorithm is not accepted")
        }
        guard header.crit == nil else { throw Self.reject("the token has critical headers this server does not know") }
        guard let keyID = header.kid else { throw Self.reject("the token's key id is unknown") }
        guard let key = keys.keys[keyID] else {
            self.keyRing.unknownKeyID(keyID)
            throw Self.reject("the token's key id is unknown")
        }
        guard key.algorithm == algorithm else { throw Self.reject("the token's algorithm does not match its key") }
        guard let signature = Base64URL.decode(parts[2]) else { throw Self.reject("the token signature is malformed") }
        let signingInput = Array(bytes[..<parts[1].endIndex])
        guard key.verify(signingInput: signingInput, signature: signature) else {
            throw Self.reject("the token signature is invalid")
        }
        guard let payloadBytes = Base64URL.decode(parts[1]),
            let claims = try? JSONDecoder().decode(Claims.self, from: Data(payloadBytes))
        else {
            throw Self.reject("the token payload is not base64url JSON with well-typed claims")
        }
        return try self.validate(claims, now: now)
    }

    /// The header members the verifier reads; a member of the wrong type makes the token malformed.
    struct Header: Decodable {
        var alg: String?
        var kid: String?
        var crit: [String]?
    }

    /// The claims the verifier reads; a claim of the wrong type makes the token malformed.
    struct Claims: Decodable {
        var exp: Double?
        var nbf: Double?
        var iss: String?
        var aud: Audience?
        var sub: String?
        var tenant_id: String?
        var role: String?
        var learner_scope: [String]?
        var permissions: [String]?
    }

    /// `aud`: one string or a list.
    struct Audience: Decodable {
        var values: [String]

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let single = try? container.decode(String.self) {
                self.values = [single]
            } else {
                self.values = try container.decode([String].self)
            }
        }
    }

    /// Checks the registered claims and reads chatd's.
    func validate(_ claims: Claims, now: Int64) throws(AuthError) -> TokenClaims {
        guard let expiry = claims.exp, expiry.isFinite, expiry >= 0, expiry < 1e15 else {
            throw Self.reject("the token has no expiry")
        }
        let expiresAt = Int64(expiry)
        guard now <= expiresAt + self.leewaySeconds else { throw Self.reject("the token has expired") }
        if let notBefore = claims.nbf {
            guard notBefore.isFinite, notBefore < 1e15, Double(now + self.leewaySeconds) >= notBefore else {
                throw Self.reject("the token is not valid yet")
            }
        }
        guard claims.iss == self.issuer else { throw Self.reject("the token is from another issuer") }
        guard claims.aud?.values.contains(self.audience) == true else {
            throw Self.reject("the token is for another audience")
        }
        guard let subject = claims.sub, !subject.isEmpty, subject.utf8.count <= 128 else {
            throw Self.reject("the token has no valid subject")
        }
        guard let tenant = claims.tenant_id, UUIDText.isValid(tenant) else {
            throw Self.reject("the token has no valid tenant_id")
        }
        guard let roleName = claims.role, let role = Role(name: roleName) else {
            throw Self.reject("the token has no valid role")
        }
        let scope = claims.learner_scope ?? []
        guard scope.count <= 10_000, scope.allSatisfy(UUIDText.isValid) else {
            throw Self.reject("the token's learner_scope is not a list of learner ids")
        }
        guard (claims.permissions?.count ?? 0) <= 100 else { throw Self.reject("the token lists too many permissions") }
        return TokenClaims(
            subject: subject,
            tenantID: tenant.lowercased(),
            role: role,
            learnerScope: scope.map { $0.lowercased() },
            permissions: claims.permissions,
            expiresAt: expiresAt
        )
    }

    private static func reject(_ message: String) -> AuthError {
        AuthError(.unauthenticated, message)
    }
}

/// Canonical UUID text (8-4-4-4-12 hexadecimal digits).
enum UUIDText {
    static func isValid(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard bytes.count == 36 else { return false }
        for (index, byte) in bytes.enumerated() {
            if [8, 13, 18, 23].contains(index) {
                guard byte == UInt8(ascii: "-") else { return false }
            } else {
                guard (0x30...0x39).contains(byte) || (0x61...0x66).contains(byte) || (0x41...0x46).contains(byte)
                else { return false }
            }
        }
        return true
    }
}
