import ChatAuth
import Foundation
import Testing

@Suite("Sealed tokens: authenticated, bound, rotatable")
struct TokenSealerTests {
    static let one = try! TokenSealer.Key(id: 1, secret: Array(repeating: 1, count: 32))
    static let two = try! TokenSealer.Key(id: 2, secret: Array(repeating: 2, count: 32))

    @Test("a token opens only for the purpose and binding it was sealed for")
    func binding() throws {
        let sealer = try TokenSealer(keys: [Self.one])
        let token = sealer.seal(Array("p|1".utf8), purpose: "threads", binding: ["tenant-a", "user-1", "q"])
        #expect(try sealer.open(token, purpose: "threads", binding: ["tenant-a", "user-1", "q"]) == Array("p|1".utf8))
        for (purpose, binding) in [
            ("threads", ["tenant-a", "user-2", "q"]), ("threads", ["tenant-b", "user-1", "q"]),
            ("threads", ["tenant-a", "user-1", "other"]), ("messages", ["tenant-a", "user-1", "q"]),
            // Length-prefixed: moving a separator between fields does not collide.
            ("threads", ["tenant-a", "user-1q", ""]),
        ] {
            #expect(throws: SealError(.forged, "not valid for this caller and query (altered, or issued to another)")) {
                try sealer.open(token, purpose: purpose, binding: binding)
            }
        }
    }

    @Test("altered, truncated, padded, overlong or foreign text is refused with its reason")
    func tampering() throws {
        let sealer = try TokenSealer(keys: [Self.one])
        let token = sealer.seal(Array("e1.5.9".utf8), purpose: "inbox", binding: ["t", "u", ""])
        var bytes = Array(token.utf8)
        bytes[4] = bytes[4] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        let cases: [(String, SealError.Kind)] = [
            (String(decoding: bytes, as: UTF8.self), .forged),
            (String(token.dropLast(4)), .forged),
            (String(token.prefix(10)), .malformed),
            (token + "=", .malformed),
            ("", .malformed),
            ("e1.5.9", .malformed),
            (String(repeating: "A", count: 600), .malformed),
        ]
        for (text, kind) in cases {
            #expect(throws: SealError.self) { try sealer.open(text, purpose: "inbox", binding: ["t", "u", ""]) }
            do {
                _ = try sealer.open(text, purpose: "inbox", binding: ["t", "u", ""])
            } catch {
                #expect(error.kind == kind, "\(text): \(error)")
            }
        }
    }

    @Test("rotation: the first key seals, every key opens; a removed key's tokens are stale")
    func rotation() throws {
        let old = try TokenSealer(keys: [Self.one])
        let token = old.seal([1, 2, 3], purpose: "p", binding: [])
        let rotated = try TokenSealer(keys: [Self.two, Self.one])
        #expect(try rotated.open(token, purpose: "p", binding: []) == [1, 2, 3])
        let fresh = rotated.seal([4], purpose: "p", binding: [])
        #expect(try rotated.open(fresh, purpose: "p", binding: []) == [4])
        #expect(throws: SealError.self) { try old.open(fresh, purpose: "p", binding: []) }
        let retired = try TokenSealer(keys: [Self.two])
        do {
            _ = try retired.open(token, purpose: "p", binding: [])
            Issue.record("a token of a removed key opened")
        } catch {
            #expect(error.kind == .staleKey)
        }
    }

    @Test("key files: ids and secrets checked, comments allowed, the first line seals")
    func keyFile() throws {
        let text = """
            # rotated 2026-12-01
            2 \(Data(repeating: 2, count: 32).base64EncodedString())

            1 \(Data(repeating: 1, count: 32).base64EncodedString())
            """
        let sealer = try TokenSealer(keyFile: text)
        #expect(sealer.current.id == 2)
        for bad in [
            "", "# nothing", "0 \(Data(repeating: 1, count: 32).base64EncodedString())",
            "1 \(Data(repeating: 1, count: 16).base64EncodedString())", "1 not-base64!", "x y",
            "1 \(Data(repeating: 1, count: 32).base64EncodedString())\n1 \(Data(repeating: 2, count: 32).base64EncodedString())",
        ] {
            #expect(throws: SealError.self, "\(bad)") { try TokenSealer(keyFile: bad) }
        }
    }
}
