import ChatAuth
import ChatClient
import ChatDomain
import ChatProto
import ChatRPC
import ChatStoreTestSupport
import Testing

/// The real thread and message services, every role x (own learner, learner out of scope, other tenant).
@Suite("Authorization matrix on the thread and message services")
struct ServiceMatrixTests {
    enum Target: String, CaseIterable {
        case ownLearner = "own learner"
        case outOfScope = "learner out of scope"
        case otherTenant = "other tenant"
    }

    /// A call on an existing thread (and its message 1), with the permission it needs.
    struct Call: Sendable {
        let name: String
        let permission: Permission
        let run: @Sendable (ChatClient, String) async throws -> Void
    }

    static let calls: [Call] = [
        Call(name: "GetThread", permission: .threadsRead) { client, thread in
            _ = try await client.getThread(GetThreadRequest(threadId: thread))
        },
        Call(name: "ListMessages", permission: .messagesRead) { client, thread in
            _ = try await client.listMessages(ListMessagesRequest(threadId: thread))
        },
        Call(name: "GetMessage", permission: .messagesRead) { client, thread in
            _ = try await client.getMessage(GetMessageRequest(threadId: thread, seq: 1))
        },
        Call(name: "MarkRead", permission: .messagesRead) { client, thread in
            _ = try await client.markRead(MarkReadRequest(threadId: thread, upToSeq: 1))
        },
        Call(name: "SendMessage", permission: .messagesWrite) { client, thread in
            _ = try await client.sendMessage(
                SendMessageRequest(threadId: thread, body: "hi", idempotencyKey: "matrix-\(thread)")
            )
        },
        Call(name: "ListMessageEdits", permission: .messagesModerate) { client, thread in
            _ = try await client.listMessageEdits(ListMessageEditsRequest(threadId: thread, seq: 1))
        },
        Call(name: "DeleteMessage", permission: .messagesWrite) { client, thread in
            _ = try await client.deleteMessage(DeleteMessageRequest(threadId: thread, seq: 1))
        },
        Call(name: "UpdateThread", permission: .threadsWrite) { client, thread in
            _ = try await client.updateThread(UpdateThreadRequest(threadId: thread, titleUpdate: .title("renamed")))
        },
        Call(name: "DeleteThread", permission: .threadsDelete) { client, thread in
            _ = try await client.deleteThread(DeleteThreadRequest(threadId: thread))
        },
    ]

    @Test("every call x every role x target gives the documented outcome, and never another tenant's data")
    func matrix() async throws {
        let harness = try await ServiceHarness()
        let admin = try harness.client(.tenantAdmin, user: "setup")
        for role in Role.assignable {
            let permissions = AuthorizationTable.rolePermissions[role]!
            for target in Target.allCases {
                for call in Self.calls {
                    // A fresh thread per call (some calls delete), with message 1 by the caller, so that
                    // author-only rules do not get in the way of what the matrix checks.
                    let learner = target == .outOfScope ? Fixture.learnerA2 : Fixture.learnerA1
                    let thread = try await admin.createThread(CreateThreadRequest(learnerId: learner, title: "m"))
                        .thread!
                    let caller = try harness.client(
                        role,
                        tenant: target == .otherTenant ? Fixture.tenantB : Fixture.tenantA,
                        user: "caller-\(role.claimName)",
                        scope: [Fixture.learnerA1]
                    )
                    let author = try harness.client(role, user: "caller-\(role.claimName)", scope: [learner])
                    if permissions.contains(.messagesWrite) {
                        _ = try await author.sendMessage(
                            SendMessageRequest(threadId: thread.id, body: "first", idempotencyKey: "first-\(thread.id)")
                        )
                    } else {
                        _ = try await admin.sendMessage(
                            SendMessageRequest(threadId: thread.id, body: "first", idempotencyKey: "first-\(thread.id)")
                        )
                    }
                    let expected: StatusCode =
                        if !permissions.contains(call.permission) {
                            .permissionDenied
                        } else if target == .otherTenant || (target == .outOfScope && !role.seesWholeTenant) {
                            .notFound
                        } else {
                            .ok
                        }
                    var outcome = StatusCode.ok
                    do {
                        try await call.run(caller, thread.id)
                    } catch let error as RPCError {
                        outcome = error.code
                    }
                    #expect(outcome == expected, "\(role.claimName), \(target.rawValue), \(call.name): \(outcome)")
                    await caller.close()
                    await author.close()
                }
            }
        }
        await admin.close()
        try await harness.stop()
    }

    @Test("edit: only the author; a deleted message cannot be edited; moderators delete others' messages")
    func authorRules() async throws {
        let harness = try await ServiceHarness()
        let guardian = try harness.client(.guardian, user: "g1", scope: [Fixture.learnerA1])
        let otherGuardian = try harness.client(.guardian, user: "g2", scope: [Fixture.learnerA1])
        let teacher = try harness.client(.teacher, user: "t1", scope: [Fixture.learnerA1])
        let thread = try await guardian.createThread(CreateThreadRequest(learnerId: Fixture.learnerA1, title: "t"))
            .thread!
        _ = try await guardian.sendMessage(SendMessageRequest(threadId: thread.id, body: "mine", idempotencyKey: "1"))
        await #expect {
            try await otherGuardian.editMessage(EditMessageRequest(threadId: thread.id, seq: 1, body: "theirs"))
        } throws: { rpcCode($0) == .permissionDenied }
        await #expect {
            try await otherGuardian.deleteMessage(DeleteMessageRequest(threadId: thread.id, seq: 1))
        } throws: { rpcCode($0) == .permissionDenied }
        _ = try await teacher.deleteMessage(DeleteMessageRequest(threadId: thread.id, seq: 1))
        await #expect {
            try await guardian.editMessage(EditMessageRequest(threadId: thread.id, seq: 1, body: "again"))
        } throws: { rpcCode($0) == .failedPrecondition }
        await #expect {
            try await guardian.getMessage(GetMessageRequest(threadId: thread.id, seq: 2))
        } throws: { rpcCode($0) == .notFound }
        for client in [guardian, otherGuardian, teacher] { await client.close() }
        try await harness.stop()
    }
}
