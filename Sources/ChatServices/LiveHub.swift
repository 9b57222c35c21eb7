internal import ChatDomain
internal import ChatProto
internal import ChatRPC
public import ChatStore
internal import CoreMetrics
public import Logging
public import ServiceLifecycle
internal import Synchronization

/// Something committed: an event of a thread (with its position), or of a learner or a tenant.
public struct LiveChange: Sendable, Hashable {
    public var tenantID: String
    /// The thread, for thread and message events.
    public var threadID: String?
    /// The learner the event is about, when it is about one.
    public var learnerID: String?
    /// The event's position in the thread's event sequence; 0 when unknown or not a thread event.
    public var eventSeq: Int64

    /// Creates a change.
    public init(tenantID: String, threadID: String?, learnerID: String?, eventSeq: Int64) {
        self.tenantID = tenantID
        self.threadID = threadID
        self.learnerID = learnerID
        self.eventSeq = eventSeq
    }
}

/// The text of the notifications instances send each other: ids and positions only, never content. A payload is
/// `1 <instance> <sent>` (`<sent>`: the sender's clock, microseconds since 1970, for the notification-lag metric;
/// payloads of earlier versions lack it) then one line per change, `<tenant> <thread|-> <learner|-> <position>`;
/// PostgreSQL refuses payloads of 8000 bytes or more, so changes are split over as many payloads as needed.
enum LiveNotification {
    static let maxPayloadBytes = 7_999

    static func encode(instance: String, sentAtMicros: Int64, changes: [LiveChange]) -> [String] {
        let header = "1 \(instance) \(sentAtMicros)"
        var payloads: [String] = []
        var current = header
        for change in changes {
            let line = "\n\(change.tenantID) \(change.threadID ?? "-") \(change.learnerID ?? "-") \(change.eventSeq)"
            if current.utf8.count + line.utf8.count > Self.maxPayloadBytes {
                payloads.append(current)
                current = header
            }
            current += line
        }
        if current != header { payloads.append(current) }
        return payloads
    }

    /// The sender, when it sent (nil from an earlier version) and the changes; nil when the payload is not one of
    /// ours.
    static func decode(_ payload: String) -> (instance: String, sentAtMicros: Int64?, changes: [LiveChange])? {
        let lines = payload.split(separator: "\n", omittingEmptySubsequences: false)
        guard let header = lines.first else { return nil }
        let headerFields = header.split(separator: " ", omittingEmptySubsequences: false)
        guard headerFields.count == 2 || headerFields.count == 3, headerFields[0] == "1", !headerFields[1].isEmpty
        else { return nil }
        var sentAt: Int64?
        if headerFields.count == 3 {
            guard let micros = Int64(headerFields[2]) else { return nil }
            sentAt = micros
        }
        var changes: [LiveChange] = []
        changes.reserveCapacity(lines.count - 1)
        for line in lines.dropFirst() {
            let fields = line.split(separator: " ", omittingEmptySubsequences: false)
            guard fields.count == 4, !fields[0].isEmpty, let seq = Int64(fields[3]) else { return nil }
            changes.append(
                LiveChange(
                    tenantID: String(fields[0]),
                    threadID: fields[1] == "-" ? nil : String(fields[1]),
                    learnerID: fields[2] == "-" ? nil : String(fields[2]),
                    eventSeq: seq
                )
            )
        }
        return (String(headerFields[1]), sentAt, changes)
    }

    /// What an instance says of itself: alive (`A <instance>`, every announce interval) or leaving (`B <instance>`).
    enum Presence: Sendable, Hashable {
        case alive(String)
        case leaving(String)

        var payload: String {
            switch self {
            case .alive(let instance): "A \(instance)"
            case .leaving(let instance): "B \(instance)"
            }
        }

        init?(payload: String) {
            let fields = payload.split(separator: " ", omittingEmptySubsequences: false)
            guard fields.count == 2, !fields[1].isEmpty, !fields[1].contains("\n") else { return nil }
            switch fields[0] {
            case "A": self = .alive(String(fields[1]))
            case "B": self = .leaving(String(fields[1]))
            default: return nil
            }
        }
    }

    /// One change per thread (the newest position) and per learner-level event.
    static func coalesce(_ changes: [LiveChange]) -> [LiveChange] {
        var newest: [LiveChange: Int64] = [:]
        var order: [LiveChange] = []
        for change in changes {
            var key = change
            key.eventSeq = 0
            if let seen = newest[key] {
                newest[key] = max(seen, change.eventSeq)
            } else {
                newest[key] = change.eventSeq
                order.append(key)
            }
        }
        return order.map { key in
            var change = key
            change.eventSeq = newest[key] ?? 0
            return change
        }
    }
}

