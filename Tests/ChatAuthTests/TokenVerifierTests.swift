import ChatDomain
import ChatProto
import ChatTestSupport
import Foundation
import Testing

@testable import ChatAuth

let tenant = "a0000000-0000-4000-8000-000000000001"
let learner = "a1000000-0000-4000-8000-000000000011"
let now: Int64 = 1_800_000_000

/// Claims that the verifier accepts at `now`.
func goodClaims() -> [String: any Sendable] {
    [
        "iss": "https://id.example.org", "aud": "chatd", "sub": "guardian-7", "tenant_id": tenant,
        "role": "guardian", "learner_scope": [learner], "exp": now + 600, "nbf": now - 10,
    ]
}

struct Keys {
    let hmac = JWSSigningKey.hmac(id: "hs", secret: Array("0123456789abcdef0123456789abcdef".utf8))
    let ed: JWSSigningKey
    let verifier: TokenVerifier

    init() throws {
        self.ed = try JWSSigningKey.generateEd25519(id: "ed")
        let rsa = try JWSVerificationKey.rsa(
            id: "rsa",
            modulus: Vectors.bytes(Vectors.rsaN),
            exponent: Vectors.bytes("AQAB")
        )
        self.verifier = TokenVerifier(
            keys: JWKSet(keys: [try self.hmac.verificationKey(), try self.ed.verificationKey(), rsa]),
            issuer: "https://id.example.org",
            audience: "chatd",
            leewaySeconds: 30
        )
    }
}

func expectRefused(_ verifier: TokenVerifier, _ token: String, _ reason: String, at time: Int64 = now) {
    #expect(throws: AuthError.self, "\(reason)") { try verifier.verify(token, now: time) }
}

@Suite("Bearer token verification")
struct TokenVerifierTests {
    @Test("a valid token, HS256 or EdDSA, gives its claims")
    func valid() throws {
        let keys = try Keys()
        for key in [keys.hmac, keys.ed] {
            let claims = try keys.verifier.verify(try key.sign(claims: goodClaims()), now: now)
            #expect(claims.subject == "guardian-7" && claims.tenantID == tenant && claims.role == .guardian)
            #expect(claims.learnerScope == [learner])
        }
        var audiences = goodClaims()
        audiences["aud"] = ["other", "chatd"]
        #expect(try keys.verifier.verify(try keys.ed.sign(claims: audiences), now: now).subject == "guardian-7")
    }

    @Test("expired, not yet valid, wrong issuer, wrong audience: refused (with leeway)")
    func registeredClaims() throws {
        let keys = try Keys()
        let token = try keys.ed.sign(claims: goodClaims())
        expectRefused(keys.verifier, token, "expired", at: now + 600 + 31)
        #expect(try keys.verifier.verify(token, now: now + 600 + 29).subject == "guardian-7")  // within leeway
        expectRefused(keys.verifier, token, "not yet valid", at: now - 10 - 31)
        for (claim, value) in [("iss", "https://evil.example.org"), ("aud", "another-service")] as [(String, String)] {
            var claims = goodClaims()
            claims[claim] = value
            expectRefused(keys.verifier, try keys.ed.sign(claims: claims), claim)
        }
        for missing in ["exp", "iss", "aud", "sub", "tenant_id", "role"] {
            var claims = goodClaims()
            claims.removeValue(forKey: missing)
            expectRefused(keys.verifier, try keys.ed.sign(claims: claims), "missing \(missing)")
        }
        for (claim, value) in [
            ("exp", "tomorrow"), ("tenant_id", "not-a-uuid"), ("role", "superuser"), ("learner_scope", "all"),
        ] as [(String, any Sendable)] {
            var claims = goodClaims()
            claims[claim] = value
            expectRefused(keys.verifier, try keys.ed.sign(claims: claims), "bad \(claim)")
        }
    }

