import ArgumentParser
import ChatClient
import ChatProto
import ChatTLS
import Foundation
import NIOCore
import NIOPosix
import Synchronization

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
    @Option(name: .customLong("thread-id"), help: "stream: the thread the streams replay.") var threadID: String?
    @Option(name: .customLong("scenario"), help: "unary-health, send, list, live, idle, stream or hostile")
    var scenario: String = "unary-health"
    @Option(name: .customLong("streams"), help: "idle: WatchThread streams to open and hold.") var streams: Int = 50_000
    @Option(name: .customLong("server-pid"), help: "idle: the chatd process whose memory is sampled.")
    var serverPID: Int32?
    @Option(
        name: .customLong("idle-method"),
        help: "idle: watch-thread (a live stream) or health-watch (the RPC layer's cost alone)."
    )
    var idleMethod: String = "watch-thread"
    @Option(name: .customLong("streams-per-connection"), help: "idle: streams on each connection (server limit 100).")
    var streamsPerConnection: Int = 100
    @Option(name: .customLong("token"), help: "send, list, live: a tenant_admin bearer token.") var token: String?
    @Option(name: .customLong("body-bytes"), help: "send: bytes of each message body.") var bodyBytes: Int = 100
    @Option(name: .customLong("watch-address"), help: "live: where the watchers connect (default: --address).")
    var watchAddress: String?
    @Option(name: .customLong("watchers"), help: "live: open WatchThread streams.") var watchers: Int = 1_000
    @Option(
        name: .customLong("threads"),
        help: "live: threads the watchers and messages are spread over; send, list: threads of the tenant used."
    )
    var threads: Int = 100
    @Option(name: .customLong("rate"), help: "live: messages sent per second.") var rate: Double = 200
    @Option(name: .customLong("live-warmup"), help: "live: seconds for the streams to open before sending.")
    var liveWarmup: Double = 2
    @Option(name: .customLong("concurrency"), help: "Calls in flight.") var concurrency: Int = 1
    @Option(name: .customLong("connections"), help: "Connections the calls are spread over.") var connections: Int = 1
    @Option(name: .customLong("duration"), help: "Seconds of measurement (after a 1 s warm-up).") var duration: Double =
        5
    @Option(name: .customLong("json"), help: "Append the result as a JSON line to this file.") var json: String?
    @Flag(
        name: .customLong("trace-context"),
        help: "unary-health, send, list: every call carries a new sampled W3C trace context in its header."
    )
    var traceContext = false
    @Option(name: .customLong("label"), help: "A label for the result (its JSON row's \"label\").") var label: String?

    func validate() throws {
        guard ["unary-health", "send", "list", "live", "idle", "stream", "hostile"].contains(self.scenario) else {
            throw ValidationError("unknown --scenario \(self.scenario)")
        }
        if self.scenario != "unary-health" {
            guard self.token != nil else { throw ValidationError("--scenario \(self.scenario) needs --token") }
        }
        guard (1...4096).contains(self.bodyBytes) else { throw ValidationError("--body-bytes is 1 to 4096") }
        if self.scenario == "live" {
            guard self.watchers >= 1, self.threads >= 1, self.rate > 0 else {
                throw ValidationError("--watchers, --threads and --rate must be positive")
            }
        }
        guard self.concurrency >= 1, self.connections >= 1,
            self.scenario == "live" || self.connections <= self.concurrency
        else {
            throw ValidationError("need 1 <= --connections <= --concurrency")
        }
        guard self.duration > 0, self.duration <= 600 else { throw ValidationError("--duration is 0 to 600 s") }
    }

    /// What every scenario's clients share: the CA, one event-loop thread, the bearer token (when given).
    struct Connector {
        let tls: TLSContext
        let group: MultiThreadedEventLoopGroup
        let authorization: String?

        func client(_ address: String) throws -> ChatClient {
            let (host, port) = try ChatBench.split(address)
            return ChatClient(
                host: host,
                port: port,
                tls: self.tls,
                authorization: self.authorization,
                group: self.group
            )
        }
    }

    func connector() throws -> Connector {
        Connector(
            tls: try TLSContext(configuration: .client(trustRoots: self.ca)),
            group: MultiThreadedEventLoopGroup(numberOfThreads: 1),
            authorization: self.token.map { "Bearer \($0)" }
        )
    }

    static func split(_ address: String) throws -> (String, Int) {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
            throw ValidationError("an address must be host:port, not \(address)")
        }
        return (String(address[..<colon]), port)
    }

    func run() async throws {
        if self.scenario == "live" {
            try await self.runLive()
            return
        }
        if self.scenario == "idle" {
            try await self.runIdle()
            return
        }
        if self.scenario == "hostile" {
            try await self.runHostile()
            return
        }
        if self.scenario == "stream" {
            try await self.runStream()
            return
        }
        let connector = try self.connector()
        let group = connector.group
        let clients = try (0..<self.connections).map { _ in try connector.client(self.address) }
        for client in clients { _ = try await client.healthCheck(HealthCheckRequest()) }
        let call: @Sendable (ChatClient, Int, Int) async throws -> Void
        var extra: [String: Any] = [:]
        if let label = self.label { extra["label"] = label }
        if self.traceContext { extra["trace_context"] = true }
        let traced = self.traceContext
        // A new caller span for each call, or none.
        let options: @Sendable () -> CallOptions = {
            guard traced else { return CallOptions() }
            var random = SystemRandomNumberGenerator()
            let trace = TraceContext(
                traceId: (0..<16).map { _ in UInt8.random(in: 0...255, using: &random) | 1 },
                spanId: (0..<8).map { _ in UInt8.random(in: 0...255, using: &random) | 1 },
                flags: 1
            )
            return CallOptions(trace: trace)
        }
        switch self.scenario {
        case "send":
            // Durable sends: each call commits one message to one of the tenant's threads, round robin.
            let threads = try await Self.threadIDs(clients[0], limit: max(self.threads, self.concurrency))
            let body = String(repeating: "x", count: self.bodyBytes)
            let run = UUID().uuidString.prefix(8)
            extra["threads"] = threads.count
            extra["body_bytes"] = self.bodyBytes
            call = { client, worker, iteration in
                _ = try await client.sendMessage(
                    SendMessageRequest(
                        threadId: threads[(worker + iteration * 7919) % threads.count],
                        body: body,
                        idempotencyKey: "\(run)-\(worker)-\(iteration)"
                    ),
                    // The body key dedupes the message, as in every earlier run of this row (and in the pgbench
                    // peer's transaction); the client's own header key would add a stored outcome per send.
                    options: {
                        var o = options()
                        o.automaticIdempotencyKey = false
                        return o
                    }()
                )
            }
        case "list":
            // The latest 50 messages of a random thread.
            let threads = try await Self.threadIDs(clients[0], limit: self.threads)
            extra["threads"] = threads.count
            call = { client, _, _ in
                _ = try await client.listMessages(
                    ListMessagesRequest(threadId: threads.randomElement()!, page: PageRequest(pageSize: 50)),
                    options: options()
                )
            }
        default:
            call = { client, _, _ in _ = try await client.healthCheck(HealthCheckRequest(), options: options()) }
        }

        let clock = ContinuousClock()
        let warmUpEnd = clock.now + .seconds(1)
        let end = warmUpEnd + .milliseconds(Int64(self.duration * 1000))
        let latencies = try await withThrowingTaskGroup(of: [Int64].self) { group in
            for worker in 0..<self.concurrency {
                let client = clients[worker % clients.count]
                group.addTask {
                    var samples: [Int64] = []
                    samples.reserveCapacity(100_000)
                    var iteration = 0
                    while true {
                        let start = clock.now
                        guard start < end else { break }
                        try await call(client, worker, iteration)
                        iteration += 1
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
        try self.report(latencies, count: latencies.count, rateLabel: "calls/s", extra: extra)
    }

    /// Up to `limit` thread ids of the token's tenant, most recently active first.
    static func threadIDs(_ client: ChatClient, limit: Int) async throws -> [String] {
        var ids: [String] = []
        var token = ""
        repeat {
            let page = try await client.listThreads(
                ListThreadsRequest(page: PageRequest(pageSize: UInt32(min(200, limit - ids.count)), pageToken: token))
            )
            ids += page.threads.map(\.id)
            token = page.page?.nextPageToken ?? ""
        } while !token.isEmpty && ids.count < limit
        guard !ids.isEmpty else { throw ValidationError("the tenant has no threads: seed some first") }
        return ids
    }

    /// Prints a row and appends the JSON line; `latencies` are sorted nanoseconds.
    func report(_ latencies: [Int64], count: Int, rateLabel: String, extra: [String: Any]) throws {
        func percentile(_ p: Double) -> Double {
            guard !latencies.isEmpty else { return 0 }
            let index = min(latencies.count - 1, Int((p / 100 * Double(latencies.count)).rounded(.up)) - 1)
            return Double(latencies[max(0, index)]) / 1_000_000
        }
        let rate = Double(count) / self.duration
        let row = String(
            format: "%-14@ %4d in flight %2d conn  %9.0f %@  p50 %7.3f  p90 %7.3f  p99 %7.3f  p99.9 %7.3f ms",
            self.scenario as NSString,
            self.scenario == "live" ? self.watchers : self.concurrency,
            self.connections,
            rate,
            rateLabel as NSString,
            percentile(50),
            percentile(90),
            percentile(99),
            percentile(99.9)
        )
        print(row)
        if let path = self.json {
            var object: [String: Any] = [
                "scenario": self.scenario, "concurrency": self.concurrency, "connections": self.connections,
                "calls_per_second": rate, "p50_ms": percentile(50), "p90_ms": percentile(90), "p99_ms": percentile(99),
                "p999_ms": percentile(99.9), "calls": count, "duration_s": self.duration,
            ]
            object.merge(extra) { $1 }
            try self.appendJSON(object, to: path)
        }
    }

    /// Commit-to-delivery latency: `--watchers` WatchThread streams over `--threads` threads (on `--watch-address`,
    /// possibly another instance), while messages are sent at `--rate`. A message's latency is its arrival at a
    /// watcher minus its `created_at` (read by PostgreSQL just before the commit, on this machine's clock).
    func runLive() async throws {
        let connector = try self.connector()
        let group = connector.group
        let sender = try connector.client(self.address)
        let watchClients = try (0..<self.connections).map { _ in
            try connector.client(self.watchAddress ?? self.address)
        }
        var threadIDs: [String] = []
        for index in 0..<self.threads {
            let learner = UUID().uuidString.lowercased()
            threadIDs.append(
                try await sender.createThread(CreateThreadRequest(learnerId: learner, title: "bench \(index)")).thread!
                    .id
            )
        }
        let clock = ContinuousClock()
        let warmup = Duration.milliseconds(Int64(self.liveWarmup * 1000))
        let sendEnd = clock.now + warmup + .milliseconds(Int64(self.duration * 1000))
        let watchEnd = sendEnd + .seconds(2)
        let ids = threadIDs
        let results = try await withThrowingTaskGroup(of: [Int64].self) { group in
            for watcher in 0..<self.watchers {
                let client = watchClients[watcher % watchClients.count]
                let thread = ids[watcher % ids.count]
                group.addTask {
                    let stream = try await client.watchThread(WatchThreadRequest(threadId: thread))
                    let reader = Task { () -> [Int64] in
                        var samples: [Int64] = []
                        do {
                            for try await response in stream {
                                guard case .message(let event)? = response.event?.event, let message = event.message
                                else { continue }
                                let now = Int64(Date().timeIntervalSince1970 * 1_000_000)
                                samples.append((now - message.createdAtUs) * 1_000)
                            }
                        } catch {
                            // Cancelled at the end of the run.
                        }
                        return samples
                    }
                    try await Task.sleep(until: watchEnd)
                    reader.cancel()
                    return await reader.value
                }
            }
            // Messages at the rate, after a moment for the streams to open.
            group.addTask {
                try await Task.sleep(for: warmup)
                let interval = Duration.seconds(1.0 / self.rate)
                var next = clock.now
                var index = 0
                while clock.now < sendEnd {
                    _ = try await sender.sendMessage(
                        SendMessageRequest(
                            threadId: ids[index % ids.count],
                            body: "bench message \(index)",
                            idempotencyKey: UUID().uuidString
                        )
                    )
                    index += 1
                    next += interval
                    if next > clock.now { try await Task.sleep(until: next) }
                }
                return []
            }
            return try await group.reduce(into: [Int64]()) { $0 += $1 }.sorted()
        }
        await sender.close()
        for client in watchClients { await client.close() }
        try await group.shutdownGracefully()
        try self.report(
            results,
            count: results.count,
            rateLabel: "deliveries/s",
            extra: [
                "watchers": self.watchers, "threads": self.threads, "rate": self.rate,
                "cross_instance": self.watchAddress != nil && self.watchAddress != self.address,
            ]
        )
    }

    /// Server memory held by idle streams: `--streams` WatchThread streams (after the thread's head, so nothing to
    /// replay) over as many connections as the server's stream limit needs; the server's resident memory is read
    /// from /proc before the connections, with every stream open (after a settling pause), and after they close.
    func runIdle() async throws {
        let connector = try self.connector()
        let group = connector.group
        let pid = self.serverPID ?? 0
        let setup = try connector.client(self.address)
        let threads = try await Self.threadIDs(setup, limit: self.threads)
        await setup.close()
        let connectionCount = (self.streams + self.streamsPerConnection - 1) / self.streamsPerConnection
        let clients = try (0..<connectionCount).map { _ in try connector.client(self.address) }
        for client in clients { _ = try await client.healthCheck(HealthCheckRequest()) }
        try await Task.sleep(for: .seconds(1))
        let connected = try Self.residentKilobytes(pid)
        let clock = ContinuousClock()
        let opening = clock.now
        let counts = StreamCounts()
        let health = self.idleMethod == "health-watch"
        let holders = Task {
            await withTaskGroup(of: Void.self) { group in
                for index in 0..<self.streams {
                    let client = clients[index / self.streamsPerConnection]
                    let thread = threads[index % threads.count]
                    group.addTask {
                        do {
                            if health {
                                var iterator = try await client.healthWatch(HealthCheckRequest()).makeAsyncIterator()
                                _ = try await iterator.next()  // the current status
                                counts.opened.add(1, ordering: .relaxed)
                                while try await iterator.next() != nil {}
                                return
                            }
                            // After any position the thread will reach in the run: nothing to replay, nothing new.
                            let stream = try await client.watchThread(
                                WatchThreadRequest(threadId: thread, afterSeq: 1 << 40)
                            )
                            var iterator = stream.makeAsyncIterator()
                            _ = try await iterator.next()  // the head
                            counts.opened.add(1, ordering: .relaxed)
                            while try await iterator.next() != nil {}  // heartbeats, until cancelled
                        } catch {
                            if !Task.isCancelled { counts.failed.add(1, ordering: .relaxed) }
                        }
                    }
                }
            }
        }
        while counts.opened.load(ordering: .relaxed) + counts.failed.load(ordering: .relaxed) < self.streams {
            try await Task.sleep(for: .milliseconds(100))
        }
        let openSeconds = (clock.now - opening) / .seconds(1)
        try await Task.sleep(for: .seconds(self.duration))
        let during = try Self.residentKilobytes(pid)
        holders.cancel()
        await holders.value
        for client in clients { await client.close() }
        try await Task.sleep(for: .seconds(2))
        let after = try Self.residentKilobytes(pid)
        try await group.shutdownGracefully()
        let open = counts.opened.load(ordering: .relaxed)
        let perStream = open > 0 ? Double(during - connected) * 1024 / Double(open) : 0
        print(
            String(
                format: "idle streams   %6d open (%d failed) over %d conn in %.1f s: server RSS %d kB connected, "
                    + "%d kB with the streams (%.0f B per stream), %d kB after closing",
                open,
                counts.failed.load(ordering: .relaxed),
                connectionCount,
                openSeconds,
                connected,
                during,
                perStream,
                after
            )
        )
        if let path = self.json {
            try self.appendJSON(
                [
                    "scenario": "idle", "method": self.idleMethod, "streams": open,
                    "failed": counts.failed.load(ordering: .relaxed),
                    "connections": connectionCount, "open_s": openSeconds, "rss_connected_kb": connected,
                    "rss_during_kb": during, "rss_after_kb": after, "bytes_per_stream": perStream,
                    "concurrency": open,
                ],
                to: path
            )
        }
    }

    /// Server streaming: `--concurrency` WatchThread streams on `--connections` connections, each replaying a long
    /// thread from its start (and again when it reaches the end); messages received per second, and the server's
    /// memory before and after (with `--server-pid`).
    func runStream() async throws {
        guard let thread = self.threadID else { throw ValidationError("--scenario stream needs --thread-id") }
        let connector = try self.connector()
        let group = connector.group
        let clients = try (0..<self.connections).map { _ in try connector.client(self.address) }
        for client in clients { _ = try await client.healthCheck(HealthCheckRequest()) }
        let before = try self.serverPID.map(Self.residentKilobytes)
        let clock = ContinuousClock()
        let warmUpEnd = clock.now + .seconds(1)
        let end = warmUpEnd + .milliseconds(Int64(self.duration * 1000))
        let counted = try await withThrowingTaskGroup(of: Int.self) { group in
            for index in 0..<self.concurrency {
                let client = clients[index % clients.count]
                group.addTask {
                    var count = 0
                    while clock.now < end {
                        let stream = try await client.watchThread(WatchThreadRequest(threadId: thread))
                        var head: UInt64 = 0
                        replay: for try await response in stream {
                            switch response.event?.event {
                            case .head(let value)?:
                                head = value.headSeq
                            case .message(let event)?:
                                if clock.now >= warmUpEnd { count += 1 }
                                if clock.now >= end { return count }
                                // At the thread's end: open a new stream and replay again.
                                if (event.message?.seq ?? 0) >= head { break replay }
                            default:
                                continue
                            }
                        }
                    }
                    return count
                }
            }
            return try await group.reduce(0, +)
        }
        let after = try self.serverPID.map(Self.residentKilobytes)
        for client in clients { await client.close() }
        try await group.shutdownGracefully()
        let rate = Double(counted) / self.duration
        print(
            String(
                format: "stream         %4d streams %2d conn  %9.0f msgs/s%@",
                self.concurrency,
                self.connections,
                rate,
                (before.map { " server RSS \($0) kB before, \(after ?? 0) kB after" } ?? "") as NSString
            )
        )
        if let path = self.json {
            var object: [String: Any] = [
                "scenario": "stream", "concurrency": self.concurrency, "connections": self.connections,
                "calls_per_second": rate, "messages": counted, "duration_s": self.duration,
            ]
            if let before, let after {
                object["rss_before_kb"] = before
                object["rss_after_kb"] = after
            }
            try self.appendJSON(object, to: path)
        }
    }

    /// VmRSS of a process, in kB.
    static func residentKilobytes(_ pid: Int32) throws -> Int {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            if let value = Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) { return value }
        }
        throw ValidationError("no VmRSS for process \(pid)")
    }

    /// Appends a result, with `--label` when given.
    func appendJSON(_ object: [String: Any], to path: String) throws {
        var object = object
        if let label = self.label { object["label"] = label }
        try Self.appendJSON(object, to: path)
    }

    static func appendJSON(_ object: [String: Any], to path: String) throws {
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

/// How many idle streams opened, and how many failed to.
final class StreamCounts: Sendable {
    let opened = Atomic<Int>(0)
    let failed = Atomic<Int>(0)
}
