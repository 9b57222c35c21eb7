import ChatAuth
import ChatClient
import ChatDomain
import ChatProto
import ChatRPC
import ChatServices
import ChatStoreTestSupport
import ChatTestSupport
import Foundation
import Logging
import Synchronization
import Testing

@testable import ChatStore

/// Message events of a thread stream: (position, kind, message seq, body).
private func messages(_ log: StreamLog<WatchThreadResponse>) -> [(UInt64, MessageEvent.Kind, UInt64, String)] {
    log.events.compactMap { response in
        guard let event = response.event, let message = event.messageEvent, let body = message.message else {
            return nil
        }
        return (event.seq, message.kind, body.seq, body.body)
    }
}

func send(_ client: ChatClient, _ thread: String, _ body: String) async throws -> Message {
    try await client.sendMessage(
        SendMessageRequest(threadId: thread, body: body, idempotencyKey: "k-\(UInt64.random(in: 0...UInt64.max))")
    ).message!
}

@Suite("Live delivery (real TLS, real PostgreSQL, real LISTEN/NOTIFY)")
struct LiveTests {
    @Test("WatchThread: the head first, then replay and live with no seam; edits, deletes and the thread's update")
    func watchThread() async throws {
        let harness = try await ServiceHarness()
        let guardian = try harness.client(.guardian, scope: [Fixture.learnerA1])
        let teacher = try harness.client(.teacher, scope: [Fixture.learnerA1])
        let thread = try await guardian.createThread(CreateThreadRequest(learnerId: Fixture.learnerA1, title: "Trip"))
            .thread!
        _ = try await send(guardian, thread.id, "one")
        _ = try await send(teacher, thread.id, "two")

        let log = StreamLog.start { try await guardian.watchThread(WatchThreadRequest(threadId: thread.id)) }
        try await waitUntil("the replay") { messages(log).count == 2 }
        #expect(log.events.first?.event?.head?.headSeq == 2)
        // Live: sent after the replay.
        _ = try await send(teacher, thread.id, "three")
        try await waitUntil("the live message") { messages(log).count == 3 }
        _ = try await guardian.editMessage(EditMessageRequest(threadId: thread.id, seq: 1, body: "one, edited"))
        _ = try await teacher.deleteMessage(DeleteMessageRequest(threadId: thread.id, seq: 2))
        _ = try await guardian.updateThread(
            UpdateThreadRequest(threadId: thread.id, titleUpdate: .title("School trip"))
        )
        try await waitUntil("the edit, the delete and the update") { log.events.count == 7 }
        let seen = messages(log)
        #expect(seen.map(\.0) == [1, 2, 3, 4, 5])
        #expect(seen.map(\.1) == [.created, .created, .created, .edited, .deleted])
        #expect(seen.map(\.2) == [1, 2, 3, 1, 2])
        #expect(seen[3].3 == "one, edited" && seen[4].3.isEmpty)
        guard case .thread(let update)? = log.events[6].event?.event else {
            Issue.record("expected the thread's update, got \(log.events[6])")
            return
        }
        #expect(update.kind == .updated && update.thread?.title == "School trip" && log.events[6].event?.seq == 6)
        #expect(try await guardian.getThread(GetThreadRequest(threadId: thread.id)).thread?.eventSeq == 6)

        // Resume after position 3: a compacted replay of what changed since, as it is now.
        let resumed = StreamLog.start {
            try await guardian.watchThread(WatchThreadRequest(threadId: thread.id, afterSeq: 3))
        }
        try await waitUntil("the resumed replay") { resumed.events.count == 4 }
        #expect(messages(resumed).map(\.0) == [4, 5] && messages(resumed).map(\.2) == [1, 2])

        // Deleting the thread ends both streams after a thread-deleted event.
        _ = try await harness.client(.tenantAdmin).deleteThread(DeleteThreadRequest(threadId: thread.id))
        try await waitUntil("the end of the streams") { log.ended && resumed.ended }
        #expect(log.error == nil && resumed.error == nil)
        guard case .thread(let deleted)? = log.events.last?.event?.event else {
            Issue.record("expected the thread's deletion")
            return
        }
        #expect(deleted.kind == .deleted && deleted.thread?.id == thread.id)
        try await harness.stop()
    }