/// The other instances one hub has heard on the bus, and when last: pure logic, tested without a bus. Bounded: at
/// most `maxPeers` instances, ids of at most `maxIDBytes` bytes (ours are 13); a payload past either is not counted,
/// so that a bus that carries junk (or a forged flood of presence) cannot grow the map or shrink the rate-limit
/// share without end.
struct LivePeers: Sendable {
    static let maxPeers = 1_024
    static let maxIDBytes = 64

    private(set) var lastHeard: [String: ContinuousClock.Instant] = [:]

    /// The instances alive as this one knows them, itself included.
    var instances: Int { self.lastHeard.count + 1 }

    /// Records `instance` as heard at `now`; returns the new count of instances when it changed.
    mutating func heard(_ instance: String, at now: ContinuousClock.Instant) -> Int? {
        guard instance.utf8.count <= Self.maxIDBytes else { return nil }
        if self.lastHeard[instance] != nil {
            self.lastHeard[instance] = now
            return nil
        }
        guard self.lastHeard.count < Self.maxPeers else { return nil }
        self.lastHeard[instance] = now
        return self.instances
    }

    /// Forgets `instance` (it said it is leaving); returns the new count when it changed.
    mutating func forget(_ instance: String) -> Int? {
        self.lastHeard.removeValue(forKey: instance) == nil ? nil : self.instances
    }

    /// Forgets the instances not heard from within `horizon` of `now`; returns the new count when it changed.
    mutating func expire(now: ContinuousClock.Instant, horizon: Duration) -> Int? {
        let before = self.lastHeard.count
        self.lastHeard = self.lastHeard.filter { now - $0.value < horizon }
        return self.lastHeard.count == before ? nil : self.instances
    }
}

/// One open live stream, as the hub sees it: what it watches, and how far it has read.
public final class LiveSubscription: Sendable {
    /// What a stream watches.
    public enum Interest: Sendable, Hashable {
        /// One thread's events.
        case thread(String)
        /// The tenant's outbox (an inbox or an event stream), for these learners only, or for all when nil.
        case feed(learners: Set<String>?)
    }

    public let tenantID: String
    public let interest: Interest
    let signal = LiveSignal()
    private let positions = Mutex<(thread: Int64, feed: OutboxCursor)>((0, .origin))

    init(tenantID: String, interest: Interest) {
        self.tenantID = tenantID
        self.interest = interest
    }

    /// Waits until the hub says there may be something new, at most `timeout`; true when woken.
    public func wait(timeout: Duration) async -> Bool {
        await self.signal.wait(timeout: timeout)
    }

    /// Records the position of the newest thread event delivered (the periodic check compares it with the thread).
    public func delivered(threadPosition: Int64) {
        self.positions.withLock { $0.thread = max($0.thread, threadPosition) }
    }

    /// Records how far the outbox has been read (the periodic check compares it with the newest event).
    public func scanned(feedPosition: OutboxCursor) {
        self.positions.withLock { $0.feed = max($0.feed, feedPosition) }
    }

    var threadPosition: Int64 { self.positions.withLock { $0.thread } }
    var feedPosition: OutboxCursor { self.positions.withLock { $0.feed } }

    func wants(learner: String?) -> Bool {
        guard case .feed(let learners) = self.interest else { return false }
        guard let learners, let learner else { return true }
        return learners.contains(learner)
    }
}

/// Wakes live streams when something they watch commits, on this instance or on another one.
///
/// Writers call `published` after their transaction commits: local streams are woken at once, and the changes
/// (ids and positions only) are handed to a coalescer that sends one `pg_notify` per short window on a pooled
/// connection - never inside the write transaction, whose commit would then take PostgreSQL's global notify lock.
/// Every instance LISTENs on one connection and wakes its streams for the changes of the others. Streams read the
/// rows themselves, under their caller's tenant and scope; a notification is only a hint. A lost one costs
/// latency, never an event: after every (re)connection of the LISTEN connection all streams are woken, and a
/// periodic check compares each watched thread's newest position (and each tenant's newest outbox event) with
/// what its streams have read.
public final class LiveHub: Service, Sendable {
    /// How the hub works.
    public struct Configuration: Sendable {
        /// The libpq connection string of the LISTEN connection; nil runs without other instances (no NOTIFY, no
        /// LISTEN).
        public var listenConninfo: String?
        /// The notification channel.
        public var channel: String
        /// How often the periodic check runs.
        public var checkInterval: Duration
        /// How long changes are collected before one notification carries them.
        public var coalesceWindow: Duration
        /// NATS server URLs: when set, hints and presence go over NATS (subject: `channel`) instead of
        /// LISTEN/NOTIFY, and `listenConninfo` is not used.
        public var natsURLs: [String]
        /// A CA file (PEM) for `tls://` NATS servers; nil: the system's.
        public var natsCAFile: String?
        /// How often this instance says it is alive on the bus; an instance not heard from for three intervals
        /// is gone.
        public var announceInterval: Duration

