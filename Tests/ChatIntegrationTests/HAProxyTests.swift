import ChatClient
import ChatProto
import ChatRPCCore
import ChatStoreTestSupport
import ChatTLS
import ChatTestSupport
import Foundation
import Synchronization
import Testing

/// A real haproxy (Debian's) in TCP mode, started and stopped by the test, in front of chatd instances.
enum HAProxy {
    /// Balances new connections over `backends` (least connections first), checking each every 200 ms.
    static func start(backends: [Int]) async throws -> ServerProcess {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("haproxy-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for _ in 0..<5 {
            let port = Int.random(in: 20_000...45_000)
            let servers = backends.enumerated().map { index, backend in
                "    server chatd\(index) 127.0.0.1:\(backend) check inter 200ms fall 1 rise 1"
            }
            try
                ([
                    "global", "    maxconn 4000", "defaults", "    mode tcp", "    timeout connect 2s",
                    "    timeout client 120s", "    timeout server 120s", "frontend chat", "    bind 127.0.0.1:\(port)",
                    "    default_backend chatd", "backend chatd", "    balance leastconn",
                ] + servers).joined(separator: "\n").appending("\n").write(
                    toFile: "\(directory)/haproxy.cfg",
                    atomically: true,
                    encoding: .utf8
                )
            if let pid = try await spawnListening(
                ["/usr/sbin/haproxy", "-db", "-f", "\(directory)/haproxy.cfg"],
                log: "\(directory)/log",
                port: port
            ) {
                return ServerProcess(pid: pid, port: port, directory: directory)
            }
        }
        throw ServerProcess.DidNotStart(
            description: (try? String(contentsOfFile: "\(directory)/log", encoding: .utf8)) ?? ""
        )
    }
}

/// What the watchers, the senders and the test share.
private final class Shared: Sendable {
    let seen = Mutex<[[UInt64]]>(Array(repeating: [], count: 200))
    let acknowledged = Mutex<[[UInt64]]>(Array(repeating: [], count: 4))
    let stop = Atomic<Bool>(false)
}

@Suite("Three chatd instances behind haproxy")
struct HAProxyTests {
    /// Connections drained after about 3 s, so that clients spread over the instances again.
    static let arguments = [
        "--rate-per-user", "100000", "--rate-per-tenant", "100000", "--max-connection-age", "3",
        "--max-connection-age-grace", "1",
    ]

    /// The open RPC connections an instance reports.
    static func openConnections(_ instance: ChatdProcess) async throws -> Double {
        let (_, text) = try await httpGet(port: instance.adminPort, "/metrics")
        let line = text.split(separator: "\n").first { $0.hasPrefix("chat_server_connections_open ") }
        return Double(line?.split(separator: " ").last ?? "") ?? -1
    }

