internal import COpenSSL
internal import Foundation
internal import Glibc

/// The signature algorithms chatd accepts. `none` and everything else are refused.
public enum JWSAlgorithm: String, Sendable, Hashable, CaseIterable {
    case hs256 = "HS256"
    case rs256 = "RS256"
    case es256 = "ES256"
    case edDSA = "EdDSA"
}

/// A verification key pinned to one algorithm: a token signed with another algorithm never reaches it, so `alg:
/// none` and algorithm confusion (an RSA public key used as an HMAC secret) are impossible by construction.
public final class JWSVerificationKey: @unchecked Sendable {
    /// The key id (`kid`).
    public let id: String
    /// The only algorithm this key verifies.
    public let algorithm: JWSAlgorithm
    private let secret: [UInt8]
    private let publicKey: OpaquePointer?

    private init(id: String, algorithm: JWSAlgorithm, secret: [UInt8], publicKey: OpaquePointer?) {
        self.id = id
        self.algorithm = algorithm
        self.secret = secret
        self.publicKey = publicKey
    }

    deinit {
        if let publicKey = self.publicKey { EVP_PKEY_free(publicKey) }
    }

    /// An HS256 key. The secret must be at least 32 bytes (RFC 7518 section 3.2).
    public static func hmac(id: String, secret: [UInt8]) throws(AuthError) -> JWSVerificationKey {
        guard secret.count >= 32 else {
            throw AuthError(.configuration, "key \(id): an HS256 secret needs at least 32 bytes")
        }
        return JWSVerificationKey(id: id, algorithm: .hs256, secret: secret, publicKey: nil)
    }

    /// An RS256 key from its modulus and exponent (big-endian); at least 2048 bits.
    public static func rsa(id: String, modulus: [UInt8], exponent: [UInt8]) throws(AuthError) -> JWSVerificationKey {
        let key = try Self.fromData(id: id, type: "RSA") { builder in
            builder.push(number: "n", modulus) && builder.push(number: "e", exponent)
        }
        guard EVP_PKEY_get_bits(key) >= 2048 else {
            EVP_PKEY_free(key)
            throw AuthError(.configuration, "key \(id): RSA keys need at least 2048 bits")
        }
        return JWSVerificationKey(id: id, algorithm: .rs256, secret: [], publicKey: key)
    }

    /// An ES256 key from its P-256 point coordinates (32 bytes each).
    public static func p256(id: String, x: [UInt8], y: [UInt8]) throws(AuthError) -> JWSVerificationKey {
        guard x.count == 32, y.count == 32 else {
            throw AuthError(.configuration, "key \(id): P-256 coordinates are 32 bytes each")
        }
        let point = [0x04] + x + y
        let key = try Self.fromData(id: id, type: "EC") { builder in
            builder.push(text: "group", "prime256v1") && builder.push(octets: "pub", point)
        }
        return JWSVerificationKey(id: id, algorithm: .es256, secret: [], publicKey: key)
    }

    /// An EdDSA (Ed25519) key from its 32-byte public key.
    public static func ed25519(id: String, publicKey: [UInt8]) throws(AuthError) -> JWSVerificationKey {
        guard publicKey.count == 32,
            let key = EVP_PKEY_new_raw_public_key(chat_EVP_PKEY_ED25519(), nil, publicKey, publicKey.count)
        else {
            throw AuthError(.configuration, "key \(id): not an Ed25519 public key")
        }
        return JWSVerificationKey(id: id, algorithm: .edDSA, secret: [], publicKey: key)
    }

    private static func fromData(
        id: String,
        type: String,
        _ push: (ParameterBuilder) -> Bool
    ) throws(AuthError) -> OpaquePointer {
        guard let builder = ParameterBuilder() else { throw AuthError(.configuration, "out of memory") }
        guard push(builder), let params = OSSL_PARAM_BLD_to_param(builder.builder) else {
            throw AuthError(.configuration, "key \(id): invalid \(type) parameters")
        }
        defer { OSSL_PARAM_free(params) }
        guard let context = EVP_PKEY_CTX_new_from_name(nil, type, nil) else {
            throw AuthError(.configuration, "key \(id): no \(type) support")
        }
        defer { EVP_PKEY_CTX_free(context) }
        var key: OpaquePointer?
        guard EVP_PKEY_fromdata_init(context) == 1,
            EVP_PKEY_fromdata(context, &key, chat_EVP_PKEY_PUBLIC_KEY(), params) == 1,
            let key
        else {
            ERR_clear_error()
            throw AuthError(.configuration, "key \(id): invalid \(type) key")
        }
        return key
    }

    /// Checks a JWS signature over `signingInput` (`base64url(header) "." base64url(payload)`).
    ///
    /// - Returns: true only for a valid signature by this key with its algorithm.
    public func verify(signingInput: [UInt8], signature: [UInt8]) -> Bool {
        defer { ERR_clear_error() }
        switch self.algorithm {
        case .hs256:
            guard signature.count == 32 else { return false }
            var mac = [UInt8](repeating: 0, count: 32)
            var length: UInt32 = 0
            guard
                HMAC(
                    EVP_sha256(),
                    self.secret,
                    Int32(self.secret.count),
                    signingInput,
                    signingInput.count,
                    &mac,
                    &length
                )
                    != nil, length == 32
            else { return false }
            return CRYPTO_memcmp(mac, signature, 32) == 0
        case .rs256:
            return self.digestVerify(signingInput, signature, digest: EVP_sha256())
        case .es256:
            // JWS carries R || S (64 bytes); OpenSSL verifies DER.
            guard signature.count == 64, let der = Self.derSignature(signature) else { return false }
            return self.digestVerify(signingInput, der, digest: EVP_sha256())
        case .edDSA:
            guard signature.count == 64 else { return false }
            return self.digestVerify(signingInput, signature, digest: nil)
        }
    }

