import ChatClient
import ChatDomain
import ChatProto
import ChatRPCCore
import ChatStore
import ChatStoreTestSupport
import Foundation
import Testing

/// A bounded outbox (migration 7): events older than the resume window are deleted in batches, each tenant's
/// horizon moves past them, and a cursor from before the horizon is answered OUT_OF_RANGE.
@Suite("The outbox's resume window")
struct OutboxTrimTests {
    /// The first `count` events of SubscribeEvents from the oldest kept (or after `cursor`).
    static func events(
        _ client: ChatClient,
        after cursor: String = "",
        count: Int
    ) async throws -> [OutboxEvent] {
        var iterator = try await client.subscribeEvents(SubscribeEventsRequest(cursor: cursor)).makeAsyncIterator()
        var events: [OutboxEvent] = []
        while events.count < count, let response = try await iterator.next() {
            if let event = response.event { events.append(event) }
        }
        return events
    }

    @Test(
        "events past the window are deleted in batches of every tenant; a cursor before the horizon gets OUT_OF_RANGE, one at or after it resumes"
    )
    func trim() async throws {
        let harness = try await ServiceHarness()
        let admin = try harness.client(.tenantAdmin)
        let service = try harness.client(.service, user: "indexer")
        let thread = try await admin.createThread(CreateThreadRequest(learnerId: Fixture.learnerA1, title: "T"))
            .thread!
        for index in 1...5 {
            _ = try await admin.sendMessage(SendMessageRequest(threadId: thread.id, body: "m\(index)"))
        }
        // Tenant B's own event, old too: trimming is every tenant's.
        let adminB = try harness.client(.tenantAdmin, tenant: Fixture.tenantB)
        _ = try await adminB.createThread(CreateThreadRequest(learnerId: Fixture.learnerB1, title: "B"))
        let before = try await Self.events(service, count: 6)
        #expect(before.count == 6)

        // The first four of tenant A's events, and tenant B's, are eight days old.
        let old = before.prefix(4).map { String($0.id) }.joined(separator: ",")
        _ = try await superuserQuery(
            harness.database,
            """
            UPDATE chat.outbox SET occurred_at = now() - interval '8 days'
            WHERE (tenant_id = '\(Fixture.tenantA)' AND id IN (\(old))) OR tenant_id = '\(Fixture.tenantB)'
            """
        )
        let repository = PrivacyRepository(pool: harness.pool)
        var batches: [Int] = []
        while true {
            let trimmed = try await repository.trimOutbox(window: .seconds(7 * 86_400), batchSize: 2)
            batches.append(trimmed)
            if trimmed < 2 { break }
        }
        #expect(batches == [2, 2, 1], "\(batches)")
        let left = try await superuserQuery(
            harness.database,
            "SELECT tenant_id::text, count(*) FROM chat.outbox GROUP BY tenant_id ORDER BY tenant_id"
        )
        #expect(left.map { $0[0] ?? "" } == [Fixture.tenantA], "tenant B's one event trimmed: \(left)")
        #expect(left.first?[1] == "2")

        // A cursor of a trimmed event: its successors may be gone.
        for stale in before.prefix(3) {
            do {
                _ = try await Self.events(service, after: stale.cursor, count: 1)
                Issue.record("a cursor before the horizon was served")
            } catch let error as RPCError {
                #expect(error.code == .outOfRange && error.message.contains("empty cursor"), "\(error)")
                #expect(
                    error.details.contains {
                        if case .errorInfo(let info)? = $0.detail { info.reason == "CURSOR_EXPIRED" } else { false }
                    }
                )
            }
        }
        // The cursor of the newest trimmed event lost nothing after it: it resumes with the fifth event.
        let resumed = try await Self.events(service, after: before[3].cursor, count: 2)
        #expect(resumed.map(\.id) == [before[4].id, before[5].id])
        // An empty cursor starts from the oldest event kept.
        let fresh = try await Self.events(service, count: 1)
        #expect(fresh.first?.id == before[4].id)

        // WatchInbox keeps to the same horizon. Its head's cursor (now) is served until the events after it are
        // trimmed.
        let inboxCursor = try await {
            var iterator = try await admin.watchInbox(WatchInboxRequest()).makeAsyncIterator()
            return try #require(try await iterator.next()?.event?.cursor)
        }()
        var served = try await admin.watchInbox(WatchInboxRequest(cursor: inboxCursor)).makeAsyncIterator()
        guard case .head? = try await served.next()?.event?.event else {
            Issue.record("a cursor after the horizon was not served")
            return
        }
        _ = try await admin.sendMessage(SendMessageRequest(threadId: thread.id, body: "after"))
        _ = try await superuserQuery(
            harness.database,
            "UPDATE chat.outbox SET occurred_at = now() - interval '8 days' WHERE tenant_id = '\(Fixture.tenantA)'"
        )
        #expect(try await repository.trimOutbox(window: .seconds(7 * 86_400), batchSize: 100) == 3)
        do {
            var iterator = try await admin.watchInbox(WatchInboxRequest(cursor: inboxCursor)).makeAsyncIterator()
            _ = try await iterator.next()
            Issue.record("an inbox cursor before the horizon was served")
        } catch let error as RPCError {
            #expect(error.code == .outOfRange, "\(error)")
        }
        await admin.close()
        await adminB.close()
        await service.close()
        try await harness.stop()
    }
}