        /// Creates a configuration.
        public init(
            listenConninfo: String?,
            channel: String = "chat_live",
            checkInterval: Duration = .seconds(1),
            coalesceWindow: Duration = .milliseconds(1),
            natsURLs: [String] = [],
            natsCAFile: String? = nil,
            announceInterval: Duration = .seconds(2)
        ) {
            self.listenConninfo = listenConninfo
            self.channel = channel
            self.checkInterval = checkInterval
            self.coalesceWindow = coalesceWindow
            self.natsURLs = natsURLs
            self.natsCAFile = natsCAFile
            self.announceInterval = announceInterval
        }

        /// Which bus the hub talks to other instances over, if any.
        public var busName: String {
            !self.natsURLs.isEmpty ? "nats" : self.listenConninfo != nil ? "postgres" : "none"
        }
    }

    private struct TenantStreams {
        var threads: [String: [ObjectIdentifier: LiveSubscription]] = [:]
        var feeds: [ObjectIdentifier: LiveSubscription] = [:]
        var isEmpty: Bool { self.threads.isEmpty && self.feeds.isEmpty }
    }

    /// This process, in notifications (its own come back to it and are skipped).
    public let instanceID: String
    let configuration: Configuration
    private let pool: PGPool
    private let repository: LiveRepository
    private let logger: Logger
    private let streams = Mutex<[String: TenantStreams]>([:])
    private let outgoing = Mutex<[LiveChange]>([])
    private let outgoingSignal = LiveSignal()
    /// Notification lag, the watermark's lag and the feeds' backlog; nil: not measured.
    let metrics: LiveMetrics?
    /// The bus to the other instances; nil: this instance is alone.
    private let bus: (any LiveBus)?
    /// The other instances heard from, and when last.
    private let peers = Mutex(LivePeers())
    /// Told the number of instances (this one included) whenever it changes.
    private let instancesChanged: (@Sendable (Int) -> Void)?

    /// Creates a hub; `run()` starts its bus (LISTEN connection or NATS), notifier, announcements and periodic
    /// check.
    ///
    /// - Parameter instancesChanged: told how many instances are alive, this one included, when that changes (the
    ///   rate limiter takes its share of the global limits from it).
    public init(
        pool: PGPool,
        configuration: Configuration,
        logger: Logger,
        metrics: LiveMetrics? = nil,
        instancesChanged: (@Sendable (Int) -> Void)? = nil
    ) {
        self.pool = pool
        self.metrics = metrics
        self.repository = LiveRepository(pool: pool)
        self.configuration = configuration
        self.logger = logger
        self.instancesChanged = instancesChanged
        var generator = SystemRandomNumberGenerator()
        let instanceID = String(generator.next(), radix: 36)
        self.instanceID = instanceID
        if !configuration.natsURLs.isEmpty {
            self.bus = NATSLiveBus(
                configuration: .init(
                    urls: configuration.natsURLs,
                    subject: configuration.channel,
                    caFile: configuration.natsCAFile
                ),
                name: "chatd-\(instanceID)",
                logger: logger
            )
        } else if let conninfo = configuration.listenConninfo {
            self.bus = PostgresLiveBus(conninfo: conninfo, channel: configuration.channel, pool: pool, logger: logger)
        } else {
            self.bus = nil
        }
    }

    /// The bus's last connection error, when it keeps one (NATS does).
    public var busError: String? { self.bus?.lastError }

    /// The instances alive as this one knows them, itself included.
    public var instances: Int { self.peers.withLock { $0.instances } }