    @Test(
        "a rolling restart of all three under load (2 senders, 200 watchers on 10 connections): every watcher sees each message once, in order; max connection age spreads the clients over the three again"
    )
    func rollingRestart() async throws {
        let first = try await ChatdProcess.start(arguments: Self.arguments)
        var instances = [first]
        for _ in 0..<2 { instances.append(try await ChatdProcess.startSibling(of: first, arguments: Self.arguments)) }
        let ports = instances.map(\.port)
        let proxy = try await HAProxy.start(backends: ports)
        defer { proxy.stop() }
        let token = try await first.token(role: "tenant_admin", sub: "haproxy")
        let directory = ProcessInfo.processInfo.environment["CHAT_TEST_TLS_DIR"] ?? ""
        let tls = try TLSContext(configuration: .client(trustRoots: "\(directory)/ca.pem"))
        // Restarts refuse calls by the dozen: the budget is not what this test is about.
        let client: @Sendable () -> ChatClient = {
            ChatClient(
                endpoints: [Endpoint(host: "127.0.0.1", port: proxy.port)],
                tls: tls,
                authorization: token,
                retry: RetryPolicy(maxAttempts: 30, maxBackoff: .milliseconds(500)),
                budget: RetryBudget(maxTokens: 100_000, tokenRatio: 1)
            )
        }
        let admin = client()
        var created: [String] = []
        for index in 0..<4 {
            let thread = try await admin.createThread(
                CreateThreadRequest(learnerId: Fixture.learnerA1, title: "lb \(index)")
            )
            created.append(try #require(thread.thread?.id))
        }
        let threads = created
        let shared = Shared()

        // 200 watchers, 20 on each of 10 clients, each resuming by itself.
        let watchers = (0..<10).map { _ in client() }
        let watching = Task {
            await withTaskGroup(of: Void.self) { group in
                for index in 0..<200 {
                    group.addTask {
                        let stream = watchers[index / 20].watchThreadResuming(
                            WatchThreadRequest(threadId: threads[index % 4])
                        )
                        do {
                            for try await response in stream {
                                if case .message? = response.event?.event, let seq = response.event?.seq {
                                    shared.seen.withLock { $0[index].append(seq) }
                                }
                            }
                        } catch {}
                    }
                }
            }
        }

        // Two senders, each its own connection, round robin over the threads, while the instances restart.
        let sending = Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for sender in 0..<2 {
                    group.addTask {
                        let client = client()
                        var index = sender
                        while !shared.stop.load(ordering: .relaxed) {
                            let thread = index % 4
                            let sent = try await client.sendMessage(
                                SendMessageRequest(threadId: threads[thread], body: "s\(sender)-\(index)"),
                                options: CallOptions(timeout: .seconds(30))
                            )
                            shared.acknowledged.withLock { $0[thread].append(sent.message?.seq ?? 0) }
                            index += 2
                        }
                        await client.close()
                    }
                }
                try await group.waitForAll()
            }
        }
        try await Task.sleep(for: .milliseconds(500))
        for index in 0..<3 {
            kill(instances[index].pid, SIGTERM)
            #expect(try await instances[index].wait() == 0)
            instances[index] = try await ChatdProcess.startSibling(
                of: first,
                arguments: Self.arguments,
                port: ports[index]
            )
            try await Task.sleep(for: .milliseconds(700))
        }
        // Max connection age: within a few seconds every instance holds connections again.
        var spread: [Double] = []
        let deadline = ContinuousClock.now + .seconds(30)
        repeat {
            try await Task.sleep(for: .milliseconds(500))
            spread = []
            for instance in instances { spread.append(try await Self.openConnections(instance)) }
        } while spread.contains(where: { $0 < 1 }) && ContinuousClock.now < deadline
        #expect(!spread.contains(where: { $0 < 1 }), "connections per instance: \(spread)")
        shared.stop.store(true, ordering: .relaxed)
        try await sending.value

        let sent = shared.acknowledged.withLock { $0 }
        print("haproxy rolling restart: messages per thread \(sent.map(\.count)), connections per instance \(spread)")
        for (thread, seqs) in sent.enumerated() {
            #expect(!seqs.isEmpty)
            #expect(seqs.sorted() == Array(1...UInt64(seqs.count)), "thread \(thread): acknowledged \(seqs)")
        }
        try await waitUntil("every watcher saw every message", limit: .seconds(60)) {
            let got = shared.seen.withLock { $0 }
            return (0..<200).allSatisfy { got[$0].count >= sent[$0 % 4].count }
        }
        watching.cancel()
        let got = shared.seen.withLock { $0 }
        for index in 0..<200 {
            let want = Array(1...UInt64(sent[index % 4].count))
            #expect(got[index] == want, "watcher \(index): \(got[index].count) events, want \(want.count)")
        }
        for watcher in watchers { await watcher.close() }
        await admin.close()
        for instance in instances {
            kill(instance.pid, SIGTERM)
            _ = try await instance.wait()
        }
    }
}
