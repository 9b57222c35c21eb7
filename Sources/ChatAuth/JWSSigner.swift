internal import COpenSSL
internal import Foundation

/// A key that signs tokens: for development (`chatctl token mint`) and tests. Production tokens come from the
/// identity provider; chatd itself only verifies.
public final class JWSSigningKey: @unchecked Sendable {
    /// The key id (`kid`).
    public let id: String
    /// The algorithm.
    public let algorithm: JWSAlgorithm
    private let secret: [UInt8]
    private let privateKey: OpaquePointer?

    private init(id: String, algorithm: JWSAlgorithm, secret: [UInt8], privateKey: OpaquePointer?) {
        self.id = id
        self.algorithm = algorithm
        self.secret = secret
        self.privateKey = privateKey
    }

    deinit {
        if let privateKey = self.privateKey { EVP_PKEY_free(privateKey) }
    }

    /// An HS256 key.
    public static func hmac(id: String, secret: [UInt8]) -> JWSSigningKey {
        JWSSigningKey(id: id, algorithm: .hs256, secret: secret, privateKey: nil)
    }

    /// A new random Ed25519 key.
    public static func generateEd25519(id: String) throws(AuthError) -> JWSSigningKey {
        guard let context = EVP_PKEY_CTX_new_id(chat_EVP_PKEY_ED25519(), nil) else {
            throw AuthError(.configuration, "no Ed25519 support")
        }
        defer { EVP_PKEY_CTX_free(context) }
        var key: OpaquePointer?
        guard EVP_PKEY_keygen_init(context) == 1, EVP_PKEY_keygen(context, &key) == 1, let key else {
            throw AuthError(.configuration, "Ed25519 key generation failed")
        }
        return JWSSigningKey(id: id, algorithm: .edDSA, secret: [], privateKey: key)
    }

    /// An Ed25519 key from a PEM file (`openssl genpkey -algorithm ed25519`).
    public static func ed25519(id: String, pemFile: String) throws(AuthError) -> JWSSigningKey {
        guard let file = fopen(pemFile, "r") else { throw AuthError(.configuration, "cannot read \(pemFile)") }
        defer { fclose(file) }
        guard let key = PEM_read_PrivateKey(file, nil, nil, nil) else {
            ERR_clear_error()
            throw AuthError(.configuration, "\(pemFile) is not a PEM private key")
        }
        guard EVP_PKEY_get_id(key) == chat_EVP_PKEY_ED25519() else {
            EVP_PKEY_free(key)
            throw AuthError(.configuration, "\(pemFile) is not an Ed25519 key")
        }
        return JWSSigningKey(id: id, algorithm: .edDSA, secret: [], privateKey: key)
    }

    /// The public half as a JWK (for a JWKS file); for HS256 the secret itself.
    public var publicJWK: [String: String] {
        switch self.algorithm {
        case .hs256:
            return ["kty": "oct", "kid": self.id, "alg": "HS256", "k": Base64URL.encode(self.secret)]
        default:
            var length = 32
            var raw = [UInt8](repeating: 0, count: 32)
            _ = EVP_PKEY_get_raw_public_key(self.privateKey, &raw, &length)
            return ["kty": "OKP", "crv": "Ed25519", "kid": self.id, "alg": "EdDSA", "x": Base64URL.encode(raw)]
        }
    }

    /// The verification key that matches this signing key.
    public func verificationKey() throws(AuthError) -> JWSVerificationKey {
        switch self.algorithm {
        case .hs256: try .hmac(id: self.id, secret: self.secret)
        default: try .ed25519(id: self.id, publicKey: Base64URL.decode(Array(self.publicJWK["x"]!.utf8))!)
        }
    }

    /// Signs claims (a JSON object) into a compact JWS with `alg` and `kid` in the header.
    public func sign(claims: [String: any Sendable]) throws(AuthError) -> String {
        let header: [String: String] = ["alg": self.algorithm.rawValue, "kid": self.id, "typ": "JWT"]
        guard let headerJSON = try? JSONSerialization.data(withJSONObject: header, options: [.sortedKeys]),
            let claimsJSON = try? JSONSerialization.data(withJSONObject: claims, options: [.sortedKeys])
        else {
            throw AuthError(.configuration, "claims are not JSON")
        }
        let input = Base64URL.encode(headerJSON) + "." + Base64URL.encode(claimsJSON)
        return input + "." + Base64URL.encode(try self.signature(Array(input.utf8)))
    }

    /// The raw signature of `input`.
    func signature(_ input: [UInt8]) throws(AuthError) -> [UInt8] {
        switch self.algorithm {
        case .hs256:
            var mac = [UInt8](repeating: 0, count: 32)
            var length: UInt32 = 0
            _ = HMAC(EVP_sha256(), self.secret, Int32(self.secret.count), input, input.count, &mac, &length)
            return mac
        default:
            guard let key = self.privateKey, let context = EVP_MD_CTX_new() else {
                throw AuthError(.configuration, "no key")
            }
            defer { EVP_MD_CTX_free(context) }
            var signature = [UInt8](repeating: 0, count: 64)
            var length = 64
            guard EVP_DigestSignInit(context, nil, nil, nil, key) == 1,
                EVP_DigestSign(context, &signature, &length, input, input.count) == 1
            else {
                throw AuthError(.configuration, "signing failed")
            }
            return Array(signature.prefix(length))
        }
    }
}