    @Test("a stream sees nothing out of its scope or tenant; out-of-scope watches are refused")
    func scope() async throws {
        let harness = try await ServiceHarness()
        let adminA = try harness.client(.tenantAdmin)
        let adminB = try harness.client(.tenantAdmin, tenant: Fixture.tenantB)
        let guardian = try harness.client(.guardian, scope: [Fixture.learnerA1])
        let inA1 = try await adminA.createThread(CreateThreadRequest(learnerId: Fixture.learnerA1, title: "A1"))
            .thread!
        let inA2 = try await adminA.createThread(CreateThreadRequest(learnerId: Fixture.learnerA2, title: "A2"))
            .thread!

        await #expect(throws: RPCError.self) {
            for try await _ in try await guardian.watchThread(WatchThreadRequest(threadId: inA2.id)) {}
        }
        // Each must end in its error: a stream that simply ended would fail these.
        await #expect {
            for try await _ in try await guardian.watchInbox(WatchInboxRequest(learnerId: Fixture.learnerA2)) {}
        } throws: { error in
            (error as? RPCError)?.code == .permissionDenied
        }
        await #expect {
            for try await _ in try await guardian.watchInbox(WatchInboxRequest(cursor: "not-a-cursor")) {}
        } throws: { error in
            (error as? RPCError)?.code == .invalidArgument
        }

        let inbox = StreamLog.start { try await guardian.watchInbox(WatchInboxRequest()) }
        let tenantBInbox = StreamLog.start { try await adminB.watchInbox(WatchInboxRequest()) }
        try await waitUntil("the heads") { !inbox.events.isEmpty && !tenantBInbox.events.isEmpty }
        _ = try await send(adminA, inA2.id, "not for the guardian")
        _ = try await send(adminA, inA1.id, "for the guardian")
        let inB = try await adminB.createThread(CreateThreadRequest(learnerId: Fixture.learnerB1, title: "B1")).thread!
        _ = try await send(adminB, inB.id, "tenant B")
        try await waitUntil("the guardian's message") {
            inbox.events.contains { $0.event?.messageEvent?.message?.body == "for the guardian" }
        }
        try await waitUntil("tenant B's events") { tenantBInbox.events.count == 3 }
        // Markers committed after everything else: an inbox delivers in commit order, so once each marker is in,
        // anything that was going to arrive before it has arrived.
        _ = try await send(adminA, inA1.id, "marker")
        _ = try await send(adminB, inB.id, "marker B")
        try await waitUntil("the markers") {
            inbox.events.contains { $0.event?.messageEvent?.message?.body == "marker" }
                && tenantBInbox.events.contains { $0.event?.messageEvent?.message?.body == "marker B" }
        }
        let bodies = inbox.events.compactMap { $0.event?.messageEvent?.message?.body }
        #expect(bodies == ["for the guardian", "marker"])
        #expect(
            tenantBInbox.events.compactMap { $0.event?.messageEvent?.message?.body } == ["tenant B", "marker B"]
        )
        await inbox.cancel()
        await tenantBInbox.cancel()
        try await harness.stop()
    }

    @Test("two instances on one database: a message sent through one reaches watchers on the other")
    func twoInstances() async throws {
        let first = try await ServiceHarness()
        let second = try await ServiceHarness(sharing: first.database)
        let sender = try first.client(.guardian, scope: [Fixture.learnerA1])
        let watcher = try second.client(.guardian, scope: [Fixture.learnerA1])
        let thread = try await sender.createThread(CreateThreadRequest(learnerId: Fixture.learnerA1, title: "Two"))
            .thread!
        let threadLog = StreamLog.start { try await watcher.watchThread(WatchThreadRequest(threadId: thread.id)) }
        let inboxLog = StreamLog.start { try await watcher.watchInbox(WatchInboxRequest()) }
        try await waitUntil("the heads") { !threadLog.events.isEmpty && !inboxLog.events.isEmpty }
        for index in 1...20 {
            _ = try await send(sender, thread.id, "m\(index)")
        }
        try await waitUntil("every message on the other instance", limit: .seconds(10)) {
            messages(threadLog).count == 20
                && inboxLog.events.filter({ $0.event?.messageEvent != nil }).count == 20
        }
        #expect(messages(threadLog).map(\.2) == Array(1...20))
        #expect(inboxLog.events.compactMap { $0.event?.messageEvent?.message?.seq } == Array(1...20))
        await threadLog.cancel()
        await inboxLog.cancel()
        try await second.stop()
        try await first.stop()
    }

    @Test("graceful shutdown ends streams with UNAVAILABLE and the position to resume from")
    func drainGivesResumePosition() async throws {
        let harness = try await ServiceHarness()
        let guardian = try harness.client(.guardian, scope: [Fixture.learnerA1])
        let thread = try await guardian.createThread(CreateThreadRequest(learnerId: Fixture.learnerA1, title: "D"))
            .thread!
        for index in 1...3 { _ = try await send(guardian, thread.id, "m\(index)") }
        let log = StreamLog.start { try await guardian.watchThread(WatchThreadRequest(threadId: thread.id)) }
        let inbox = StreamLog.start { try await guardian.watchInbox(WatchInboxRequest()) }
        try await waitUntil("the replay") { messages(log).count == 3 && !inbox.events.isEmpty }
        try await harness.stop()
        try await waitUntil("the end") { log.ended && inbox.ended }
        #expect(log.rpcError?.code == .unavailable)
        #expect(log.rpcError?.resumeInfo?.afterSeq == 3)
        #expect(inbox.rpcError?.code == .unavailable)
        #expect(
            ServiceHarness.position(of: inbox.rpcError?.resumeInfo?.cursor ?? "", "inbox", user: "guardian-1") != nil
        )
    }

    @Test("a stream ends with UNAUTHENTICATED when its token expires, with the resume position")
    func tokenExpiry() async throws {
        let harness = try await ServiceHarness()
        let guardian = try harness.client(.guardian, scope: [Fixture.learnerA1], lifetime: 2)
        let thread = try await guardian.createThread(CreateThreadRequest(learnerId: Fixture.learnerA1, title: "E"))
            .thread!
        _ = try await send(guardian, thread.id, "m1")
        let log = StreamLog.start { try await guardian.watchThread(WatchThreadRequest(threadId: thread.id)) }
        try await waitUntil("the end", limit: .seconds(10)) { log.ended }
        #expect(log.rpcError?.code == .unauthenticated)
        #expect(log.rpcError?.resumeInfo?.afterSeq == 1)
        try await harness.stop()
    }

    @Test("a slow consumer stalls only itself, and is ended with RESOURCE_EXHAUSTED and its resume position")
    func slowConsumer() async throws {
        let harness = try await ServiceHarness(live: .init(stallLimit: .seconds(2)))
        let guardian = try harness.client(.guardian, scope: [Fixture.learnerA1])
        let slowClient = try harness.client(.guardian, scope: [Fixture.learnerA1])
        let thread = try await guardian.createThread(CreateThreadRequest(learnerId: Fixture.learnerA1, title: "S"))
            .thread!
        // The slow client opens a stream and does not read it: its window (1 MiB) fills, then the server's buffer
        // for the stream (one window), then the server stops reading pages for it.
        let slow = try await slowClient.watchThread(WatchThreadRequest(threadId: thread.id))
        let fast = StreamLog.start { try await guardian.watchThread(WatchThreadRequest(threadId: thread.id)) }
        try await waitUntil("the head") { !fast.events.isEmpty }
        let body = String(repeating: "x", count: 4_000)
        for index in 1...700 {
            _ = try await send(guardian, thread.id, "\(index) \(body)")
        }
        // The fast reader is not held back by the stalled one: it keeps up with the sends (however slow a loaded
        // machine makes them), so the last message reaches it soon after it is sent.
        let sent = ContinuousClock.now
        try await waitUntil("the fast reader's messages") { messages(fast).count == 700 }
        #expect(ContinuousClock.now - sent < .seconds(10))
        // Past the stall limit, the server ends the slow stream (a stalled write, counted); what it queued before
        // still arrives.
        try await waitUntil("the server gives up on the stalled stream", limit: .seconds(30)) {
            harness.server.stats.stalledWrites >= 1
        }
        var received = 0
        do {
            for try await response in slow {
                if response.event?.messageEvent != nil { received += 1 }
                // Now read slowly: the server has already given up.
            }
            Issue.record("the slow stream should have been ended")
        } catch let error as RPCError {
            #expect(error.code == .resourceExhausted)
            #expect(error.resumeInfo?.afterSeq == UInt64(received))
            #expect(received < 700)
        }
        try await harness.stop()
    }
}