    /// Registers a stream. Register before the first read, so that nothing committed after that read is missed.
    public func subscribe(tenantID: String, interest: LiveSubscription.Interest) -> LiveSubscription {
        let subscription = LiveSubscription(tenantID: tenantID, interest: interest)
        let key = ObjectIdentifier(subscription)
        self.streams.withLock { streams in
            switch interest {
            case .thread(let thread):
                streams[tenantID, default: TenantStreams()].threads[thread, default: [:]][key] =
                    subscription
            case .feed: streams[tenantID, default: TenantStreams()].feeds[key] = subscription
            }
        }
        return subscription
    }

    /// Removes a stream.
    public func unsubscribe(_ subscription: LiveSubscription) {
        let key = ObjectIdentifier(subscription)
        self.streams.withLock { streams in
            guard var tenant = streams[subscription.tenantID] else { return }
            switch subscription.interest {
            case .thread(let thread):
                tenant.threads[thread]?[key] = nil
                if tenant.threads[thread]?.isEmpty == true { tenant.threads[thread] = nil }
            case .feed:
                tenant.feeds[key] = nil
            }
            streams[subscription.tenantID] = tenant.isEmpty ? nil : tenant
        }
    }

    /// Call after a transaction with events committed: wakes this instance's streams and tells the others.
    public func published(_ changes: [LiveChange]) {
        // A mutation under an idempotency key commits after its handler returns: its streams are woken then.
        if let claim = IdempotencyClaim.current {
            claim.afterCommit { self.publishNow(changes) }
        } else {
            self.publishNow(changes)
        }
    }

    private func publishNow(_ changes: [LiveChange]) {
        self.wake(changes)
        guard self.bus != nil else { return }
        self.outgoing.withLock { $0.append(contentsOf: changes) }
        self.outgoingSignal.signal()
    }

    /// Wakes the streams that watch any of `changes`.
    func wake(_ changes: [LiveChange]) {
        let woken = self.streams.withLock { streams -> [LiveSubscription] in
            var woken: [LiveSubscription] = []
            for change in changes {
                guard let tenant = streams[change.tenantID] else { continue }
                if let thread = change.threadID, let watchers = tenant.threads[thread] {
                    for watcher in watchers.values
                    where change.eventSeq == 0 || watcher.threadPosition < change.eventSeq {
                        woken.append(watcher)
                    }
                }
                for feed in tenant.feeds.values where feed.wants(learner: change.learnerID) {
                    woken.append(feed)
                }
            }
            return woken
        }
        for subscription in woken { subscription.signal.signal() }
    }

    /// Wakes every stream (after the LISTEN connection was re-established: notifications may have been lost).
    func wakeAll() {
        let all = self.streams.withLock { streams in
            streams.values.flatMap { tenant in
                Array(tenant.feeds.values) + tenant.threads.values.flatMap { $0.values }
            }
        }
        for subscription in all { subscription.signal.signal() }
    }

    /// Runs the bus, the notifier, the announcements and the periodic check until graceful shutdown or
    /// cancellation; on the way out says on the bus that this instance is leaving.
    public func run() async throws {
        await withTaskGroup(of: Void.self) { outer in
            // The bus outlives the rest, so that the last word on it can be that this instance is leaving.
            if let bus = self.bus { outer.addTask { await bus.run() } }
            outer.addTask {
                await cancelWhenGracefulShutdown {
                    await withTaskGroup(of: Void.self) { group in
                        if let bus = self.bus {
                            group.addTask { await self.consume(bus.events) }
                            group.addTask { await self.notifyLoop(bus) }
                            group.addTask { await self.announceLoop(bus) }
                        }
                        group.addTask { await self.checkLoop() }
                        await group.waitForAll()
                    }
                }
                // The others take up this instance's share of the limits at once.
                try? await self.bus?.publish([LiveNotification.Presence.leaving(self.instanceID).payload])
            }
            await outer.next()
            outer.cancelAll()
        }
    }

    private func consume(_ events: AsyncStream<LiveBusEvent>) async {
        for await event in events {
            switch event {
            case .resync:
                self.wakeAll()
            case .message(let payload):
                if let presence = LiveNotification.Presence(payload: payload) {
                    switch presence {
                    case .alive(let instance): self.heard(from: instance)
                    case .leaving(let instance): self.forget(instance)
                    }
                    continue
                }
                guard let (instance, sentAt, changes) = LiveNotification.decode(payload) else {
                    self.logger.warning("ignored a malformed live notification")
                    continue
                }
                guard instance != self.instanceID else { continue }
                self.heard(from: instance)
                self.wake(changes)
                if let sentAt { self.metrics?.notificationReceived(sentAtMicros: sentAt) }
            }
        }
    }

