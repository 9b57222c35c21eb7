import ChatApp
import ChatClient
import ChatProto
import ChatRPCCore
import ChatServices
import ChatStoreTestSupport
import ChatTestSupport
import Foundation
import Synchronization
import Testing

/// The live hub over NATS (a real nats-server, Debian's, started and stopped by the tests): wake-ups and presence
/// go over the bus, LISTEN/NOTIFY is not used at all, and the rate limits hold across the instances.
@Suite("Three instances on NATS")
struct NATSTests {
    /// Three instances on one database, their hubs on `nats`.
    static func instances(
        _ nats: NATSServer,
        count: Int = 3,
        checkInterval: Duration = .seconds(1),
        rateLimit: RateLimiter.Configuration = ServiceHarness.unlimited,
        caFile: String? = nil,
        expectToHear: Bool = true
    ) async throws -> [ServiceHarness] {
        let hub: (String) -> LiveHub.Configuration = { _ in
            LiveHub.Configuration(
                listenConninfo: nil,
                checkInterval: checkInterval,
                natsURLs: [nats.url],
                natsCAFile: caFile,
                announceInterval: .milliseconds(200)
            )
        }
        let live = LiveService.Configuration(heartbeatInterval: .milliseconds(200))
        let first = try await ServiceHarness(rateLimit: rateLimit, live: live, hub: hub, poolSize: 4)
        var all = [first]
        for _ in 1..<count {
            all.append(
                try await ServiceHarness(
                    rateLimit: rateLimit,
                    live: live,
                    hub: hub,
                    sharing: first.database,
                    poolSize: 4
                )
            )
        }
        let instances = all
        if expectToHear {
            try await waitUntil("each instance hears the others") {
                instances.allSatisfy { $0.hub.instances == count && $0.application.limiter.instances == count }
            }
        }
        return instances
    }

    /// `messages` sent through `sender` reach a WatchThread stream on `receiver` within 10 s, in order. A stream
    /// reads only when woken (heartbeats do not read), so with the periodic check a minute away only a hint over the
    /// bus can have woken it.
    static func deliveredAcross(from sender: ServiceHarness, to receiver: ServiceHarness, messages: Int) async throws {
        let client = try sender.client(.guardian, scope: [Fixture.learnerA1])
        let thread = try await client.createThread(CreateThreadRequest(learnerId: Fixture.learnerA1, title: "N"))
            .thread!
        let watcher = try receiver.client(.guardian, scope: [Fixture.learnerA1])
        let log = StreamLog.start { try await watcher.watchThread(WatchThreadRequest(threadId: thread.id)) }
        try await waitUntil("the head") { !log.events.isEmpty }
        for index in 1...messages { _ = try await send(client, thread.id, "n\(index)") }
        try await waitUntil("the messages on the other instance", limit: .seconds(10)) {
            log.events.compactMap { $0.event?.messageEvent?.message?.seq } == (1...messages).map { UInt64($0) }
        }
        await log.cancel()
    }

    @Test("over tls:// with the CA given, the bus works; with another CA it refuses the server and hears nobody")
    func tlsBus() async throws {
        let directory = ProcessInfo.processInfo.environment["CHAT_TEST_TLS_DIR"] ?? ""
        let nats = try await NATSServer.start(tls: ("\(directory)/server.pem", "\(directory)/server.key"))
        defer { nats.stop() }
        let trusted = try await Self.instances(
            nats,
            count: 2,
            checkInterval: .seconds(60),
            caFile: "\(directory)/ca.pem"
        )
        try await Self.deliveredAcross(from: trusted[0], to: trusted[1], messages: 1)

        // Instances that trust another CA never get through: they hear neither each other nor the trusted ones.
        let rogue = try await Self.instances(
            nats,
            count: 2,
            caFile: "\(directory)/rogue-ca.pem",
            expectToHear: false
        )
        try await waitUntil("the rogue instances' bus reports that it could not connect") {
            rogue.allSatisfy { $0.hub.busError != nil }
        }
        // The same server and URL as the trusted ones: only the CA differs (libnats reports the failed handshake as
        // "no server available").
        #expect(rogue.allSatisfy { $0.hub.instances == 1 }, "\(rogue.map { $0.hub.instances })")
        #expect(trusted.allSatisfy { $0.hub.instances == 2 })
        for instance in rogue + trusted { try await instance.stop() }
    }

    @Test(
        "wake-ups cross instances over NATS alone (the periodic check is a minute away); an instance that stops is counted out"
    )
    func wakeUpsAndPresence() async throws {
        let nats = try await NATSServer.start()
        defer { nats.stop() }
        let instances = try await Self.instances(nats, checkInterval: .seconds(60))
        try await Self.deliveredAcross(from: instances[0], to: instances[2], messages: 5)

        try await instances[2].stop()
        try await waitUntil("the stopped instance is counted out") {
            instances[0].hub.instances == 2 && instances[1].application.limiter.instances == 2
        }
        try await instances[1].stop()
        try await instances[0].stop()
    }

    @Test(
        "the live property on three instances, nats-server killed and restarted midway: every watcher sees exactly the committed sequence"
    )
    func propertyAcrossABusRestart() async throws {
        let nats = try await NATSServer.start()
        defer { nats.stop() }
        let instances = try await Self.instances(nats)
        try await resumingWatchersProperty(on: instances) {
            nats.kill()
            try await Task.sleep(for: .milliseconds(300))
            try await nats.restart()
        }
        for instance in instances.reversed() { try await instance.stop() }
    }

    @Test("a global limit over three instances: the calls admitted in all stay within the rate plus one burst")
    func globalRateLimit() async throws {
        let nats = try await NATSServer.start()
        defer { nats.stop() }
        let rate = 30.0
        let burst = 30.0
        let instances = try await Self.instances(
            nats,
            rateLimit: RateLimiter.Configuration(
                perPrincipal: (rate, burst),
                perService: (1e9, 1e9),
                perTenant: (1e9, 1e9)
            )
        )
        // One user, one client on each instance, sixteen calls in flight on each (far more than the limit, however
        // slow the machine), for three seconds; a refused call waits 10 ms before the next.
        let clients = try instances.map {
            try $0.client(.tenantAdmin, user: "busy", retry: RetryPolicy(maxAttempts: 1))
        }
        let admitted = Tally()
        let refused = Tally()
        let started = ContinuousClock.now
        let duration = Duration.seconds(3)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for client in clients {
                for _ in 0..<16 {
                    group.addTask {
                        while ContinuousClock.now - started < duration {
                            do {
                                _ = try await client.listThreads(ListThreadsRequest(learnerId: Fixture.learnerA1))
                                admitted.add()
                            } catch let error as RPCError where error.code == .resourceExhausted {
                                refused.add()
                                try await Task.sleep(for: .milliseconds(10))
                            }
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        let elapsed =
            Double((ContinuousClock.now - started).components.seconds)
            + Double((ContinuousClock.now - started).components.attoseconds) / 1e18
        let total = admitted.count
        let bound = rate * elapsed + burst + 3
        #expect(Double(total) <= bound, "admitted \(total) in \(elapsed) s; the limit allows \(bound)")
        // Not starved either: the three shares of the burst at least; and the demand went past the limit.
        #expect(Double(total) >= burst, "admitted \(total) in \(elapsed) s")
        #expect(refused.count > 0)
        for instance in instances.reversed() { try await instance.stop() }
    }
}

/// A count shared by concurrent tasks.
final class Tally: Sendable {
    private let value = Mutex(0)
    func add() { self.value.withLock { $0 += 1 } }
    var count: Int { self.value.withLock { $0 } }
}