/// The live property on `instances` (sharing one database): four senders spread over the instances send 25 messages
/// each at random to three threads; three watchers disconnect at random and resume on a random instance, and an
/// inbox watches on the last instance. `midway` runs when half the messages are sent (a fault to inject). Every
/// watcher must see each thread's messages exactly once, in order.
func resumingWatchersProperty(
    on instances: [ServiceHarness],
    midway: @Sendable () async throws -> Void = {}
) async throws {
    let admin = try instances[0].client(.tenantAdmin)
    var threads: [String] = []
    for index in 0..<3 {
        threads.append(
            try await admin.createThread(CreateThreadRequest(learnerId: Fixture.learnerA1, title: "P\(index)"))
                .thread!.id
        )
    }
    let senders = try (0..<4).map { index in
        try instances[index % instances.count].client(.guardian, user: "sender-\(index)", scope: [Fixture.learnerA1])
    }
    let watchers = try instances.map { try $0.client(.guardian, user: "watcher", scope: [Fixture.learnerA1]) }
    let threadIDs = threads
    let targets = threads.map { _ in Target() }
    let perSender = 25
    // An inbox on the last instance: every thread's messages must arrive in their order, each once.
    let inbox = StreamLog.start { try await watchers[watchers.count - 1].watchInbox(WatchInboxRequest()) }
    try await waitUntil("the inbox head") { !inbox.events.isEmpty }

    try await withThrowingTaskGroup(of: (Int, [UInt64])?.self) { group in
        for (index, thread) in threadIDs.enumerated() {
            let target = targets[index]
            group.addTask {
                (
                    index,
                    try await watchResuming(watchers, thread: thread, seed: UInt64(index) * 7 + 1) {
                        target.value.withLock { $0 }
                    }
                )
            }
        }
        let sent = Counts()
        for half in 0..<2 {
            if half == 1 { try await midway() }
            try await withThrowingTaskGroup(of: Void.self) { sending in
                for (index, sender) in senders.enumerated() {
                    sending.addTask {
                        var random = SplitMix64(seed: UInt64(index) + 100 + UInt64(half) * 1_000)
                        for _ in 0..<(half == 0 ? perSender / 2 : perSender - perSender / 2) {
                            let thread = Int(random.next() % 3)
                            _ = try await send(sender, threadIDs[thread], "from \(index)")
                            sent.value.withLock { $0[thread] += 1 }
                        }
                    }
                }
                try await sending.waitForAll()
            }
        }
        let counts = sent.value.withLock { $0 }
        #expect(counts.reduce(0, +) == 4 * perSender)
        for (index, target) in targets.enumerated() { target.value.withLock { $0 = counts[index] } }
        var checked = 0
        for try await result in group {
            guard let (index, seen) = result else { continue }
            #expect(seen == (0..<counts[index]).map { UInt64($0 + 1) })
            checked += 1
        }
        #expect(checked == 3)
        try await waitUntil("every message in the inbox") {
            inbox.events.filter { $0.event?.messageEvent != nil }.count == 4 * perSender
        }
        for (index, thread) in threadIDs.enumerated() {
            let seqs = inbox.events.compactMap { event -> UInt64? in
                guard let message = event.event?.messageEvent?.message, message.threadId == thread else {
                    return nil
                }
                return message.seq
            }
            #expect(seqs == (0..<counts[index]).map { UInt64($0 + 1) }, "thread \(index) in the inbox")
        }
        await inbox.cancel()
    }
}

