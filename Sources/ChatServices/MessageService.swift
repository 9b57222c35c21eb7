public import ChatAuth
internal import ChatDomain
internal import ChatProto
public import ChatRPC
public import ChatStore

/// The message RPCs: send, get, list, edit, delete, edit history, mark read.
public struct MessageService: Sendable {
    let messages: MessageRepository
    let live: LiveHub?
    let tokens: SealedTokens
    let idempotency: Idempotency

    /// Creates the service over a pool; `live` is told of every committed change, for live streams; `tokens` seals
    /// the page tokens; mutations keep their idempotency keys for `idempotencyWindow`.
    public init(
        pool: PGPool,
        live: LiveHub? = nil,
        tokens: SealedTokens,
        idempotencyWindow: Duration = Idempotency.defaultWindow
    ) {
        self.messages = MessageRepository(pool: pool)
        self.live = live
        self.tokens = tokens
        self.idempotency = Idempotency(pool: pool, window: idempotencyWindow)
    }

    /// Tells the live hub that a message changed (after its transaction committed).
    func published(_ principal: Principal, _ record: MessageRecord) {
        self.live?.published([
            LiveChange(
                tenantID: principal.tenantID,
                threadID: record.threadID,
                learnerID: record.learnerID,
                eventSeq: record.eventSeq
            )
        ])
    }

    /// Registers the methods.
    public func register(in router: inout Router) {
        router.register(mutation: ChatMethods.MessageService.sendMessage, idempotency: self.idempotency) {
            request,
            context in
            let principal = try context.requirePrincipal()
            let thread = try Validate.uuid(request.threadId, "thread_id")
            let body = try Validate.body(request.body)
            let key = try Validate.messageKey(body: request.idempotencyKey, header: context.header.idempotencyKey)
            let outcome = try await self.messages.send(
                TenantContext(principal),
                threadID: thread,
                body: body,
                idempotencyKey: key
            )
            if outcome.created { self.published(principal, outcome.message) }
            return SendMessageResponse(message: Message(outcome.message))
        }
        router.register(ChatMethods.MessageService.getMessage) { request, context in
            let principal = try context.requirePrincipal()
            let thread = try Validate.uuid(request.threadId, "thread_id")
            let seq = try Validate.seq(request.seq, "seq")
            return GetMessageResponse(
                message: Message(try await self.messages.get(TenantContext(principal), threadID: thread, seq: seq))
            )
        }
        router.register(ChatMethods.MessageService.listMessages) { request, context in
            let principal = try context.requirePrincipal()
            let thread = try Validate.uuid(request.threadId, "thread_id")
            let page = request.page ?? PageRequest()
            let limit = try Validate.pageSize(page.pageSize)
            var bound: MessageRepository.Bound =
                switch request.bound {
                case .afterSeq(let seq)?: .after(Int64(clamping: seq))
                case .beforeSeq(let seq)?: .before(Int64(clamping: seq))
                case nil: .latest
                }
            if !page.pageToken.isEmpty {
                let fields = try self.tokens.open(
                    page.pageToken,
                    .listMessages,
                    for: principal,
                    query: thread,
                    count: 2,
                    field: "page.page_token"
                )
                guard let seq = Int64(fields[1]), seq >= 0, fields[0] == "a" || fields[0] == "b" else {
                    throw RPCError.invalidArgument(field: "page.page_token", "not a token of this kind")
                }
                bound = fields[0] == "a" ? .after(seq) : .before(seq)
            }
            let records = try await self.messages.list(
                TenantContext(principal),
                threadID: thread,
                bound: bound,
                limit: limit
            )
            var next = ""
            if records.count == limit, let last = records.last {
                let ascending = if case .after = bound { true } else { false }
                if ascending || last.seq > 1 {
                    next = self.tokens.seal(
                        [ascending ? "a" : "b", String(last.seq)],
                        .listMessages,
                        for: principal,
                        query: thread
                    )
                }
            }
            return ListMessagesResponse(messages: records.map(Message.init), page: PageInfo(nextPageToken: next))
        }
        router.register(mutation: ChatMethods.MessageService.editMessage, idempotency: self.idempotency) {
            request,
            context in
            let principal = try context.requirePrincipal()
            let thread = try Validate.uuid(request.threadId, "thread_id")
            let seq = try Validate.seq(request.seq, "seq")
            let body = try Validate.body(request.body)
            let record = try await self.messages.edit(TenantContext(principal), threadID: thread, seq: seq, body: body)
            self.published(principal, record)
            return EditMessageResponse(message: Message(record))
        }
        router.register(mutation: ChatMethods.MessageService.deleteMessage, idempotency: self.idempotency) {
            request,
            context in
            let principal = try context.requirePrincipal()
            let thread = try Validate.uuid(request.threadId, "thread_id")
            let seq = try Validate.seq(request.seq, "seq")
            let record = try await self.messages.delete(
                TenantContext(principal),
                threadID: thread,
                seq: seq,
                moderator: principal.permissions.contains(.messagesModerate)
            )
            self.published(principal, record)
            return DeleteMessageResponse(message: Message(record))
        }
        router.register(ChatMethods.MessageService.listMessageEdits) { request, context in
            let principal = try context.requirePrincipal()
            let thread = try Validate.uuid(request.threadId, "thread_id")
            let seq = try Validate.seq(request.seq, "seq")
            let revisions = try await self.messages.edits(TenantContext(principal), threadID: thread, seq: seq)
            return ListMessageEditsResponse(
                edits: revisions.map {
                    MessageEdit(
                        revision: UInt32($0.revision),
                        body: $0.body,
                        editedBy: Actor(userId: $0.editedBy, role: Role(stored: $0.editedByRole)),
                        editedAtUs: $0.editedAtMicros
                    )
                }
            )
        }
        router.register(mutation: ChatMethods.MessageService.markRead, idempotency: self.idempotency) {
            request,
            context in
            let principal = try context.requirePrincipal()
            let thread = try Validate.uuid(request.threadId, "thread_id")
            let (readSeq, unread) = try await self.messages.markRead(
                TenantContext(principal),
                threadID: thread,
                upTo: Int64(clamping: request.upToSeq)
            )
            return MarkReadResponse(readSeq: UInt64(readSeq), unreadCount: UInt64(max(0, unread)))
        }
    }
}
