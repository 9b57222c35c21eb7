import ChatClient
import ChatProto
import ChatRPC
import ChatStoreTestSupport
import ChatTestSupport
import Foundation
import NIOCore
import NIOPosix
import Testing

/// A real Prometheus (Debian's package, which scripts/test installs) scrapes a running chatd under a short load;
/// its HTTP API must report the calls that were made.
final class PrometheusServer: Sendable {
    let pid: pid_t
    let port: Int
    let directory: String

    /// Starts Prometheus scraping `target` (host:port) every second; retries another port when its own is taken.
    init(scraping target: String) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("prometheus-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        self.directory = directory
        try """
        global:
          scrape_interval: 1s
          scrape_timeout: 1s
        scrape_configs:
          - job_name: chatd
            static_configs:
              - targets: ['\(target)']
        """.write(toFile: "\(directory)/prometheus.yml", atomically: true, encoding: .utf8)
        var started: (pid_t, Int)?
        for _ in 0..<5 where started == nil {
            let port = Int.random(in: 20_000...45_000)
            let argv = [
                "/usr/bin/prometheus", "--config.file=\(directory)/prometheus.yml",
                "--storage.tsdb.path=\(directory)/data", "--web.listen-address=127.0.0.1:\(port)",
                "--log.level=warn",
            ]
            let pid = try spawnProgram(argv, log: "\(directory)/prometheus.log")
            // Up, or exited (its port was taken): whichever comes first.
            let deadline = ContinuousClock.now + .seconds(20)
            while ContinuousClock.now < deadline {
                var status: Int32 = 0
                if waitpid(pid, &status, WNOHANG) == pid { break }
                if (try? httpGetBlocking(port: port, "/-/ready").status) == 200 {
                    started = (pid, port)
                    break
                }
                usleep(100_000)
            }
            if started == nil {
                kill(pid, SIGKILL)
                var status: Int32 = 0
                _ = waitpid(pid, &status, 0)
            }
        }
        guard let (pid, port) = started else {
            let log = (try? String(contentsOfFile: "\(directory)/prometheus.log", encoding: .utf8)) ?? ""
            throw PrometheusDidNotStart(log: log)
        }
        self.pid = pid
        self.port = port
    }

    struct PrometheusDidNotStart: Error, CustomStringConvertible {
        let log: String
        var description: String { "prometheus did not start: \(self.log)" }
    }

    deinit {
        kill(self.pid, SIGTERM)
        var status: Int32 = 0
        _ = waitpid(self.pid, &status, 0)
        try? FileManager.default.removeItem(atPath: self.directory)
    }

    /// The samples of an instant query: each series' labels and value.
    func query(_ promql: String) async throws -> [([String: String], Double)] {
        var allowed = CharacterSet.urlQueryAllowed
        allowed.remove(charactersIn: "+&=")
        let encoded = promql.addingPercentEncoding(withAllowedCharacters: allowed) ?? promql
        let (status, body) = try await httpGet(port: self.port, "/api/v1/query?query=\(encoded)")
        guard status == 200,
            let object = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any],
            let data = object["data"] as? [String: Any], let result = data["result"] as? [[String: Any]]
        else {
            return []
        }
        return result.compactMap { sample in
            guard let metric = sample["metric"] as? [String: String], let value = sample["value"] as? [Any],
                value.count == 2, let text = value[1] as? String, let number = Double(text)
            else { return nil }
            return (metric, number)
        }
    }
}

@Suite("Prometheus scrapes chatd (real Prometheus, real chatd)")
struct PrometheusScrapeTests {
    @Test("per-method counters and a handling-time quantile, as Prometheus's API reports them")
    func scrapedCountersMatchTheCalls() async throws {
        let chatd = try await ChatdProcess.start()
        let target = "127.0.0.1:\(chatd.adminPort)"
        // Its start polls and sleeps: off the cooperative pool, which other tests' calls need meanwhile.
        let prometheus = try await offPool { try PrometheusServer(scraping: target) }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let admin = try chatd.client(try await chatd.token(role: "tenant_admin"), group: group)
        try await chatd.waitServing(admin)
        // A short load: 5 threads, 20 messages, 3 refused calls.
        var threads: [String] = []
        for index in 0..<5 {
            let created = try await admin.createThread(
                CreateThreadRequest(learnerId: Fixture.learnerA1, title: "Scraped \(index)")
            )
            threads.append(try #require(created.thread?.id))
        }
        for index in 0..<20 {
            _ = try await admin.sendMessage(
                SendMessageRequest(threadId: threads[index % 5], body: "m\(index)", idempotencyKey: "scrape-\(index)")
            )
        }
        for _ in 0..<3 {
            await #expect(throws: RPCError.self) {
                _ = try await admin.getThread(GetThreadRequest(threadId: "not-a-uuid"))
            }
        }
        @Sendable func value(_ promql: String) async throws -> Double? { try await prometheus.query(promql).first?.1 }
        // Prometheus scrapes every second: wait for a scrape that saw the last call of the load (so every call).
        try await waitUntil("Prometheus has scraped the load", limit: .seconds(30)) { () async throws -> Bool in
            try await value(#"grpc_server_handled_total{grpc_method="GetThread",grpc_code="InvalidArgument"}"#) == 3
        }
        #expect(try await value(#"grpc_server_handled_total{grpc_method="SendMessage",grpc_code="OK"}"#) == 20)
        #expect(try await value(#"grpc_server_handled_total{grpc_method="CreateThread",grpc_code="OK"}"#) == 5)
        #expect(try await value(#"sum(grpc_server_started_total{grpc_service="chat.v1.MessageService"})"#) == 20)
        #expect(try await value(#"grpc_server_msg_sent_total{grpc_method="SendMessage"}"#) == 20)
        // The handling-time histogram: every send is counted, and its p99 is a positive time under the top bucket.
        #expect(try await value(#"grpc_server_handling_seconds_count{grpc_method="SendMessage"}"#) == 20)
        let p99 = try await value(
            #"histogram_quantile(0.99, sum by (le) (grpc_server_handling_seconds_bucket{grpc_method="SendMessage"}))"#
        )
        #expect(p99.map { $0 > 0 && $0 <= 10 } == true, "\(String(describing: p99))")
        // The instance is up as Prometheus sees it.
        #expect(try await value(#"up{job="chatd"}"#) == 1)
        await admin.close()
        try await group.shutdownGracefully()
    }
}