/// A watcher that disconnects at random points and resumes from the last position it saw, on a random instance.
private func watchResuming(
    _ clients: [ChatClient],
    thread: String,
    seed: UInt64,
    target: @escaping @Sendable () -> Int?
) async throws -> [UInt64] {
    var random = SplitMix64(seed: seed)
    var after: UInt64 = 0
    var seen: [UInt64] = []
    while target().map({ seen.count < $0 }) ?? true {
        let client = clients[Int(random.next() % UInt64(clients.count))]
        let take = 1 + Int(random.next() % 8)
        var taken = 0
        do {
            for try await response in try await client.watchThread(
                WatchThreadRequest(threadId: thread, afterSeq: after)
            ) {
                if let event = response.event, let message = event.messageEvent?.message {
                    seen.append(message.seq)
                    after = event.seq
                    taken += 1
                }
                if taken >= take { break }  // disconnect
                if let target = target(), seen.count >= target { break }
            }
        } catch let error as RPCError where error.code == .unavailable {
            continue
        }
    }
    return seen
}

private final class Target: Sendable {
    let value = Mutex<Int?>(nil)
}

private final class Counts: Sendable {
    let value = Mutex<[Int]>([0, 0, 0])
}

@Suite("Live delivery properties")
struct LivePropertyTests {
    @Test(
        "concurrent senders on two instances; watchers that disconnect at random and resume see every message once, in order"
    )
    func resumingWatchersSeeEverything() async throws {
        let live = LiveService.Configuration(heartbeatInterval: .milliseconds(200))
        let first = try await ServiceHarness(live: live)
        let second = try await ServiceHarness(live: live, sharing: first.database)
        try await resumingWatchersProperty(on: [first, second])
        try await second.stop()
        try await first.stop()
    }