    @Test("unknown kid, alg none, and HS256 signed with the RSA public key as the secret: refused")
    func confusion() throws {
        let keys = try Keys()
        let payload = Base64URL.encode(try JSONSerialization.data(withJSONObject: goodClaims()))
        // Unknown kid.
        expectRefused(
            keys.verifier,
            try JWSSigningKey.hmac(id: "nope", secret: Array(repeating: 1, count: 32)).sign(claims: goodClaims()),
            "kid"
        )
        // alg none, with and without a signature.
        let none = Base64URL.encode(Array(#"{"alg":"none","kid":"hs"}"#.utf8))
        expectRefused(keys.verifier, none + "." + payload + ".", "none, empty signature")
        expectRefused(keys.verifier, none + "." + payload + ".AAAA", "none")
        // Algorithm confusion: HS256 in the header, the RSA key's kid, HMAC keyed with the public modulus.
        let header = Base64URL.encode(Array(#"{"alg":"HS256","kid":"rsa"}"#.utf8))
        let forger = JWSSigningKey.hmac(id: "rsa", secret: Vectors.bytes(Vectors.rsaN))
        let forged = header + "." + payload
        let signature = try forger.signature(Array(forged.utf8))
        expectRefused(keys.verifier, forged + "." + Base64URL.encode(signature), "HS256 with an RSA key")
        // EdDSA header on the HMAC key.
        let edHeader = Base64URL.encode(Array(#"{"alg":"EdDSA","kid":"hs"}"#.utf8))
        expectRefused(
            keys.verifier,
            edHeader + "." + payload + "." + Base64URL.encode([UInt8](repeating: 0, count: 64)),
            "EdDSA on HS"
        )
        // Critical headers are refused.
        let crit = Base64URL.encode(Array(#"{"alg":"HS256","kid":"hs","crit":["exp"]}"#.utf8))
        let critInput = crit + "." + payload
        expectRefused(
            keys.verifier,
            critInput + "." + Base64URL.encode(try keys.hmac.signature(Array(critInput.utf8))),
            "crit"
        )
    }

    @Test("one flipped bit anywhere in a real token: refused")
    func tampered() throws {
        let keys = try Keys()
        let token = Array(try keys.ed.sign(claims: goodClaims()).utf8)
        for position in stride(from: 0, to: token.count, by: 7) where token[position] != UInt8(ascii: ".") {
            var tampered = token
            tampered[position] ^= 0x01
            let text = String(decoding: tampered, as: UTF8.self)
            #expect(throws: AuthError.self, "position \(position)") { try keys.verifier.verify(text, now: now) }
        }
    }

    @Test("malformed and oversized tokens are refused, never crash")
    func malformed() throws {
        let keys = try Keys()
        for token in [
            "", ".", "..", "a.b", "a.b.c.d", "!!!.???.###", "eyJ.eyJ.eyJ", String(repeating: "A", count: 9000),
        ] {
            expectRefused(keys.verifier, token, token.prefix(20).description)
        }
        var generator = SplitMix64(seed: 7)
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ {}\"".utf8)
        for _ in 0..<5_000 {
            let length = Int(generator.next() % 300)
            let bytes = (0..<length).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] }
            #expect(throws: AuthError.self) {
                try keys.verifier.verify(String(decoding: bytes, as: UTF8.self), now: now)
            }
        }
        // Structurally valid JWS whose header and payload are random JSON-ish bytes.
        for _ in 0..<2_000 {
            let header = Base64URL.encode(
                (0..<Int(generator.next() % 40)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            )
            let payload = Base64URL.encode(
                (0..<Int(generator.next() % 80)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            )
            #expect(throws: AuthError.self) { try keys.verifier.verify(header + "." + payload + ".AAAA", now: now) }
        }
    }

    @Test("error messages never contain the token")
    func noLeak() throws {
        let keys = try Keys()
        let token = try keys.ed.sign(claims: goodClaims())
        do {
            _ = try keys.verifier.verify(token, now: now + 10_000)
            Issue.record("an expired token was accepted")
        } catch {
            #expect(!error.message.contains(token.prefix(20)))
            #expect(!error.description.contains("eyJ"))
        }
    }

    @Test("the permissions claim narrows the role, never widens it")
    func permissions() throws {
        let keys = try Keys()
        var claims = goodClaims()
        claims["permissions"] = ["messages.read", "privacy.erase"]
        let principal = Principal(claims: try keys.verifier.verify(try keys.ed.sign(claims: claims), now: now))
        #expect(principal.permissions == [.messagesRead])
        let full = Principal(claims: try keys.verifier.verify(try keys.ed.sign(claims: goodClaims()), now: now))
        #expect(full.permissions == AuthorizationTable.rolePermissions[.guardian])
        #expect(full.hasInScope(learner) && !full.hasInScope("b1000000-0000-4000-8000-000000000021"))
    }
}

@Suite("Verified-token cache")
struct VerifiedTokensTests {
    @Test("a cached token is answered only until it expires (plus leeway); a full cache starts over")
    func expiry() throws {
        let keys = try Keys()
        let token = try keys.hmac.sign(claims: goodClaims())
        let claims = try keys.verifier.verify(token, now: now)
        let cache = VerifiedTokens(capacity: 2)
        #expect(cache.claims(for: token, now: now, leeway: 30, generation: 0) == nil)
        cache.insert(token, claims, generation: 0)
        #expect(cache.claims(for: token, now: now + 600 + 30, leeway: 30, generation: 0) == claims)
        #expect(
            cache.claims(for: token, now: now + 600 + 31, leeway: 30, generation: 0) == nil,
            "expired: verify again"
        )
        #expect(cache.claims(for: token, now: now, leeway: 30, generation: 0) == nil, "and it was dropped")
        cache.insert("a", claims, generation: 0)
        cache.insert("b", claims, generation: 0)
        cache.insert("c", claims, generation: 0)
        #expect(
            cache.claims(for: "a", now: now, leeway: 30, generation: 0) == nil
                && cache.claims(for: "c", now: now, leeway: 30, generation: 0) != nil
        )
        // New keys (a new generation): nothing verified under the old ones is answered, and a late insert of an
        // old-generation verification is not kept.
        #expect(cache.claims(for: "c", now: now, leeway: 30, generation: 1) == nil)
        cache.insert("d", claims, generation: 0)
        #expect(cache.claims(for: "d", now: now, leeway: 30, generation: 1) == nil)
        cache.insert("e", claims, generation: 1)
        #expect(cache.claims(for: "e", now: now, leeway: 30, generation: 1) == claims)
    }
}
