import ChatStore
import Testing

@testable import ChatServices

@Suite("Live delivery: notification payloads, wake-up signals and outbox cursors")
struct LiveNotificationTests {
    static let tenant = "a0000000-0000-4000-8000-000000000001"

    func change(_ thread: Int, _ seq: Int64, learner: String? = "l1") -> LiveChange {
        LiveChange(tenantID: Self.tenant, threadID: "thread-\(thread)", learnerID: learner, eventSeq: seq)
    }

    @Test("payloads round-trip and stay under PostgreSQL's 8000-byte limit, split as needed")
    func roundTripAndSplit() throws {
        let changes =
            (0..<500).map { self.change($0, Int64($0) * 3) } + [
                LiveChange(tenantID: Self.tenant, threadID: nil, learnerID: nil, eventSeq: 0)
            ]
        let payloads = LiveNotification.encode(instance: "abc", sentAtMicros: 1_700_000_000_000_000, changes: changes)
        #expect(payloads.count > 1)
        #expect(payloads.allSatisfy { $0.utf8.count <= 7_999 })
        var decoded: [LiveChange] = []
        for payload in payloads {
            let (instance, sentAt, part) = try #require(LiveNotification.decode(payload))
            #expect(instance == "abc" && sentAt == 1_700_000_000_000_000)
            decoded += part
        }
        #expect(decoded == changes)
        #expect(LiveNotification.encode(instance: "abc", sentAtMicros: 1, changes: []).isEmpty)
        // An earlier version's header has no time: still read.
        let earlier = try #require(LiveNotification.decode("1 old\n\(Self.tenant) t1 - 4"))
        #expect(earlier.instance == "old" && earlier.sentAtMicros == nil && earlier.changes.count == 1)
    }

    @Test("presence payloads round-trip; change payloads and junk are not presence")
    func presence() {
        for presence in [LiveNotification.Presence.alive("abc"), .leaving("abc")] {
            #expect(LiveNotification.Presence(payload: presence.payload) == presence)
        }
        let change = LiveNotification.encode(
            instance: "abc",
            sentAtMicros: 1,
            changes: [LiveChange(tenantID: "t", threadID: nil, learnerID: nil, eventSeq: 0)]
        )[0]
        #expect(LiveNotification.Presence(payload: change) == nil)
        for junk in ["A", "A ", "C abc", "A abc def", "A a\nb", ""] {
            #expect(LiveNotification.Presence(payload: junk) == nil, "\(junk)")
        }
    }

    @Test("peers: counted once, refreshed, forgotten on leaving or after the horizon; bounded in number and id size")
    func peers() {
        var peers = LivePeers()
        let start = ContinuousClock.now
        #expect(peers.heard("a", at: start) == 2)
        #expect(peers.heard("a", at: start + .seconds(1)) == nil, "heard again: no change")
        #expect(peers.heard("b", at: start) == 3)
        #expect(peers.forget("b") == 2 && peers.forget("b") == nil)
        // "a" was refreshed at +1 s: still alive at +6.5 s with a 6 s horizon, gone at +7.5 s.
        #expect(peers.expire(now: start + .milliseconds(6_500), horizon: .seconds(6)) == nil)
        #expect(peers.expire(now: start + .milliseconds(7_500), horizon: .seconds(6)) == 1)
        // Past the bounds: a flood of ids stops at maxPeers, an oversized id is not counted.
        for index in 0..<(LivePeers.maxPeers + 500) { _ = peers.heard("peer-\(index)", at: start) }
        #expect(peers.instances == LivePeers.maxPeers + 1)
        var fresh = LivePeers()
        #expect(fresh.heard(String(repeating: "x", count: LivePeers.maxIDBytes + 1), at: start) == nil)
        #expect(fresh.instances == 1)
    }

    @Test("a bus whose buffer overflows says resync after the drop, so that no lost hint goes unnoticed")
    func overflowResyncs() async {
        let (events, continuation) = AsyncStream.makeStream(of: LiveBusEvent.self, bufferingPolicy: .bufferingNewest(2))
        continuation.deliver(.message("1"))
        continuation.deliver(.message("2"))
        continuation.deliver(.message("3"))
        continuation.finish()
        var seen: [LiveBusEvent] = []
        for await event in events { seen.append(event) }
        #expect(seen.last == .resync, "\(seen)")
        #expect(seen.count == 2)
    }