    @Test("an instance killed: its watchers resume on the other and lose nothing, see nothing twice")
    func instanceKilled() async throws {
        let first = try await ServiceHarness()
        let second = try await ServiceHarness(sharing: first.database)
        let sender = try second.client(.guardian, scope: [Fixture.learnerA1])
        let thread = try await sender.createThread(CreateThreadRequest(learnerId: Fixture.learnerA1, title: "K"))
            .thread!
        let onFirst = try first.client(.guardian, scope: [Fixture.learnerA1])
        let log = StreamLog.start { try await onFirst.watchThread(WatchThreadRequest(threadId: thread.id)) }
        for index in 1...5 { _ = try await send(sender, thread.id, "m\(index)") }
        try await waitUntil("the first five") { messages(log).count == 5 }
        try await first.kill()
        try await waitUntil("the stream's end") { log.ended }
        #expect(log.error != nil)
        for index in 6...8 { _ = try await send(sender, thread.id, "m\(index)") }
        let last = messages(log).last!.0
        let onSecond = try second.client(.guardian, scope: [Fixture.learnerA1])
        let resumed = StreamLog.start {
            try await onSecond.watchThread(WatchThreadRequest(threadId: thread.id, afterSeq: last))
        }
        for index in 9...10 { _ = try await send(sender, thread.id, "m\(index)") }
        try await waitUntil("the rest") { messages(resumed).count == 5 }
        #expect((messages(log) + messages(resumed)).map(\.2) == Array(1...10))
        await resumed.cancel()
        try await second.stop()
    }

