import ChatStore
import Testing

@testable import ChatServices

@Suite("Export resume tokens")
struct ExportTokenTests {
    static let audit = "0e000000-0000-4000-8000-0000000000aa"
    static let learner = "a1000000-0000-4000-8000-000000000011"
    static let thread = "7e000000-0000-4000-8000-000000000001"

    @Test(
        "every position survives the text form",
        arguments: [
            ExportPosition.start,
            .threads(after: Self.thread),
            .thread(Self.thread),
            .message(thread: Self.thread, seq: 1),
            .edits(thread: Self.thread, seq: 9_000_000_000),
            .readCursors(after: nil),
            .readCursors(after: .init(threadID: Self.thread, userID: "guardian|with|bars")),
            .audits(after: nil),
            .audits(after: .init(startedAtMicros: 1_790_000_000_123_456, id: Self.audit)),
            .done,
        ]
    )
    func roundTrip(_ position: ExportPosition) {
        let token = ExportToken(auditID: Self.audit, learnerID: Self.learner, records: 12_345, position: position)
        #expect(ExportToken(text: token.text) == token)
        // The helper below encodes as the server does, so the refusals test what they mean to.
        #expect(ExportToken(text: Base64Text.of("x1|\(Self.audit)|\(Self.learner)|12345|D")) != nil)
    }

    @Test(
        "anything else is refused",
        arguments: [
            "", "not base64!", "eDE", Base64Text.of("x2|\(audit)|\(learner)|1|D"),
            Base64Text.of("x1|\(audit)|\(learner)|-1|D"), Base64Text.of("x1|\(audit)|not-a-uuid|1|D"),
            Base64Text.of("x1|\(audit)|\(learner)|1|M|\(thread)|0"),
            Base64Text.of("x1|\(audit)|\(learner)|1|M|\(thread)"),
            Base64Text.of("x1|\(audit)|\(learner)|1|C|\(thread)|"), Base64Text.of("x1|\(audit)|\(learner)|1|D|extra"),
            Base64Text.of("x1|\(audit)|\(learner)|1|Q|x"),
            Base64Text.of("x1|\(audit)|\(learner)|1|T|\(thread.uppercased())"),
        ]
    )
    func refused(_ text: String) {
        #expect(ExportToken(text: text) == nil)
    }
}

enum Base64Text {
    static func of(_ plain: String) -> String { base64url(Array(plain.utf8)) }

    static func base64url(_ bytes: [UInt8]) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        var out = ""
        var index = 0
        while index < bytes.count {
            let chunk = Array(bytes[index..<min(index + 3, bytes.count)])
            let value = chunk.enumerated().reduce(0) { $0 | Int($1.element) << (16 - 8 * $1.offset) }
            for position in 0..<(chunk.count + 1) { out.append(alphabet[(value >> (18 - 6 * position)) & 63]) }
            index += 3
        }
        return out
    }
}