    private func heard(from instance: String) {
        guard instance != self.instanceID else { return }
        let now = ContinuousClock.now
        if let count = self.peers.withLock({ $0.heard(instance, at: now) }) { self.instancesChange(to: count) }
    }

    private func forget(_ instance: String) {
        if let count = self.peers.withLock({ $0.forget(instance) }) { self.instancesChange(to: count) }
    }

    /// Forgets the instances not heard from for three announce intervals.
    func expirePeers(now: ContinuousClock.Instant = .now) {
        let horizon = self.configuration.announceInterval * 3
        if let count = self.peers.withLock({ $0.expire(now: now, horizon: horizon) }) {
            self.instancesChange(to: count)
        }
    }

    private func instancesChange(to count: Int) {
        self.logger.info("live instances changed", metadata: ["live.instances": "\(count)"])
        self.metrics?.instances.record(count)
        self.instancesChanged?(count)
    }

    private func announceLoop(_ bus: any LiveBus) async {
        self.metrics?.instances.record(1)
        while !Task.isCancelled {
            do {
                try await bus.publish([LiveNotification.Presence.alive(self.instanceID).payload])
            } catch {
                self.logger.debug("presence not announced", metadata: [LogKey.error: "\(error)"])
            }
            try? await Task.sleep(for: self.configuration.announceInterval)
            self.expirePeers()
        }
    }

    private func notifyLoop(_ bus: any LiveBus) async {
        while !Task.isCancelled {
            _ = await self.outgoingSignal.wait(timeout: .seconds(60))
            if Task.isCancelled { return }
            try? await Task.sleep(for: self.configuration.coalesceWindow)
            let changes = self.outgoing.withLock { pending in
                defer { pending = [] }
                return pending
            }
            guard !changes.isEmpty else { continue }
            let payloads = LiveNotification.encode(
                instance: self.instanceID,
                sentAtMicros: LiveMetrics.nowMicros,
                changes: LiveNotification.coalesce(changes)
            )
            do {
                try await bus.publish(payloads)
            } catch {
                // The other instances learn of these changes from their periodic check instead.
                self.logger.info("live notification not sent", metadata: [LogKey.error: "\(error)"])
            }
        }
    }

    private func checkLoop() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: self.configuration.checkInterval)
            if Task.isCancelled { return }
            await self.check()
        }
    }

    /// The safety net: wakes the streams that are behind what the database holds. Measures, when metrics are
    /// kept, the watermark's lag and the backlog of the slowest feed of each tenant.
    func check() async {
        if let metrics = self.metrics {
            do {
                metrics.watermarkLag.record(try await self.repository.watermarkLagSeconds())
            } catch {
                self.logger.debug("watermark lag not measured", metadata: [LogKey.error: "\(error)"])
            }
        }
        var backlog = 0
        defer { self.metrics?.backlog.record(backlog) }
        let snapshot = self.streams.withLock { $0 }
        for (tenantID, tenant) in snapshot {
            let context = TenantContext(tenantID: tenantID, userID: "chatd-live", role: .service)
            do {
                let threadIDs = Array(tenant.threads.keys)
                var index = 0
                while index < threadIDs.count {
                    let chunk = Array(threadIDs[index..<min(index + 1_000, threadIDs.count)])
                    index += chunk.count
                    let positions = try await self.repository.threadPositions(context, threadIDs: chunk)
                    for thread in chunk {
                        // A thread that is gone is reported to its streams, which end.
                        let position = positions[thread] ?? Int64.max
                        for watcher in tenant.threads[thread, default: [:]].values
                        where watcher.threadPosition < position {
                            watcher.signal.signal()
                        }
                    }
                }
                if !tenant.feeds.isEmpty, let newest = try await self.repository.newestCursor(context) {
                    var slowest = newest
                    for feed in tenant.feeds.values where feed.feedPosition < newest {
                        feed.signal.signal()
                        slowest = min(slowest, feed.feedPosition)
                    }
                    if self.metrics != nil, slowest < newest {
                        backlog += try await self.repository.readableEvents(
                            context,
                            after: slowest,
                            cap: LiveMetrics.backlogCap
                        )
                    }
                }
            } catch {
                self.logger.info(
                    "live check failed",
                    metadata: [LogKey.error: "\(error)", LogKey.tenant: "\(tenantID)"]
                )
            }
        }
    }
}