    @Test("malformed payloads are refused, not half-read")
    func malformed() {
        for payload in [
            "", "2 abc", "1", "1 abc\nt th l", "1 abc\nt th l notanumber", "1 abc\n t th l 1 x", "1 abc x\nt th l 1",
            "1  5\nt th l 1", "1 abc 5 6\nt th l 1",
        ] {
            #expect(LiveNotification.decode(payload) == nil, "\(payload)")
        }
    }

    @Test("coalescing keeps one change per thread, at its newest position, in first-seen order")
    func coalesce() {
        let coalesced = LiveNotification.coalesce([
            self.change(1, 5), self.change(2, 1), self.change(1, 7), self.change(1, 6), self.change(2, 2),
        ])
        #expect(coalesced == [self.change(1, 7), self.change(2, 2)])
    }

    @Test("a signal sent while nobody waits is kept for the next wait; a wait without one times out")
    func signal() async {
        let signal = LiveSignal()
        #expect(await signal.wait(timeout: .milliseconds(20)) == false)
        signal.signal()
        #expect(await signal.wait(timeout: .seconds(5)) == true)
        #expect(await signal.wait(timeout: .milliseconds(20)) == false)
        async let woken = signal.wait(timeout: .seconds(10))
        try? await Task.sleep(for: .milliseconds(50))
        signal.signal()
        #expect(await woken == true)
    }

    @Test("many waits share one timer, each ends at its own deadline; a cancelled wait ends at once")
    func sharedTimer() async {
        let timer = DeadlineTimer(resolution: .milliseconds(20))
        let signals = (0..<1000).map { _ in LiveSignal(timer: timer) }
        let clock = ContinuousClock()
        let outcomes = await withTaskGroup(of: (Int, Bool, Duration).self) { group in
            for (index, signal) in signals.enumerated() {
                group.addTask {
                    // Timed from the wait's own start: on a loaded machine the task may start late.
                    let began = clock.now
                    let woken = await signal.wait(timeout: .milliseconds(index % 2 == 0 ? 100 : 300))
                    return (index, woken, clock.now - began)
                }
            }
            var outcomes: [(Int, Bool, Duration)] = []
            for await outcome in group { outcomes.append(outcome) }
            return outcomes
        }
        #expect(outcomes.allSatisfy { !$0.1 })
        #expect(outcomes.filter { $0.0 % 2 == 0 }.allSatisfy { $0.2 >= .milliseconds(100) && $0.2 < .seconds(5) })
        #expect(outcomes.filter { $0.0 % 2 == 1 }.allSatisfy { $0.2 >= .milliseconds(300) })
        // A new wait of the same signal replaces its entry: the heap holds one per signal.
        let signal = LiveSignal(timer: timer)
        for _ in 0..<100 {
            async let woken = signal.wait(timeout: .seconds(60))
            try? await Task.sleep(for: .milliseconds(1))
            signal.signal()
            _ = await woken
        }
        #expect(timer.pending <= 1)
        let waiter = Task { await signal.wait(timeout: .seconds(60)) }
        try? await Task.sleep(for: .milliseconds(20))
        let cancelledAt = clock.now
        waiter.cancel()
        #expect(await waiter.value == false)
        #expect(clock.now - cancelledAt < .seconds(5))
    }

    @Test("outbox cursors: the token round-trips, order follows (transaction, id), junk is refused")
    func cursors() {
        let cursor = OutboxCursor(txID: 123_456, id: 42)
        #expect(OutboxCursor(token: cursor.token) == cursor)
        #expect(OutboxCursor(txID: 1, id: 99) < OutboxCursor(txID: 2, id: 1))
        #expect(OutboxCursor(txID: 2, id: 1) < OutboxCursor(txID: 2, id: 2))
        for junk in ["", "e1.1", "e1.-1.2", "e2.1.2", "e1.1.2.3", "e1.+1.2", "e1.99999999999999999999.1", "e1. 1.2"] {
            #expect(OutboxCursor(token: junk) == nil, "\(junk)")
        }
    }
}
