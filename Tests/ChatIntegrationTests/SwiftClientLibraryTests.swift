import ChatClient
import ChatProto
import ChatRPCCore
import ChatStoreTestSupport
import ChatTLS
import ChatTestSupport
import Foundation
import Testing

/// ChatClient as the library product other packages depend on: several endpoints (round robin, failover), a stream
/// that resumes on another instance with every event once, retries under the budget, and the example package
/// (clients/swift/Example, built by scripts/test) run against chatd.
@Suite("The Swift client library against chatd instances")
struct SwiftClientLibraryTests {
    static let unlimited = ["--rate-per-user", "100000", "--rate-per-tenant", "100000"]

    static func tls() throws -> TLSContext {
        let directory = ProcessInfo.processInfo.environment["CHAT_TEST_TLS_DIR"] ?? ""
        return try TLSContext(configuration: .client(trustRoots: "\(directory)/ca.pem"))
    }

    static func endpoint(_ instance: ChatdProcess) -> Endpoint { Endpoint(host: "127.0.0.1", port: instance.port) }

    /// The body and seq of the next message event (heads and heartbeats skipped).
    static func nextMessage(
        _ events: inout ResumingStream<WatchThreadRequest, WatchThreadResponse>.AsyncIterator
    ) async throws -> (body: String, seq: UInt64)? {
        while let response = try await events.next() {
            if case .message(let event)? = response.event?.event, let message = event.message {
                return (message.body, response.event?.seq ?? 0)
            }
        }
        return nil
    }

    @Test(
        "two instances: new connections go round robin; kill -9 of the one in use: calls fail over, a resuming WatchThread continues on the other, every message exactly once"
    )
    func failover() async throws {
        let first = try await ChatdProcess.start(arguments: Self.unlimited)
        let second = try await ChatdProcess.startSibling(of: first, arguments: Self.unlimited)
        let token = try await first.token(role: "tenant_admin", sub: "swift-failover")
        let endpoints = [Self.endpoint(first), Self.endpoint(second)]
        let client = ChatClient(endpoints: endpoints, tls: try Self.tls(), authorization: token)

        // Round robin: each new connection goes to the next endpoint.
        _ = try await client.healthCheck(HealthCheckRequest())
        let one = try #require(client.connectedEndpoint)
        await client.close()
        _ = try await client.healthCheck(HealthCheckRequest())
        let two = try #require(client.connectedEndpoint)
        #expect(one != two, "two connections in a row went to \(one)")
        #expect(Set([one, two]) == Set(endpoints))

        let created = try await client.createThread(CreateThreadRequest(learnerId: Fixture.learnerA1, title: "fo"))
        let thread = try #require(created.thread?.id)
        var events = client.watchThreadResuming(WatchThreadRequest(threadId: thread)).makeAsyncIterator()
        guard case .head? = try await events.next()?.event?.event else {
            Issue.record("the stream did not start with its head")
            return
        }
        for index in 1...10 {
            _ = try await client.sendMessage(SendMessageRequest(threadId: thread, body: "m\(index)"))
        }
        for index in 1...10 {
            let event = try #require(try await Self.nextMessage(&events))
            #expect(event.body == "m\(index)" && event.seq == UInt64(index), "\(event)")
        }

        // The instance in use dies; the other one takes over.
        let inUse = try #require(client.connectedEndpoint)
        let (down, up) = inUse == Self.endpoint(first) ? (first, second) : (second, first)
        kill(down.pid, SIGKILL)
        _ = try await down.wait()
        for index in 11...20 {
            _ = try await client.sendMessage(
                SendMessageRequest(threadId: thread, body: "m\(index)"),
                options: CallOptions(timeout: .seconds(20))
            )
        }
        #expect(client.connectedEndpoint == Self.endpoint(up))
        for index in 11...20 {
            let event = try #require(try await Self.nextMessage(&events))
            #expect(event.body == "m\(index)" && event.seq == UInt64(index), "\(event)")
        }
        // Nothing repeated between: the next event is the next message.
        _ = try await client.sendMessage(SendMessageRequest(threadId: thread, body: "m21"))
        let last = try #require(try await Self.nextMessage(&events))
        #expect(last.body == "m21" && last.seq == 21, "\(last)")
        #expect(client.resumes >= 1)
        await client.close()
        kill(up.pid, SIGTERM)
        #expect(try await up.wait() == 0)
    }

