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
        // The refusals below differ from this accepted form in one respect each.
        #expect(ExportToken(text: "x1|\(Self.audit)|\(Self.learner)|12345|D") != nil)
    }

    @Test(
        "anything else is refused",
        arguments: [
            "", "x1", "x1|", "x2|\(audit)|\(learner)|1|D",
            "x1|\(audit)|\(learner)|-1|D", "x1|\(audit)|not-a-uuid|1|D",
            "x1|\(audit)|\(learner)|1|M|\(thread)|0",
            "x1|\(audit)|\(learner)|1|M|\(thread)",
            "x1|\(audit)|\(learner)|1|C|\(thread)|", "x1|\(audit)|\(learner)|1|D|extra",
            "x1|\(audit)|\(learner)|1|Q|x",
            "x1|\(audit)|\(learner)|1|T|\(thread.uppercased())",
        ]
    )
    func refused(_ text: String) {
        #expect(ExportToken(text: text) == nil)
    }
}
