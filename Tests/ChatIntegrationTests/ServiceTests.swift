import ChatAuth
import ChatClient
import ChatProto
import ChatRPC
import ChatStore
import ChatStoreTestSupport
import Testing

func rpcCode(_ error: any Error) -> StatusCode? { (error as? RPCError)?.code }

@Suite("Thread and message services over RPC (real TLS, real PostgreSQL)")
struct ServiceTests {
    @Test("every RPC's success path: create, get, list, send, list, edit, history, delete, mark read, update, delete")
    func successPaths() async throws {
        let harness = try await ServiceHarness()
        let guardian = try harness.client(.guardian, scope: [Fixture.learnerA1])
        let teacher = try harness.client(.teacher, scope: [Fixture.learnerA1])

        let thread = try await guardian.createThread(
            CreateThreadRequest(learnerId: Fixture.learnerA1, title: "Homework")
        )
        .thread!
        #expect(thread.title == "Homework" && thread.state == .active && thread.lastSeq == 0)
        #expect(try await guardian.getThread(GetThreadRequest(threadId: thread.id)).thread == thread)

        let first = try await guardian.sendMessage(
            SendMessageRequest(threadId: thread.id, body: "Grüße! Is the homework due Monday?", idempotencyKey: "k1")
        ).message!
        #expect(first.seq == 1 && first.author?.role == .guardian)
        let second = try await teacher.sendMessage(
            SendMessageRequest(threadId: thread.id, body: "Yes, Monday.", idempotencyKey: "k1")  // other author
        ).message!
        #expect(second.seq == 2)
        #expect(try await guardian.getMessage(GetMessageRequest(threadId: thread.id, seq: 2)).message == second)

        let latest = try await guardian.listMessages(ListMessagesRequest(threadId: thread.id))
        #expect(latest.messages.map(\.seq) == [2, 1])
        let oldestFirst = try await guardian.listMessages(ListMessagesRequest(threadId: thread.id, bound: .afterSeq(0)))
        #expect(oldestFirst.messages.map(\.seq) == [1, 2])

        // Unread: the guardian has read nothing; marking read moves the cursor forward only.
        #expect(try await guardian.getThread(GetThreadRequest(threadId: thread.id)).thread?.unreadCount == 2)
        let read = try await guardian.markRead(MarkReadRequest(threadId: thread.id, upToSeq: 1))
        #expect(read.readSeq == 1 && read.unreadCount == 1)
        #expect(try await guardian.markRead(MarkReadRequest(threadId: thread.id, upToSeq: 0)).readSeq == 1)
        #expect(try await guardian.markRead(MarkReadRequest(threadId: thread.id, upToSeq: 99)).readSeq == 2)

        // Edit keeps history; a teacher (moderator) reads it.
        let edited = try await guardian.editMessage(
            EditMessageRequest(threadId: thread.id, seq: 1, body: "Is the homework due on Monday?")
        ).message!
        #expect(edited.editCount == 1 && edited.editedAtUs > 0 && edited.body == "Is the homework due on Monday?")
        let history = try await teacher.listMessageEdits(ListMessageEditsRequest(threadId: thread.id, seq: 1)).edits
        #expect(history.map(\.body) == ["Grüße! Is the homework due Monday?", "Is the homework due on Monday?"])

        // Delete: a tombstone that keeps the sequence and says who deleted it.
        let tombstone = try await teacher.deleteMessage(DeleteMessageRequest(threadId: thread.id, seq: 1)).message!
        #expect(tombstone.seq == 1 && tombstone.body.isEmpty && tombstone.deleted?.deletedBy?.userId == "teacher-1")
        #expect(try await teacher.listMessageEdits(ListMessageEditsRequest(threadId: thread.id, seq: 1)).edits.isEmpty)

        // Update and archive, then list by state.
        let updated = try await guardian.updateThread(
            UpdateThreadRequest(
                threadId: thread.id,
                titleUpdate: .title("Homework, week 3"),
                stateUpdate: .state(.archived)
            )
        ).thread!
        #expect(updated.title == "Homework, week 3" && updated.state == .archived)
        #expect(try await guardian.listThreads(ListThreadsRequest(state: .active)).threads.isEmpty)
        #expect(try await guardian.listThreads(ListThreadsRequest(state: .archived)).threads.map(\.id) == [thread.id])

        // Delete needs threads.delete: the guardian may not, the tenant admin may.
        await #expect { try await guardian.deleteThread(DeleteThreadRequest(threadId: thread.id)) } throws: {
            rpcCode($0) == .permissionDenied
        }
        let admin = try harness.client(.tenantAdmin)
        _ = try await admin.deleteThread(DeleteThreadRequest(threadId: thread.id))
        await #expect { try await guardian.getThread(GetThreadRequest(threadId: thread.id)) } throws: {
            rpcCode($0) == .notFound
        }

        // Every write recorded its event in the outbox, in the same transaction.
        let superuser = try PGConnection(conninfo: harness.database.superuser)
        let events = try superuser.query("SELECT type, count(*) FROM chat.outbox GROUP BY type ORDER BY type")
        let counts = try (0..<events.rowCount).map {
            (try events.int64(row: $0, column: 0)!, try events.int64(row: $0, column: 1)!)
        }
        #expect(counts.map(\.0) == [1, 2, 3, 4, 5, 6])  // created, updated, deleted, message created/edited/deleted
        #expect(counts.first { $0.0 == 4 }?.1 == 2)
        for client in [guardian, teacher, admin] { await client.close() }
        try await harness.stop()
    }

    @Test("validation: INVALID_ARGUMENT naming the field and the limit")
    func validation() async throws {
        let harness = try await ServiceHarness()
        let admin = try harness.client(.tenantAdmin)
        let thread = try await admin.createThread(CreateThreadRequest(learnerId: Fixture.learnerA1, title: "t")).thread!
        let cases: [(String, @Sendable () async throws -> Void)] = [
            ("learner_id", { _ = try await admin.createThread(CreateThreadRequest(learnerId: "42", title: "t")) }),
            (
                "title",
                { _ = try await admin.createThread(CreateThreadRequest(learnerId: Fixture.learnerA1, title: "")) }
            ),
            (
                "title",
                {
                    _ = try await admin.createThread(
                        CreateThreadRequest(learnerId: Fixture.learnerA1, title: String(repeating: "x", count: 201))
                    )
                }
            ),
            (
                "title",
                { _ = try await admin.createThread(CreateThreadRequest(learnerId: Fixture.learnerA1, title: "a\u{7}")) }
            ),
            ("thread_id", { _ = try await admin.getThread(GetThreadRequest(threadId: "x")) }),
            (
                "body",
                {
                    _ = try await admin.sendMessage(
                        SendMessageRequest(threadId: thread.id, body: "", idempotencyKey: "k")
                    )
                }
            ),
            (
                "body",
                {
                    _ = try await admin.sendMessage(
                        SendMessageRequest(
                            threadId: thread.id,
                            body: String(repeating: "é", count: 2049),
                            idempotencyKey: "k"
                        )
                    )
                }
            ),
            (
                "idempotency_key",
                {
                    // Neither key: the client's own is turned off, so that the server's check is what answers.
                    _ = try await admin.sendMessage(
                        SendMessageRequest(threadId: thread.id, body: "b"),
                        options: CallOptions(automaticIdempotencyKey: false)
                    )
                }
            ),
            (
                "page.page_size",
                { _ = try await admin.listThreads(ListThreadsRequest(page: PageRequest(pageSize: 201))) }
            ),
            (
                "page.page_token",
                { _ = try await admin.listThreads(ListThreadsRequest(page: PageRequest(pageToken: "garbage!"))) }
            ),
            ("seq", { _ = try await admin.getMessage(GetMessageRequest(threadId: thread.id, seq: 0)) }),
        ]
        for (field, call) in cases {
            do {
                try await call()
                Issue.record("\(field): accepted")
            } catch let error as RPCError {
                #expect(error.code == .invalidArgument, "\(field): \(error)")
                #expect(error.message.hasPrefix(field), "\(field): \(error.message)")
                #expect(
                    error.details.contains {
                        if case .fieldViolation(let v)? = $0.detail { v.field == field } else { false }
                    }
                )
            }
        }
        await admin.close()
        try await harness.stop()
    }

    @Test("two tenants and two learners side by side: nothing crosses; out of scope looks like not found")
    func isolation() async throws {
        let harness = try await ServiceHarness()
        let adminA = try harness.client(.tenantAdmin)
        let threadA2 = try await adminA.createThread(CreateThreadRequest(learnerId: Fixture.learnerA2, title: "A2"))
            .thread!
        _ = try await adminA.sendMessage(
            SendMessageRequest(threadId: threadA2.id, body: "secret of A2", idempotencyKey: "s")
        )
        let guardianA1 = try harness.client(.guardian, scope: [Fixture.learnerA1])
        let adminB = try harness.client(.tenantAdmin, tenant: Fixture.tenantB)
        for client in [guardianA1, adminB] {
            await #expect { try await client.getThread(GetThreadRequest(threadId: threadA2.id)) } throws: {
                rpcCode($0) == .notFound
            }
            await #expect { try await client.listMessages(ListMessagesRequest(threadId: threadA2.id)) } throws: {
                rpcCode($0) == .notFound
            }
            await #expect {
                try await client.sendMessage(SendMessageRequest(threadId: threadA2.id, body: "x", idempotencyKey: "x"))
            } throws: { rpcCode($0) == .notFound }
            await #expect { try await client.markRead(MarkReadRequest(threadId: threadA2.id, upToSeq: 1)) } throws: {
                rpcCode($0) == .notFound
            }
            #expect(try await client.listThreads(ListThreadsRequest()).threads.isEmpty)
        }
        // A guardian cannot open a thread about a learner outside the scope.
        await #expect {
            try await guardianA1.createThread(CreateThreadRequest(learnerId: Fixture.learnerA2, title: "x"))
        } throws: { rpcCode($0) == .permissionDenied }
        // Nothing was written by the refused calls.
        #expect(try await adminA.getThread(GetThreadRequest(threadId: threadA2.id)).thread?.lastSeq == 1)
        for client in [adminA, guardianA1, adminB] { await client.close() }
        try await harness.stop()
    }

    @Test("idempotency: concurrent retries of one send create exactly one message; another body is ALREADY_EXISTS")
    func idempotency() async throws {
        let harness = try await ServiceHarness()
        let admin = try harness.client(.tenantAdmin)
        let thread = try await admin.createThread(CreateThreadRequest(learnerId: Fixture.learnerA1, title: "t")).thread!
        let request = SendMessageRequest(threadId: thread.id, body: "once", idempotencyKey: "retry-me")
        let messages = try await withThrowingTaskGroup(of: Message.self) { group in
            for _ in 0..<12 { group.addTask { try await admin.sendMessage(request).message! } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(Set(messages.map(\.id)).count == 1 && messages[0].seq == 1)
        await #expect {
            try await admin.sendMessage(
                SendMessageRequest(threadId: thread.id, body: "twice", idempotencyKey: "retry-me")
            )
        } throws: { rpcCode($0) == .alreadyExists }
        #expect(try await admin.getThread(GetThreadRequest(threadId: thread.id)).thread?.lastSeq == 1)
        await admin.close()
        try await harness.stop()
    }

    @Test("pagination: walking all pages while others insert never skips or repeats a message or a thread")
    func pagination() async throws {
        let harness = try await ServiceHarness()
        let admin = try harness.client(.tenantAdmin)
        let writer = try harness.client(.tenantAdmin, user: "writer")
        let thread = try await admin.createThread(CreateThreadRequest(learnerId: Fixture.learnerA1, title: "t")).thread!
        for index in 1...120 {
            _ = try await admin.sendMessage(
                SendMessageRequest(threadId: thread.id, body: "m\(index)", idempotencyKey: "m\(index)")
            )
        }
        var threadIDs: [String] = []
        for index in 0..<45 {
            threadIDs.append(
                try await admin.createThread(CreateThreadRequest(learnerId: Fixture.learnerA2, title: "t\(index)"))
                    .thread!.id
            )
        }
        // Concurrent writers: new messages at the head, new threads at the top.
        let inserts = Task {
            for index in 0..<60 {
                _ = try await writer.sendMessage(
                    SendMessageRequest(threadId: thread.id, body: "new \(index)", idempotencyKey: "n\(index)")
                )
                if index % 4 == 0 {
                    _ = try await writer.createThread(
                        CreateThreadRequest(learnerId: Fixture.learnerA1, title: "new \(index)")
                    )
                }
            }
        }
        // Newest first from the head as it was: every message 1...120 once, in order.
        var seen: [UInt64] = []
        var token = ""
        let start = try await admin.listMessages(
            ListMessagesRequest(threadId: thread.id, page: PageRequest(pageSize: 7))
        )
        seen += start.messages.map(\.seq)
        token = start.page?.nextPageToken ?? ""
        while !token.isEmpty {
            let page = try await admin.listMessages(
                ListMessagesRequest(threadId: thread.id, page: PageRequest(pageSize: 7, pageToken: token))
            )
            seen += page.messages.map(\.seq)
            token = page.page?.nextPageToken ?? ""
        }
        #expect(Set(seen).count == seen.count, "a message was repeated")
        #expect(seen == seen.sorted(by: >))
        #expect(seen.last == 1 && Set(seen).isSuperset(of: Set(1...120)), "a message was skipped")
        // Oldest first: contiguous from 1.
        let forward = try await admin.listMessages(
            ListMessagesRequest(threadId: thread.id, page: PageRequest(pageSize: 200), bound: .afterSeq(0))
        )
        #expect(forward.messages.map(\.seq) == Array(1...UInt64(forward.messages.count)))

        // Threads of learner A2 (no concurrent activity there): every one exactly once.
        var listed: [String] = []
        token = ""
        repeat {
            let page = try await admin.listThreads(
                ListThreadsRequest(page: PageRequest(pageSize: 6, pageToken: token), learnerId: Fixture.learnerA2)
            )
            listed += page.threads.map(\.id)
            token = page.page?.nextPageToken ?? ""
        } while !token.isEmpty
        #expect(listed.count == 45 && Set(listed) == Set(threadIDs))
        try await inserts.value
        await admin.close()
        await writer.close()
        try await harness.stop()
    }
}
