import ChatAuth
import ChatClient
import ChatProto
import ChatRPC
import ChatServices
import ChatStoreTestSupport
import ChatTestSupport
import Foundation
import Synchronization
import Testing

@testable import ChatStore

/// A call that must be refused as INVALID_ARGUMENT naming `field` (never INTERNAL, never a result).
private func expectInvalid(
    _ what: String,
    field: String,
    sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () async throws -> Void
) async {
    do {
        try await body()
        Issue.record("\(what): accepted", sourceLocation: sourceLocation)
    } catch let error as RPCError {
        #expect(error.code == .invalidArgument, "\(what): \(error)", sourceLocation: sourceLocation)
        #expect(error.message.hasPrefix("\(field):"), "\(what): \(error.message)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("\(what): \(error)", sourceLocation: sourceLocation)
    }
}

/// The first response of a stream, then the stream is left (cancelled).
private func first<Response: ProtoMessage>(
    _ open: @escaping @Sendable () async throws -> ResponseStream<Response>
) async throws -> Response? {
    for try await response in try await open() { return response }
    return nil
}

/// Runs a stream until its first response or its end: throws its status when it ends in error.
private func drainFirst<Response: ProtoMessage>(
    _ open: @escaping @Sendable () async throws -> ResponseStream<Response>
) async throws {
    _ = try await first(open)
}

/// The variants of a genuine token a hostile or careless client might send.
private func variants(of token: String, foreign: String, stale: String) -> [(String, String)] {
    var flipped = Array(token.utf8)
    let index = flipped.count / 2
    flipped[index] = flipped[index] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
    return [
        ("another caller's token", foreign),
        ("an altered token", String(decoding: flipped, as: UTF8.self)),
        ("a truncated token", String(token.dropLast(4))),
        ("a token of a retired key", stale),
        (
            "the plain text of an old token",
            "cDF8MTc5MDAwMDAwMDAwMDAwMHw3ZTAwMDAwMC0wMDAwLTQwMDAtODAwMC0wMDAwMDAwMDAwMDF8Ki8q"
        ),
        ("not base64url", "p1|x|y"),
    ]
}

@Suite("Page tokens and cursors are sealed: foreign, forged, truncated, stale-key and out-of-range ones refused")
struct PageTokenTests {
    @Test("every list and watch RPC refuses every kind of bad token with INVALID_ARGUMENT")
    func everyListAndWatch() async throws {
        let harness = try await ServiceHarness()
        // Another deployment's key: its tokens are "stale" here.
        let other = try await ServiceHarness(
            sharing: harness.database,
            sealer: try TokenSealer(keys: [TokenSealer.Key(id: 9, secret: Array(repeating: 9, count: 32))])
        )
        let admin = try harness.client(.tenantAdmin)
        let otherAdmin = try harness.client(.tenantAdmin, user: "admin-2")
        let retiredAdmin = try other.client(.tenantAdmin)
        let officer = try harness.client(.privacyOfficer, user: "officer-1")
        let otherOfficer = try harness.client(.privacyOfficer, user: "officer-2")
        let retiredOfficer = try other.client(.privacyOfficer, user: "officer-1")
        let service = try harness.client(.service, user: "indexer")
        let otherService = try harness.client(.service, user: "indexer-2")
        let retiredService = try other.client(.service, user: "indexer")

        var threads: [String] = []
        for index in 0..<3 {
            let thread = try await admin.createThread(
                CreateThreadRequest(learnerId: Fixture.learnerA1, title: "T\(index)")
            )
            threads.append(thread.thread!.id)
        }
        for index in 0..<3 {
            _ = try await admin.sendMessage(
                SendMessageRequest(threadId: threads[0], body: "m\(index)", idempotencyKey: "k\(index)")
            )
        }
        _ = try await officer.placeLegalHold(PlaceLegalHoldRequest(learnerId: Fixture.learnerA1, reason: "r1"))
        _ = try await officer.placeLegalHold(PlaceLegalHoldRequest(learnerId: Fixture.learnerA2, reason: "r2"))

        let page = PageRequest(pageSize: 1)
        // ListThreads.
        let threadsRequest = ListThreadsRequest(page: page)
        let threadToken = try await admin.listThreads(threadsRequest).page!.nextPageToken
        #expect(!threadToken.isEmpty)
        #expect(
            try await admin.listThreads(ListThreadsRequest(page: .init(pageSize: 1, pageToken: threadToken))).threads
                .count == 1
        )
        for (what, token) in variants(
            of: threadToken,
            foreign: try await otherAdmin.listThreads(threadsRequest).page!.nextPageToken,
            stale: try await retiredAdmin.listThreads(threadsRequest).page!.nextPageToken
        ) {
            await expectInvalid("ListThreads, \(what)", field: "page.page_token") {
                _ = try await admin.listThreads(ListThreadsRequest(page: .init(pageSize: 1, pageToken: token)))
            }
        }
        // The same token with another filter is another query.
        await expectInvalid("ListThreads, another query", field: "page.page_token") {
            _ = try await admin.listThreads(
                ListThreadsRequest(page: .init(pageSize: 1, pageToken: threadToken), learnerId: Fixture.learnerA1)
            )
        }
        // Sealed with the real key but holding times PostgreSQL cannot hold (as a server bug or a leaked key
        // would): still INVALID_ARGUMENT, never INTERNAL.
        for micros in [Int64.max, Int64.min] {
            let forged = ServiceHarness.sealer.seal(
                Array("\(micros)|\(micros)|\(threads[0])".utf8),
                purpose: "threads",
                binding: [Fixture.tenantA, "tenant_admin-1", "*/*"]
            )
            await expectInvalid("ListThreads, time \(micros)", field: "page.page_token") {
                _ = try await admin.listThreads(ListThreadsRequest(page: .init(pageSize: 1, pageToken: forged)))
            }
        }

