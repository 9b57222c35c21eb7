public import ChatAuth
internal import ChatDomain
internal import ChatProto
public import ChatRPC
public import ChatStore

/// The thread RPCs: create, get, list, update, delete. Scope is checked here and, independently, by row-level
/// security in every transaction.
public struct ThreadService: Sendable {
    let threads: ThreadRepository
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
        self.live = live
        self.threads = ThreadRepository(pool: pool)
        self.tokens = tokens
        self.idempotency = Idempotency(pool: pool, window: idempotencyWindow)
    }

    /// Registers the methods.
    public func register(in router: inout Router) {
        router.register(mutation: ChatMethods.ThreadService.createThread, idempotency: self.idempotency) {
            request,
            context in
            let principal = try context.requirePrincipal()
            let learner = try Validate.uuid(request.learnerId, "learner_id")
            let title = try Validate.title(request.title)
            guard principal.hasInScope(learner) else {
                throw RPCError(.permissionDenied, "learner_id: this learner is not in your scope")
            }
            let record = try await self.threads.create(TenantContext(principal), learnerID: learner, title: title)
            self.published(principal, record, eventSeq: 0)
            return CreateThreadResponse(thread: Thread(record, unread: 0))
        }
        router.register(ChatMethods.ThreadService.getThread) { request, context in
            let principal = try context.requirePrincipal()
            let id = try Validate.uuid(request.threadId, "thread_id")
            let (record, unread) = try await self.threads.get(TenantContext(principal), id: id)
            return GetThreadResponse(thread: Thread(record, unread: unread))
        }
        router.register(ChatMethods.ThreadService.listThreads) { request, context in
            let principal = try context.requirePrincipal()
            let page = request.page ?? PageRequest()
            let limit = try Validate.pageSize(page.pageSize)
            let learner = request.learnerId.isEmpty ? nil : try Validate.uuid(request.learnerId, "learner_id")
            let state: Int? =
                switch request.state {
                case .unspecified: nil
                case .active: 1
                case .archived: 2
                case .unrecognized(let value): throw RPCError.invalidArgument(field: "state", "unknown state \(value)")
                }
            let filter = "\(learner ?? "*")/\(state.map(String.init) ?? "*")"
            var cursor: ThreadCursor?
            if !page.pageToken.isEmpty {
                let fields = try self.tokens.open(
                    page.pageToken,
                    .listThreads,
                    for: principal,
                    query: filter,
                    count: 3,
                    field: "page.page_token"
                )
                cursor = ThreadCursor(
                    walkStartMicros: try Validate.micros(fields[0], "page.page_token"),
                    activityMicros: try Validate.micros(fields[1], "page.page_token"),
                    id: try Validate.uuid(fields[2], "page.page_token")
                )
            }
            let result = try await self.threads.list(
                TenantContext(principal),
                learnerID: learner,
                state: state,
                after: cursor,
                limit: limit
            )
            let next = result.next.map {
                self.tokens.seal(
                    [String($0.walkStartMicros), String($0.activityMicros), $0.id],
                    .listThreads,
                    for: principal,
                    query: filter
                )
            }
            return ListThreadsResponse(
                threads: result.threads.map { Thread($0.0, unread: $0.unread) },
                page: PageInfo(nextPageToken: next ?? "")
            )
        }
        router.register(mutation: ChatMethods.ThreadService.updateThread, idempotency: self.idempotency) {
            request,
            context in
            let principal = try context.requirePrincipal()
            let id = try Validate.uuid(request.threadId, "thread_id")
            var title: String?
            if case .title(let value)? = request.titleUpdate { title = try Validate.title(value) }
            var state: Int?
            if case .state(let value)? = request.stateUpdate {
                switch value {
                case .active: state = 1
                case .archived: state = 2
                default: throw RPCError.invalidArgument(field: "state", "ACTIVE or ARCHIVED")
                }
            }
            guard title != nil || state != nil else {
                throw RPCError.invalidArgument(field: "title", "set title or state (nothing to update)")
            }
            let (record, unread) = try await self.threads.update(
                TenantContext(principal),
                id: id,
                title: title,
                state: state
            )
            self.published(principal, record, eventSeq: record.eventSeq)
            return UpdateThreadResponse(thread: Thread(record, unread: unread))
        }
        router.register(mutation: ChatMethods.ThreadService.deleteThread, idempotency: self.idempotency) {
            request,
            context in
            let principal = try context.requirePrincipal()
            let id = try Validate.uuid(request.threadId, "thread_id")
            let learner = try await self.threads.delete(TenantContext(principal), id: id)
            self.live?.published([
                LiveChange(tenantID: principal.tenantID, threadID: id, learnerID: learner, eventSeq: 0)
            ])
            return DeleteThreadResponse()
        }
    }

    /// Tells the live hub that a thread changed (after its transaction committed).
    func published(_ principal: Principal, _ record: ThreadRecord, eventSeq: Int64) {
        self.live?.published([
            LiveChange(
                tenantID: principal.tenantID,
                threadID: record.id,
                learnerID: record.learnerID,
                eventSeq: eventSeq
            )
        ])
    }
}
