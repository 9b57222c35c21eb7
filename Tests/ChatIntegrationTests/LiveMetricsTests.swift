import ChatClient
import ChatDomain
import ChatProto
import ChatServices
import ChatStore
import ChatStoreTestSupport
import ChatTestSupport
import Foundation
import Testing

/// The value of one series (`name{labels}` exactly as exposed, or a bare name) in a `/metrics` answer.
func sample(_ scraped: String, _ series: String) -> Double? {
    for line in scraped.split(separator: "\n") where line.hasPrefix(series + " ") {
        return Double(line.dropFirst(series.count + 1))
    }
    return nil
}

private func scrape(_ harness: ServiceHarness) async throws -> String {
    try await httpGet(port: try #require(harness.adminPort), "/metrics").body
}

private struct Connection: @unchecked Sendable {
    let value: PGConnection
}

@Suite("Live delivery's metrics: latency, notification lag, the outbox's watermark lag and backlog")
struct LiveMetricsTests {
    @Test("delivery latency counts each live event once per stream (not the replay); the other instance's lag")
    func deliveryAndNotificationLag() async throws {
        let first = try await ServiceHarness(admin: true)
        let second = try await ServiceHarness(sharing: first.database, admin: true)
        let sender = try first.client(.tenantAdmin)
        let thread = try await sender.createThread(CreateThreadRequest(learnerId: Fixture.learnerA1, title: "M"))
            .thread!
        for index in 1...2 {
            _ = try await sender.sendMessage(
                SendMessageRequest(threadId: thread.id, body: "before \(index)", idempotencyKey: "before-\(index)")
            )
        }
        // Streams on the other instance: what they replay happened before they opened.
        let watcher = try second.client(.tenantAdmin)
        let service = try second.client(.service, user: "indexer")
        let threadLog = StreamLog.start { try await watcher.watchThread(WatchThreadRequest(threadId: thread.id)) }
        let eventLog = StreamLog.start { try await service.subscribeEvents(SubscribeEventsRequest()) }
        try await waitUntil("the replay") { threadLog.events.count == 3 && eventLog.events.count == 3 }
        for index in 1...5 {
            _ = try await sender.sendMessage(
                SendMessageRequest(threadId: thread.id, body: "live \(index)", idempotencyKey: "live-\(index)")
            )
        }
        try await waitUntil("the live messages") { threadLog.events.count == 8 && eventLog.events.count == 8 }
        let scraped = try await scrape(second)
        #expect(sample(scraped, #"chat_live_delivery_seconds_count{stream="watch_thread"}"#) == 5, "\(scraped)")
        #expect(sample(scraped, #"chat_live_delivery_seconds_count{stream="subscribe_events"}"#) == 5)
        #expect(sample(scraped, #"chat_live_delivery_seconds_count{stream="watch_inbox"}"#) == 0)
        // Woken by the first instance's notifications, whose lag it measured.
        #expect((sample(scraped, "chat_live_notification_lag_seconds_count") ?? 0) >= 1)
        // Delivered well within the largest bucket, on this machine's one clock.
        #expect(sample(scraped, #"chat_live_delivery_seconds_bucket{stream="watch_thread",le="10.0"}"#) == 5)
        await threadLog.cancel()
        await eventLog.cancel()
        try await second.stop()
        try await first.stop()
    }

    @Test("the watermark's lag is the age of the oldest open transaction holding an id; zero once it ends")
    func watermarkLag() async throws {
        let harness = try await ServiceHarness(
            hub: { .init(listenConninfo: $0, checkInterval: .milliseconds(200)) },
            admin: true
        )
        try await waitUntil("a first measurement") { () async throws -> Bool in
            sample(try await scrape(harness), "chat_outbox_watermark_lag_seconds") == 0
        }
        let open = Connection(value: try PGConnection(conninfo: harness.database.app))
        try await offPool {
            _ = try open.value.query("BEGIN")
            _ = try open.value.query("SELECT pg_current_xact_id()")
        }
        try await waitUntil("the lag grows past a second") { () async throws -> Bool in
            (sample(try await scrape(harness), "chat_outbox_watermark_lag_seconds") ?? 0) >= 1
        }
        try await offPool { _ = try open.value.query("ROLLBACK") }
        try await waitUntil("the lag is gone with the transaction") { () async throws -> Bool in
            sample(try await scrape(harness), "chat_outbox_watermark_lag_seconds") == 0
        }
        open.value.close()
        try await harness.stop()
    }

    @Test("the backlog is what the slowest feed has not read; it drains as the feed reads")
    func backlog() async throws {
        let harness = try await ServiceHarness(
            live: .init(stallLimit: .seconds(120)),
            hub: { .init(listenConninfo: $0, checkInterval: .milliseconds(200)) },
            admin: true
        )
        let service = try harness.client(.service, user: "indexer")
        // Opened and not read: its window and the server's buffer for it fill, then it reads no further.
        let stream = try await service.subscribeEvents(SubscribeEventsRequest())
        let pad = String(repeating: "p", count: 2_000)
        _ = try await superuserQuery(
            harness.database,
            """
            INSERT INTO chat.outbox (tenant_id, type, learner_id, payload)
            SELECT '\(Fixture.tenantA)', \(EventType.legalHoldPlaced.number), '\(Fixture.learnerA1)',
                   jsonb_build_object('n', n, 'pad', '\(pad)')
            FROM generate_series(1, 3000) AS n
            """
        )
        try await waitUntil("a backlog behind the stalled feed", limit: .seconds(30)) { () async throws -> Bool in
            (sample(try await scrape(harness), "chat_outbox_backlog_events") ?? 0) >= 500
        }
        var received = 0
        for try await response in stream where response.event != nil {
            received += 1
            if received == 3000 { break }
        }
        #expect(received == 3000)
        try await waitUntil("no backlog once read") { () async throws -> Bool in
            sample(try await scrape(harness), "chat_outbox_backlog_events") == 0
        }
        try await harness.stop()
    }
}