        // ListMessages.
        let messagesRequest = ListMessagesRequest(threadId: threads[0], page: page)
        let messageToken = try await admin.listMessages(messagesRequest).page!.nextPageToken
        #expect(!messageToken.isEmpty)
        for (what, token) in variants(
            of: messageToken,
            foreign: try await otherAdmin.listMessages(messagesRequest).page!.nextPageToken,
            stale: try await retiredAdmin.listMessages(messagesRequest).page!.nextPageToken
        ) {
            await expectInvalid("ListMessages, \(what)", field: "page.page_token") {
                _ = try await admin.listMessages(
                    ListMessagesRequest(threadId: threads[0], page: .init(pageSize: 1, pageToken: token))
                )
            }
        }
        await expectInvalid("ListMessages, another thread", field: "page.page_token") {
            _ = try await admin.listMessages(
                ListMessagesRequest(threadId: threads[1], page: .init(pageSize: 1, pageToken: messageToken))
            )
        }

        // ListLegalHolds.
        let holdsRequest = ListLegalHoldsRequest(page: page)
        let holdToken = try await officer.listLegalHolds(holdsRequest).page!.nextPageToken
        #expect(!holdToken.isEmpty)
        for (what, token) in variants(
            of: holdToken,
            foreign: try await otherOfficer.listLegalHolds(holdsRequest).page!.nextPageToken,
            stale: try await retiredOfficer.listLegalHolds(holdsRequest).page!.nextPageToken
        ) {
            await expectInvalid("ListLegalHolds, \(what)", field: "page.page_token") {
                _ = try await officer.listLegalHolds(ListLegalHoldsRequest(page: .init(pageSize: 1, pageToken: token)))
            }
        }

        // ListAuditRecords (and its time filters).
        let auditRequest = ListAuditRecordsRequest(page: page)
        let auditToken = try await officer.listAuditRecords(auditRequest).page!.nextPageToken
        #expect(!auditToken.isEmpty)
        for (what, token) in variants(
            of: auditToken,
            foreign: try await otherOfficer.listAuditRecords(auditRequest).page!.nextPageToken,
            stale: try await retiredOfficer.listAuditRecords(auditRequest).page!.nextPageToken
        ) {
            await expectInvalid("ListAuditRecords, \(what)", field: "page.page_token") {
                _ = try await officer.listAuditRecords(
                    ListAuditRecordsRequest(page: .init(pageSize: 1, pageToken: token))
                )
            }
        }
        for micros in [Int64.max, Int64.min] {
            let forged = ServiceHarness.sealer.seal(
                Array("\(micros)|\(threads[0])".utf8),
                purpose: "audit",
                binding: [Fixture.tenantA, "officer-1", "*/0/0/0"]
            )
            await expectInvalid("ListAuditRecords, time \(micros)", field: "page.page_token") {
                _ = try await officer.listAuditRecords(
                    ListAuditRecordsRequest(page: .init(pageSize: 1, pageToken: forged))
                )
            }
        }
        await expectInvalid("ListAuditRecords, to_us out of range", field: "to_us") {
            _ = try await officer.listAuditRecords(ListAuditRecordsRequest(toUs: Int64.max))
        }

        // WatchInbox.
        let inboxCursor = try await first { try await admin.watchInbox(WatchInboxRequest()) }?.event?.cursor ?? ""
        #expect(!inboxCursor.isEmpty)
        #expect(try await first { try await admin.watchInbox(WatchInboxRequest(cursor: inboxCursor)) } != nil)
        for (what, token) in variants(
            of: inboxCursor,
            foreign: try await first { try await otherAdmin.watchInbox(WatchInboxRequest()) }?.event?.cursor ?? "",
            stale: try await first { try await retiredAdmin.watchInbox(WatchInboxRequest()) }?.event?.cursor ?? ""
        ) {
            await expectInvalid("WatchInbox, \(what)", field: "cursor") {
                try await drainFirst { try await admin.watchInbox(WatchInboxRequest(cursor: token)) }
            }
        }