    @Test(
        "rate-limited mutations: retried after RetryInfo with one effect each; the default budget stops retrying a server that keeps refusing"
    )
    func retriesUnderTheBudget() async throws {
        let limited = try await ChatdProcess.start(arguments: ["--rate-per-user", "5", "--rate-per-tenant", "100000"])
        let token = try await limited.token(role: "tenant_admin", sub: "swift-retries")
        let generous = ChatClient(
            endpoints: [Self.endpoint(limited)],
            tls: try Self.tls(),
            authorization: token,
            retry: RetryPolicy(maxAttempts: 50),
            budget: RetryBudget(maxTokens: 10_000, tokenRatio: 1)
        )
        let created = try await generous.createThread(CreateThreadRequest(learnerId: Fixture.learnerA1, title: "rl"))
        let thread = try #require(created.thread?.id)
        // 30 sends from 10 tasks at once against 5 a second (burst 10): most are refused at first.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<10 {
                group.addTask {
                    for index in 0..<3 {
                        _ = try await generous.sendMessage(
                            SendMessageRequest(threadId: thread, body: "r\(task)-\(index)")
                        )
                    }
                }
            }
            try await group.waitForAll()
        }
        let listed = try await generous.listMessages(
            ListMessagesRequest(threadId: thread, page: PageRequest(pageSize: 100))
        )
        let bodies = listed.messages.map(\.body)
        #expect(bodies.count == 30 && Set(bodies).count == 30, "one effect each: \(bodies)")
        #expect(generous.retries > 0, "30 sends at once at a limit of 5 per second, and no retries")
        await generous.close()

        // The default budget: after a few refusals in a row the refusal comes through.
        let thrifty = ChatClient(endpoints: [Self.endpoint(limited)], tls: try Self.tls(), authorization: token)
        var refused: RPCError?
        for _ in 0..<200 where refused == nil {
            do {
                _ = try await thrifty.sendMessage(SendMessageRequest(threadId: thread, body: "t"))
            } catch let error as RPCError {
                refused = error
            }
        }
        let error = try #require(refused, "200 sends at 20 per second, and the budget never ran out")
        #expect(error.code == .resourceExhausted && error.notProcessed && error.retryAfter != nil, "\(error)")
        #expect(thrifty.retries > 0 && thrifty.retries < 20, "\(thrifty.retries) retries")
        await thrifty.close()
        kill(limited.pid, SIGTERM)
        #expect(try await limited.wait() == 0)
    }

    @Test("the example package (clients/swift/Example), built against the library product, runs against chatd")
    func examplePackage() async throws {
        let binary = TestDatabase.repositoryRoot.appendingPathComponent(
            "clients/swift/Example/.build/debug/chat-example"
        )
        .path
        try #require(
            FileManager.default.isExecutableFile(atPath: binary),
            "scripts/test builds it: swift build --package-path clients/swift/Example"
        )
        let chatd = try await ChatdProcess.start(arguments: Self.unlimited)
        let token = try await chatd.token(role: "tenant_admin", sub: "swift-example")
        let directory = ProcessInfo.processInfo.environment["CHAT_TEST_TLS_DIR"] ?? ""
        let run = try await runProgram(
            "/usr/bin/env",
            [
                "CHAT_TOKEN=\(token.dropFirst("Bearer ".count))", binary, "--address", "127.0.0.1:\(chatd.port)",
                "--ca", "\(directory)/ca.pem", "--learner", Fixture.learnerA1, "--messages", "3",
            ]
        )
        #expect(run.status == 0, "\(run.output)")
        for line in [
            "health: serving", "watching from 0", "event seq 1: message 1", "event seq 3: message 3",
            "refused: invalidArgument body", "done: 3 events, 1 connection(s)",
        ] {
            #expect(run.output.contains(line), "\(line) not in \(run.output)")
        }
        kill(chatd.pid, SIGTERM)
        #expect(try await chatd.wait() == 0)
    }
}