    private func digestVerify(_ input: [UInt8], _ signature: [UInt8], digest: OpaquePointer?) -> Bool {
        guard let key = self.publicKey, let context = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(context) }
        guard EVP_DigestVerifyInit(context, nil, digest, nil, key) == 1 else { return false }
        return EVP_DigestVerify(context, signature, signature.count, input, input.count) == 1
    }

    private static func derSignature(_ raw: [UInt8]) -> [UInt8]? {
        guard let signature = ECDSA_SIG_new() else { return nil }
        defer { ECDSA_SIG_free(signature) }
        let r = BN_bin2bn(raw, 32, nil)
        let s = raw.withUnsafeBufferPointer { BN_bin2bn($0.baseAddress! + 32, 32, nil) }
        guard let r, let s, ECDSA_SIG_set0(signature, r, s) == 1 else { return nil }
        var output: UnsafeMutablePointer<UInt8>?
        let length = i2d_ECDSA_SIG(signature, &output)
        guard length > 0, let output else { return nil }
        defer { CRYPTO_free(output, #fileID, #line) }
        return Array(UnsafeBufferPointer(start: output, count: Int(length)))
    }
}

/// An `OSSL_PARAM_BLD` that owns what it was given: OpenSSL keeps the pointers to names, values and numbers until
/// `OSSL_PARAM_BLD_to_param`, so they must outlive every push.
private final class ParameterBuilder {
    let builder: OpaquePointer
    private var allocations: [UnsafeMutableRawPointer] = []
    private var numbers: [OpaquePointer] = []

    init?() {
        guard let builder = OSSL_PARAM_BLD_new() else { return nil }
        self.builder = builder
    }

    deinit {
        OSSL_PARAM_BLD_free(self.builder)
        for number in self.numbers { BN_free(number) }
        for allocation in self.allocations { free(allocation) }
    }

    private func string(_ text: String) -> UnsafeMutablePointer<CChar> {
        let copy = strdup(text)!
        self.allocations.append(UnsafeMutableRawPointer(copy))
        return copy
    }

    func push(number name: String, _ bytes: [UInt8]) -> Bool {
        guard let number = BN_bin2bn(bytes, Int32(bytes.count), nil) else { return false }
        self.numbers.append(number)
        return OSSL_PARAM_BLD_push_BN(self.builder, self.string(name), number) == 1
    }

    func push(text name: String, _ value: String) -> Bool {
        OSSL_PARAM_BLD_push_utf8_string(self.builder, self.string(name), self.string(value), 0) == 1
    }

    func push(octets name: String, _ bytes: [UInt8]) -> Bool {
        let copy = malloc(max(bytes.count, 1))!
        self.allocations.append(copy)
        bytes.withUnsafeBytes { _ = memcpy(copy, $0.baseAddress!, bytes.count) }
        return OSSL_PARAM_BLD_push_octet_string(self.builder, self.string(name), copy, bytes.count) == 1
    }
}

/// The keys tokens may be signed with, by `kid`, loaded from a JWKS document (RFC 7517).
public struct JWKSet: Sendable {
    /// The keys, by id.
    public let keys: [String: JWSVerificationKey]

    /// Creates a set from keys.
    public init(keys: [JWSVerificationKey]) {
        self.keys = Dictionary(keys.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
    }

    /// Parses a JWKS document. Every key needs a `kid`; each is pinned to the algorithm its type implies (`oct`
    /// needs `"alg": "HS256"`), and a conflicting `alg` member is an error.
    public init(json: [UInt8]) throws(AuthError) {
        guard let document = try? JSONSerialization.jsonObject(with: Data(json)) as? [String: Any],
            let entries = document["keys"] as? [[String: Any]]
        else {
            throw AuthError(.configuration, "the key set is not a JWKS document")
        }
        var keys: [JWSVerificationKey] = []
        for entry in entries {
            guard let id = entry["kid"] as? String, !id.isEmpty else {
                throw AuthError(.configuration, "every key in the key set needs a kid")
            }
            func field(_ name: String) throws(AuthError) -> [UInt8] {
                guard let text = entry[name] as? String, let bytes = Base64URL.decode(Array(text.utf8)) else {
                    throw AuthError(.configuration, "key \(id): missing or invalid \(name)")
                }
                return bytes
            }
            let declared = entry["alg"] as? String
            let key: JWSVerificationKey
            switch (entry["kty"] as? String, entry["crv"] as? String) {
            case ("oct", _):
                guard declared == "HS256" else {
                    throw AuthError(.configuration, "key \(id): a symmetric key must declare alg HS256")
                }
                key = try .hmac(id: id, secret: try field("k"))
            case ("RSA", _):
                key = try .rsa(id: id, modulus: try field("n"), exponent: try field("e"))
            case ("EC", "P-256"):
                key = try .p256(id: id, x: try field("x"), y: try field("y"))
            case ("OKP", "Ed25519"):
                key = try .ed25519(id: id, publicKey: try field("x"))
            default:
                throw AuthError(.configuration, "key \(id): unsupported key type")
            }
            if let declared, declared != key.algorithm.rawValue {
                throw AuthError(.configuration, "key \(id): alg \(declared) does not fit its key type")
            }
            keys.append(key)
        }
        self.init(keys: keys)
    }
}
