import ChatAuth
import ChatClient
import ChatProto
import ChatRPC
import ChatServices
import ChatStoreTestSupport
import ChatTestSupport
import Foundation
import Testing

@Suite("chatctl against a real server, as in the README walkthrough")
struct CLITests {
    /// The chatctl binary next to the test bundle.
    static let chatctl = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        .appendingPathComponent("chatctl").path

    @Test("mint a token, create a thread, send, list, edit, read, delete, with human output and --json")
    func walkthrough() async throws {
        let key = try await ChatctlKey.make("chatctl")
        defer { key.remove() }
        let harness = try await ServiceHarness(extraKeys: key.trusted)
        let token = try await key.mint(sub: "guardian-9", role: "guardian", extra: ["--learner", Fixture.learnerA1])
        let tls = ProcessInfo.processInfo.environment["CHAT_TEST_TLS_DIR"] ?? ""
        // A generous deadline: the whole suite runs in parallel on two cores.
        let common = [
            "--address", "127.0.0.1:\(harness.port)", "--ca", "\(tls)/ca.pem", "--token", token, "--timeout", "120",
        ]
        func chatctl(_ arguments: [String]) async throws -> String {
            let result = try await runProgram(Self.chatctl, arguments + common)
            #expect(result.status == 0, "chatctl \(arguments.joined(separator: " ")): \(result.output)")
            return result.output
        }
        func object(_ text: String) throws -> [String: Any] {
            try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] ?? [:]
        }

        let created = try object(
            try await chatctl(["threads", "create", "--learner", Fixture.learnerA1, "--title", "Reading", "--json"])
        )
        let thread = created["id"] as? String ?? ""
        #expect(created["title"] as? String == "Reading")
        #expect(try await chatctl(["messages", "send", thread, "--body", "Chapter 4 tonight?"]).contains("#1"))
        #expect(
            try await chatctl(["messages", "send", thread, "--body", "Yes!", "--idempotency-key", "k-2"]).contains("#2")
        )
        let listed = try await chatctl(["messages", "list", thread, "--json"]).split(separator: "\n").map {
            try object(String($0))
        }
        #expect(listed.map { $0["seq"] as? Int } == [2, 1])
        // Roles print as tokens and the database name them.
        #expect(listed.map { ($0["author"] as? [String: Any])?["role"] as? String } == ["guardian", "guardian"])
        #expect(try await chatctl(["messages", "list", thread, "--after", "0"]).contains("Chapter 4 tonight?"))
        #expect(
            try await chatctl(["messages", "edit", thread, "1", "--body", "Chapter 5 tonight?"]).contains("edited 1x")
        )
        // The live stream replays the thread (each message as it is now) and exits after --max-events.
        let watched = try await chatctl(["watch", "thread", thread, "--max-events", "2"])
        #expect(watched.contains("[1 created]") == false && watched.contains("Chapter 5 tonight?"))
        #expect(watched.contains("edited") && watched.contains("Yes!"))
        #expect(try await chatctl(["messages", "read", thread, "--up-to", "2"]).contains("0 unread"))
        #expect(try await chatctl(["messages", "delete", thread, "2"]).contains("[deleted by guardian-9]"))
        #expect(try await chatctl(["threads", "list"]).contains("Reading"))
        #expect(try await chatctl(["threads", "update", thread, "--archive"]).contains("archived"))
        #expect(try await chatctl(["threads", "get", thread, "--json"]).contains("\"state\":\"archived\""))

        // Errors come back as a clear message and a non-zero exit.
        let refused = try await runProgram(Self.chatctl, ["threads", "delete", thread] + common)
        #expect(refused.status != 0 && refused.output.contains("threads.delete"), "\(refused.output)")
        let invalid = try await runProgram(Self.chatctl, ["messages", "send", thread, "--body", ""] + common)
        #expect(invalid.status != 0 && invalid.output.contains("body"), "\(invalid.output)")
        try await harness.stop()
    }
}

@Suite("Rate limiting over RPC")
struct RateLimitTests {
    @Test("a principal over budget gets RESOURCE_EXHAUSTED with retry-after; others are unaffected")
    func limited() async throws {
        let harness = try await ServiceHarness(
            // A refill so slow it cannot matter however loaded the machine is: five calls, then refused.
            rateLimit: .init(perPrincipal: (0.01, 5), perService: (0.01, 5), perTenant: (100, 100))
        )
        // The refusal itself is under test: no retries.
        let admin = try harness.client(.tenantAdmin, retry: RetryPolicy(maxAttempts: 1))
        let other = try harness.client(.tenantAdmin, user: "other", retry: RetryPolicy(maxAttempts: 1))
        var limited: RPCError?
        for _ in 0..<6 {
            do {
                _ = try await admin.listThreads(ListThreadsRequest())
            } catch let error as RPCError {
                limited = error
            }
        }
        #expect(limited?.code == .resourceExhausted)
        #expect(limited?.notProcessed == true)
        let retryAfter = limited?.details.compactMap {
            if case .retryInfo(let info)? = $0.detail { info.retryAfterMs } else { nil }
        }.first
        #expect(retryAfter != nil && retryAfter! > 0 && retryAfter! <= 100_000)
        #expect(
            limited?.details.contains {
                if case .quotaFailure(let q)? = $0.detail { q.subject == "principal" } else { false }
            } == true
        )
        _ = try await other.listThreads(ListThreadsRequest())
        await admin.close()
        await other.close()
        try await harness.stop()
    }
}
