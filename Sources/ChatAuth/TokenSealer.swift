internal import COpenSSL
internal import Foundation

/// Seals the page tokens and resume cursors chatd hands to clients: each is authenticated with HMAC-SHA256 under a
/// server key and bound to what it may be used for (the tenant, the caller and the query), so that a forged, altered,
/// truncated or borrowed token is recognised as such before anything in it is used.
///
/// A token is base64url of `version (1) | key id (1) | payload | MAC (16)`; the MAC covers the version, the key id,
/// the purpose, every binding and the payload. The payload is readable but meaningless to clients (they must treat
/// tokens as opaque); it holds positions, never content.
///
/// Keys rotate: the first key seals, every key opens. A token sealed under a key that was removed is refused as
/// stale.
public struct TokenSealer: Sendable {
    /// One key.
    public struct Key: Sendable, Hashable {
        /// 1 to 255, unique in the set.
        public let id: UInt8
        /// At least 32 bytes.
        public let secret: [UInt8]

        /// Creates a key.
        public init(id: UInt8, secret: [UInt8]) throws(SealError) {
            guard id != 0 else { throw SealError(.configuration, "token key ids are 1 to 255") }
            guard secret.count >= 32 else { throw SealError(.configuration, "a token key needs at least 32 bytes") }
            self.id = id
            self.secret = secret
        }
    }

    private static let version: UInt8 = 1
    private static let macLength = 16
    /// The longest token accepted, in bytes of text.
    public static let maxTokenBytes = 512

    /// The key that seals.
    public let current: Key
    private let keys: [UInt8: Key]

    /// How many keys open tokens (the sealing key included).
    public var keyCount: Int { self.keys.count }

    /// A sealer over `keys`; the first seals.
    public init(keys: [Key]) throws(SealError) {
        guard let first = keys.first else { throw SealError(.configuration, "no token keys") }
        var byID: [UInt8: Key] = [:]
        for key in keys {
            guard byID.updateValue(key, forKey: key.id) == nil else {
                throw SealError(.configuration, "token key id \(key.id) appears twice")
            }
        }
        self.current = first
        self.keys = byID
    }

    /// A sealer with one random key (tests; tokens then do not outlive the process).
    public static func random() -> TokenSealer {
        var secret = [UInt8](repeating: 0, count: 32)
        precondition(RAND_bytes(&secret, 32) == 1, "no randomness")
        // A fresh random 32-byte key always makes a valid sealer.
        return try! TokenSealer(keys: [Key(id: 1, secret: secret)])
    }

    /// Reads a key file: one key per line, `<id> <secret in base64>`, the sealing key first; blank lines and lines
    /// starting with `#` are ignored.
    public init(keyFile text: String) throws(SealError) {
        var keys: [Key] = []
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            let parts = trimmed.split(separator: " ", omittingEmptySubsequences: true)
            guard parts.count == 2, let id = UInt8(parts[0]), let secret = Data(base64Encoded: String(parts[1])) else {
                throw SealError(.configuration, "token key file line \(number + 1): expected \"<id 1-255> <base64>\"")
            }
            keys.append(try Key(id: id, secret: Array(secret)))
        }
        try self.init(keys: keys)
    }

    /// Seals `payload` for `purpose` and `binding` (what must match when it is opened).
    public func seal(_ payload: [UInt8], purpose: String, binding: [String]) -> String {
        var token: [UInt8] = [Self.version, self.current.id]
        token += payload
        token += Self.mac(self.current, header: [Self.version, self.current.id], purpose, binding, payload)
        return Base64URL.encode(token)
    }

    /// Opens a token: its payload when it was sealed by this server, under a key it still has, for the same
    /// purpose and binding.
    public func open(_ token: String, purpose: String, binding: [String]) throws(SealError) -> [UInt8] {
        guard token.utf8.count <= Self.maxTokenBytes else {
            throw SealError(.malformed, "longer than \(Self.maxTokenBytes) bytes")
        }
        guard let bytes = Base64URL.decode(Array(token.utf8)), bytes.count >= 2 + Self.macLength,
            bytes[0] == Self.version
        else {
            throw SealError(.malformed, "not a token from this server (or truncated)")
        }
        guard let key = self.keys[bytes[1]] else {
            throw SealError(.staleKey, "sealed with a key this server no longer has; start again without it")
        }
        let payload = Array(bytes[2..<(bytes.count - Self.macLength)])
        let expected = Self.mac(key, header: [bytes[0], bytes[1]], purpose, binding, payload)
        let received = Array(bytes.suffix(Self.macLength))
        guard CRYPTO_memcmp(expected, received, Self.macLength) == 0 else {
            throw SealError(.forged, "not valid for this caller and query (altered, or issued to another)")
        }
        return payload
    }

    private static func mac(
        _ key: Key,
        header: [UInt8],
        _ purpose: String,
        _ binding: [String],
        _ payload: [UInt8]
    ) -> [UInt8] {
        // Length-prefixed fields: no two different (purpose, binding, payload) give the same input.
        var input: [UInt8] = Array("chat-seal".utf8) + header
        for field in [Array(purpose.utf8)] + binding.map({ Array($0.utf8) }) + [payload] {
            let length = UInt32(field.count)
            input += [
                UInt8(length >> 24), UInt8(truncatingIfNeeded: length >> 16),
                UInt8(truncatingIfNeeded: length >> 8), UInt8(truncatingIfNeeded: length),
            ]
            input += field
        }
        var mac = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        _ = HMAC(EVP_sha256(), key.secret, Int32(key.secret.count), input, input.count, &mac, &length)
        return Array(mac.prefix(Self.macLength))
    }
}

/// Why a token could not be opened (or a key set not loaded).
public struct SealError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Kind: Hashable, Sendable {
        /// Not one of ours: bad encoding, wrong version, too short or too long.
        case malformed
        /// Sealed under a key that is no longer configured.
        case staleKey
        /// The MAC does not match: altered, or sealed for another caller, tenant or query.
        case forged
        /// The key set is unusable.
        case configuration
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { self.message }
}

/// SHA-256.
public enum SHA256Digest {
    /// The digest of `bytes`.
    public static func hash(_ bytes: [UInt8]) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: 32)
        _ = SHA256(bytes, bytes.count, &digest)
        return digest
    }
}
