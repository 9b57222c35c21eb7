import ArgumentParser
import ChatClient
import ChatProto
import ChatTLS
import Foundation
import NIOCore
import NIOPosix

/// The load generator: calls over real TLS through the Swift client, for a bounded duration, and reports calls per
/// second and latency percentiles.
@main
struct ChatBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat-bench",
        abstract: "Measure chatd: calls per second and latency percentiles (use a release build)."
    )

    @Option(name: .customLong("address"), help: "The server, host:port.") var address: String = "127.0.0.1:7443"
    @Option(name: .customLong("ca"), help: "PEM CA of the server's certificate.") var ca: String
    @Option(name: .customLong("scenario"), help: "unary-health") var scenario: String = "unary-health"
    @Option(name: .customLong("concurrency"), help: "Calls in flight.") var concurrency: Int = 1
    @Option(name: .customLong("connections"), help: "Connections the calls are spread over.") var connections: Int = 1
    @Option(name: .customLong("duration"), help: "Seconds of measurement (after a 1 s warm-up).") var duration: Double =
        5
    @Option(name: .customLong("json"), help: "Append the result as a JSON line to this file.") var json: String?

    func validate() throws {
        guard self.scenario == "unary-health" else { throw ValidationError("unknown --scenario \(self.scenario)") }
        guard self.concurrency >= 1, self.connections >= 1, self.connections <= self.concurrency else {
            throw ValidationError("need 1 <= --connections <= --concurrency")
        }
        guard self.duration > 0, self.duration <= 600 else { throw ValidationError("--duration is 0 to 600 s") }
    }

    func run() async throws {
        guard let colon = self.address.lastIndex(of: ":"),
            let port = Int(self.address[self.address.index(after: colon)...])
        else { throw ValidationError("--address must be host:port") }
        let host = String(self.address[..<colon])
        let tls = try TLSContext(configuration: .client(trustRoots: self.ca))
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let clients = (0..<self.connections).map { _ in ChatClient(host: host, port: port, tls: tls, group: group) }
        for client in clients { _ = try await client.healthCheck(HealthCheckRequest()) }

        let clock = ContinuousClock()
        let warmUpEnd = clock.now + .seconds(1)
        let end = warmUpEnd + .milliseconds(Int64(self.duration * 1000))
        let latencies = try await withThrowingTaskGroup(of: [Int64].self) { group in
            for worker in 0..<self.concurrency {
                let client = clients[worker % clients.count]
                group.addTask {
                    var samples: [Int64] = []
                    samples.reserveCapacity(100_000)
                    while true {
                        let start = clock.now
                        guard start < end else { break }
                        _ = try await client.healthCheck(HealthCheckRequest())
                        if start >= warmUpEnd {
                            let elapsed = clock.now - start
                            samples.append(
                                elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds
                                    / 1_000_000_000
                            )
                        }
                    }
                    return samples
                }
            }
            return try await group.reduce(into: [Int64]()) { $0 += $1 }.sorted()
        }
        for client in clients { await client.close() }
        try await group.shutdownGracefully()

        func percentile(_ p: Double) -> Double {
            guard !latencies.isEmpty else { return 0 }
            let index = min(latencies.count - 1, Int((p / 100 * Double(latencies.count)).rounded(.up)) - 1)
            return Double(latencies[max(0, index)]) / 1_000_000
        }
        let rate = Double(latencies.count) / self.duration
        let row = String(
            format: "%-14@ %4d in flight %2d conn  %9.0f calls/s  p50 %7.3f  p90 %7.3f  p99 %7.3f  p99.9 %7.3f ms",
            self.scenario as NSString,
            self.concurrency,
            self.connections,
            rate,
            percentile(50),
            percentile(90),
            percentile(99),
            percentile(99.9)
        )
        print(row)
        if let path = self.json {
            let object: [String: Any] = [
                "scenario": self.scenario, "concurrency": self.concurrency, "connections": self.connections,
                "calls_per_second": rate, "p50_ms": percentile(50), "p90_ms": percentile(90), "p99_ms": percentile(99),
                "p999_ms": percentile(99.9), "calls": latencies.count, "duration_s": self.duration,
            ]
            let line = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) + Data("\n".utf8)
            if let handle = FileHandle(forWritingAtPath: path) {
                handle.seekToEndOfFile()
                handle.write(line)
                handle.closeFile()
            } else {
                FileManager.default.createFile(atPath: path, contents: line)
            }
        }
    }
}
