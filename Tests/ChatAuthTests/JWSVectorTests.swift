import Testing

@testable import ChatAuth

/// Published test vectors: RFC 7515 appendix A.1 (HS256), A.2 (RS256), A.3 (ES256), and RFC 8037 appendix A.4
/// (EdDSA with Ed25519).
enum Vectors {
    static let payloadA =
        "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"

    static let hs256Key = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"
    static let hs256Token =
        "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9." + payloadA + ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"

    static let rsaN =
        "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMs"
        + "D1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdV"
        + "MTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ"
    static let rs256Token =
        "eyJhbGciOiJSUzI1NiJ9." + payloadA
        + ".cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dn"
        + "ZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eO"
        + "kHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw"

    static let ecX = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"
    static let ecY = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
    static let es256Token =
        "eyJhbGciOiJFUzI1NiJ9." + payloadA
        + ".DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"

    static let edX = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    static let edDSAToken =
        "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc."
        + "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"

    static func bytes(_ text: String) -> [UInt8] { Base64URL.decode(Array(text.utf8))! }

    static func keys() throws -> [(JWSVerificationKey, String)] {
        [
            (try .hmac(id: "a1", secret: bytes(hs256Key)), hs256Token),
            (try .rsa(id: "a2", modulus: bytes(rsaN), exponent: bytes("AQAB")), rs256Token),
            (try .p256(id: "a3", x: bytes(ecX), y: bytes(ecY)), es256Token),
            (try .ed25519(id: "a4", publicKey: bytes(edX)), edDSAToken),
        ]
    }

    /// Splits a compact JWS into signing input and signature.
    static func split(_ token: String) -> ([UInt8], [UInt8]) {
        let last = token.lastIndex(of: ".")!
        return (Array(token[..<last].utf8), bytes(String(token[token.index(after: last)...])))
    }
}

@Suite("JWS signature verification with OpenSSL EVP")
struct JWSVectorTests {
    @Test("the published vectors verify")
    func vectorsVerify() throws {
        for (key, token) in try Vectors.keys() {
            let (input, signature) = Vectors.split(token)
            #expect(key.verify(signingInput: input, signature: signature), "\(key.algorithm)")
        }
    }

    @Test("one flipped bit in the header, the payload or the signature fails")
    func flippedBits() throws {
        for (key, token) in try Vectors.keys() {
            let (input, signature) = Vectors.split(token)
            let dot = input.firstIndex(of: UInt8(ascii: "."))!
            for position in [0, dot - 1, dot + 1, input.count - 1] {
                var tampered = input
                tampered[position] ^= 0x01
                #expect(!key.verify(signingInput: tampered, signature: signature), "\(key.algorithm) input \(position)")
            }
            for position in [0, signature.count / 2, signature.count - 1] {
                var tampered = signature
                tampered[position] ^= 0x80
                #expect(!key.verify(signingInput: input, signature: tampered), "\(key.algorithm) signature \(position)")
            }
            #expect(!key.verify(signingInput: input, signature: []))
            #expect(!key.verify(signingInput: input, signature: signature + [0]))
        }
    }

    @Test("a key verifies only its own algorithm's signatures")
    func crossAlgorithm() throws {
        let keys = try Vectors.keys()
        for (key, _) in keys {
            for (other, token) in keys where other.algorithm != key.algorithm {
                let (input, signature) = Vectors.split(token)
                #expect(
                    !key.verify(signingInput: input, signature: signature),
                    "\(key.algorithm) vs \(other.algorithm)"
                )
            }
        }
    }

    @Test("the JWKS document loads every key type, pinned to its algorithm")
    func jwks() throws {
        let json = """
            {"keys": [
              {"kty": "oct", "kid": "a1", "alg": "HS256", "k": "\(Vectors.hs256Key)"},
              {"kty": "RSA", "kid": "a2", "n": "\(Vectors.rsaN)", "e": "AQAB"},
              {"kty": "EC", "kid": "a3", "crv": "P-256", "x": "\(Vectors.ecX)", "y": "\(Vectors.ecY)"},
              {"kty": "OKP", "kid": "a4", "crv": "Ed25519", "x": "\(Vectors.edX)", "alg": "EdDSA"}
            ]}
            """
        let set = try JWKSet(json: Array(json.utf8))
        #expect(set.keys["a1"]?.algorithm == .hs256)
        #expect(set.keys["a2"]?.algorithm == .rs256)
        #expect(set.keys["a3"]?.algorithm == .es256)
        #expect(set.keys["a4"]?.algorithm == .edDSA)
        // An oct key must say HS256; an alg that does not fit the key type is refused; small RSA keys are refused.
        for bad in [
            #"{"keys": [{"kty": "oct", "kid": "x", "k": "\#(Vectors.hs256Key)"}]}"#,
            #"{"keys": [{"kty": "RSA", "kid": "x", "alg": "HS256", "n": "\#(Vectors.rsaN)", "e": "AQAB"}]}"#,
            #"{"keys": [{"kty": "RSA", "kid": "x", "n": "AQAB", "e": "AQAB"}]}"#,
            #"{"keys": [{"kty": "EC", "kid": "x", "crv": "P-256", "x": "AQAB", "y": "AQAB"}]}"#,
            #"{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "\#(Vectors.edX)"}]}"#,
            #"{"keys": [{"kty": "oct", "kid": "x", "alg": "HS256", "k": "c2hvcnQ"}]}"#,
            "not json",
        ] {
            #expect(throws: AuthError.self, "\(bad)") { try JWKSet(json: Array(bad.utf8)) }
        }
    }

    @Test("base64url is strict")
    func base64url() {
        #expect(Base64URL.decode(Array("AQAB".utf8)) == [1, 0, 1])
        #expect(Base64URL.decode(Array("AQA=".utf8)) == nil)  // padding
        #expect(Base64URL.decode(Array("AQ+B".utf8)) == nil)  // standard alphabet
        #expect(Base64URL.decode(Array("A".utf8)) == nil)  // impossible length
        #expect(Base64URL.decode(Array("AR".utf8)) == nil)  // non-canonical trailing bits
        for length in 0..<40 {
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            #expect(Base64URL.decode(Array(Base64URL.encode(bytes).utf8)) == bytes)
        }
    }
}