    @Test("SubscribeEvents: an event whose transaction commits late is delivered, before the later ones")
    func lateCommitNotSkipped() async throws {
        let harness = try await ServiceHarness()
        let service = try harness.client(.service, user: "indexer")
        let admin = try harness.client(.tenantAdmin)
        let thread = try await admin.createThread(CreateThreadRequest(learnerId: Fixture.learnerA1, title: "L"))
            .thread!
        let log = StreamLog.start { try await service.subscribeEvents(SubscribeEventsRequest()) }
        try await waitUntil("the thread's creation") { log.events.count == 1 }

        // A transaction that writes an event first (a smaller transaction id) and commits after another one.
        let slow = Unchecked(try PGConnection(conninfo: harness.database.app))
        let insert: SQL = """
            INSERT INTO chat.outbox (tenant_id, type, learner_id, payload)
            VALUES (\(Fixture.tenantA)::uuid, \(EventType.legalHoldPlaced), \(Fixture.learnerA1)::uuid, '{"late": true}')
            """
        try await offPool {
            _ = try slow.value.query("BEGIN")
            let setup = Fixture.admin(Fixture.tenantA).setConfigStatement(statementTimeoutMilliseconds: nil)
            _ = try slow.value.query(setup)
            _ = try slow.value.query(insert)
        }
        _ = try await send(admin, thread.id, "committed first")
        // The message's event is held back: delivering it now would let a cursor skip the late one. What the
        // stream reads (the same query) stops at the watermark, below the open transaction, whichever read it is.
        let sealedHead = try #require(log.events.first?.event?.cursor)
        let head = try #require(ServiceHarness.position(of: sealedHead, "events", user: "indexer"))
        let (_, readable) = try await LiveRepository(pool: harness.pool).outbox(
            TenantContext(tenantID: Fixture.tenantA, userID: "indexer", role: .service),
            after: head,
            types: EventType.subscribable,
            learnerID: nil,
            withMessages: false,
            limit: 100
        )
        #expect(readable.isEmpty, "\(readable.map(\.type))")
        #expect(log.events.count == 1)
        try await offPool { _ = try slow.value.query("COMMIT") }
        try await waitUntil("both events") { log.events.count == 3 }
        let types = log.events.map { $0.event?.type }
        #expect(types == [.threadCreated, .legalHoldPlaced, .messageCreated])
        let sealed = log.events.compactMap { $0.event?.cursor }
        let cursors = sealed.compactMap { ServiceHarness.position(of: $0, "events", user: "indexer") }
        #expect(cursors.count == 3 && cursors == cursors.sorted() && Set(cursors).count == 3)
        // Resuming after the first event delivers the other two again, in the same order.
        let resumed = StreamLog.start {
            try await service.subscribeEvents(SubscribeEventsRequest(cursor: sealed[0]))
        }
        try await waitUntil("the resumed events") { resumed.events.count == 2 }
        #expect(resumed.events.map { $0.event?.type } == [.legalHoldPlaced, .messageCreated])
        slow.value.close()
        await log.cancel()
        await resumed.cancel()
        try await harness.stop()
    }
}

private struct Unchecked<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

/// Restarts PostgreSQL under open streams: on a private cluster, since the shared one serves the other tests.
@Suite("Live delivery across a PostgreSQL restart")
struct LiveRestartTests {
    @Test("streams stay open across a restart and deliver every message once, in order")
    func streamsSurviveRestart() async throws {
        let cluster = try await PrivateCluster.start()
        let database = cluster.database
        let harness = try await ServiceHarness(sharing: database)
        let guardian = try harness.client(.guardian, scope: [Fixture.learnerA1])

        /// Sends with one idempotency key until the server answers: a retry after an outage cannot duplicate.
        func sendRetrying(_ thread: String, _ body: String) async throws {
            for _ in 0..<300 {
                do {
                    _ = try await guardian.sendMessage(
                        SendMessageRequest(threadId: thread, body: body, idempotencyKey: "key-\(body)")
                    )
                    return
                } catch let error as RPCError where error.code == .unavailable {
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
            Issue.record("the database did not come back")
        }

        let thread = try await guardian.createThread(CreateThreadRequest(learnerId: Fixture.learnerA1, title: "R"))
            .thread!
        let threadLog = StreamLog.start { try await guardian.watchThread(WatchThreadRequest(threadId: thread.id)) }
        let inboxLog = StreamLog.start { try await guardian.watchInbox(WatchInboxRequest()) }
        try await waitUntil("the heads") { !threadLog.events.isEmpty && !inboxLog.events.isEmpty }
        for index in 1...3 { try await sendRetrying(thread.id, "before \(index)") }
        try await waitUntil("the first messages") { messages(threadLog).count == 3 }

        #expect(try await cluster.restart() == 0)
        for index in 1...3 { try await sendRetrying(thread.id, "after \(index)") }

        try await waitUntil("every message") {
            messages(threadLog).count == 6
                && inboxLog.events.filter { $0.event?.messageEvent != nil }.count == 6
        }
        #expect(!threadLog.ended && !inboxLog.ended)
        #expect(messages(threadLog).map(\.2) == Array(1...6))
        #expect(inboxLog.events.compactMap { $0.event?.messageEvent?.message?.seq } == Array(1...6))
        await threadLog.cancel()
        await inboxLog.cancel()
        try await harness.stop()
        await cluster.remove()
    }
}