        // SubscribeEvents.
        let eventCursor =
            try await first { try await service.subscribeEvents(SubscribeEventsRequest()) }?.event?.cursor ?? ""
        #expect(!eventCursor.isEmpty)
        for (what, token) in variants(
            of: eventCursor,
            foreign: try await first { try await otherService.subscribeEvents(SubscribeEventsRequest()) }?.event?
                .cursor ?? "",
            stale: try await first { try await retiredService.subscribeEvents(SubscribeEventsRequest()) }?.event?
                .cursor ?? ""
        ) {
            await expectInvalid("SubscribeEvents, \(what)", field: "cursor") {
                try await drainFirst { try await service.subscribeEvents(SubscribeEventsRequest(cursor: token)) }
            }
        }
        // A WatchInbox cursor is not a SubscribeEvents cursor.
        await expectInvalid("SubscribeEvents, an inbox cursor", field: "cursor") {
            try await drainFirst { try await service.subscribeEvents(SubscribeEventsRequest(cursor: inboxCursor)) }
        }

        // ExportLearnerData's resume token: bound to the tenant and the learner (another officer of the tenant may
        // resume an export; "foreign" is the same token sealed for another tenant).
        let exportRequest = ExportLearnerDataRequest(learnerId: Fixture.learnerA1)
        let resume = try await first { try await officer.exportLearnerData(exportRequest) }?.record?.resumeToken ?? ""
        #expect(!resume.isEmpty)
        for (what, token) in variants(
            of: resume,
            foreign: ServiceHarness.sealer.seal(
                try ServiceHarness.sealer.open(
                    resume,
                    purpose: "export",
                    binding: [Fixture.tenantA, "", Fixture.learnerA1]
                ),
                purpose: "export",
                binding: [Fixture.tenantB, "", Fixture.learnerA1]
            ),
            stale: try await first { try await retiredOfficer.exportLearnerData(exportRequest) }?.record?
                .resumeToken ?? ""
        ) {
            await expectInvalid("ExportLearnerData, \(what)", field: "resume_token") {
                try await drainFirst {
                    try await officer.exportLearnerData(
                        ExportLearnerDataRequest(learnerId: Fixture.learnerA1, resumeToken: token)
                    )
                }
            }
        }
        await expectInvalid("ExportLearnerData, another learner", field: "resume_token") {
            try await drainFirst {
                try await officer.exportLearnerData(
                    ExportLearnerDataRequest(learnerId: Fixture.learnerA2, resumeToken: resume)
                )
            }
        }

        for client in [
            admin, otherAdmin, retiredAdmin, officer, otherOfficer, retiredOfficer, service, otherService,
            retiredService,
        ] {
            await client.close()
        }
        try await other.stop()
        try await harness.stop()
    }

    @Test("a walk of 1,000 threads by activity while others post returns each thread exactly once")
    func stableWalk() async throws {
        let harness = try await ServiceHarness()
        // 1,000 threads with distinct past activity, written directly.
        _ = try await superuserQuery(
            harness.database,
            """
            INSERT INTO chat.threads (tenant_id, learner_id, title, created_by, created_by_role, created_at,
                                      updated_at, last_activity_at)
            SELECT '\(Fixture.tenantA)', '\(Fixture.learnerA1)', 'Walk ' || g, 'seed', 'teacher',
                   now() - interval '1 day' + g * interval '1 second',
                   now() - interval '1 day' + g * interval '1 second',
                   now() - interval '1 day' + g * interval '1 second'
            FROM generate_series(1, 1000) g
            """
        )
        let reader = try harness.client(.tenantAdmin)
        let writer = try harness.client(.teacher, user: "teacher-1", scope: [Fixture.learnerA1])
        let all = try await superuserQuery(
            harness.database,
            "SELECT id::text FROM chat.threads WHERE tenant_id = '\(Fixture.tenantA)' ORDER BY last_activity_at"
        ).compactMap { $0[0] }
        #expect(all.count == 1000)

        var seen: [String: Int] = [:]
        var token = ""
        var pages = 0
        var posted = 0
        repeat {
            let response = try await reader.listThreads(
                ListThreadsRequest(page: .init(pageSize: 50, pageToken: token))
            )
            for thread in response.threads { seen[thread.id, default: 0] += 1 }
            token = response.page?.nextPageToken ?? ""
            pages += 1
            // Between pages, others post to threads not yet returned (the oldest, which a walk by current activity
            // would now put before the cursor and skip) and to ones already returned (which would come round again).
            for id in [all[posted], all[999 - posted]] {
                _ = try await writer.sendMessage(
                    SendMessageRequest(threadId: id, body: "moves it", idempotencyKey: "walk-\(id)-\(pages)")
                )
            }
            posted += 1
        } while !token.isEmpty && pages < 100
        #expect(pages == 20)
        #expect(seen.count == 1000, "\(1000 - seen.count) threads skipped")
        #expect(seen.values.allSatisfy { $0 == 1 }, "\(seen.values.filter { $0 > 1 }.count) threads returned twice")
        #expect(Set(seen.keys) == Set(all))
        // A new walk sees the new order (a walk places activity of its last second by what came before it): the
        // threads posted to last come first.
        try await Task.sleep(for: .milliseconds(1100))
        let fresh = try await reader.listThreads(ListThreadsRequest(page: .init(pageSize: 1)))
        #expect(fresh.threads.first.map { [all[posted - 1], all[999 - (posted - 1)]].contains($0.id) } == true)
        await reader.close()
        await writer.close()
        try await harness.stop()
    }
}
