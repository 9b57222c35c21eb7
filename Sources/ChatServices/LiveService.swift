public import ChatAuth
internal import ChatDomain
public import ChatProto
public import ChatRPC
public import ChatStore
internal import Foundation

/// Live delivery: WatchThread and WatchInbox for people, SubscribeEvents (the outbox) for internal services.
///
/// Every stream registers with the hub first, then reads from the database and goes on reading whenever the hub
/// wakes it: the replay and the live part are the same query, so there is no seam where an event could fall
/// between them or arrive twice. A stream holds no queue of its own: it reads a page only when the client has
/// room for it, so a slow client stalls only its own stream and costs one page of memory at most; a client that
/// makes no room for `stallLimit` is told RESOURCE_EXHAUSTED with the position to resume from. Streams end when the
/// token that opened them expires (UNAUTHENTICATED) and on graceful shutdown (UNAVAILABLE), both with the resume
/// position.
public struct LiveService: Sendable {
    /// Stream behaviour.
    public struct Configuration: Sendable {
        /// How long a stream stays quiet before it sends a heartbeat.
        public var heartbeatInterval: Duration
        /// How long a stream waits for a client that makes no room for the next event before ending it.
        public var stallLimit: Duration
        /// How many rows one read takes.
        public var pageSize: Int
        /// How long a stream rides out an unavailable database (retrying) before it ends with UNAVAILABLE.
        public var storageOutageLimit: Duration

        /// Creates a configuration.
        public init(
            heartbeatInterval: Duration = .seconds(15),
            stallLimit: Duration = .seconds(30),
            pageSize: Int = 128,
            storageOutageLimit: Duration = .seconds(60)
        ) {
            self.heartbeatInterval = heartbeatInterval
            self.stallLimit = stallLimit
            self.pageSize = pageSize
            self.storageOutageLimit = storageOutageLimit
        }
    }

    let hub: LiveHub
    let repository: LiveRepository
    let configuration: Configuration
    /// Seals the resume cursors of WatchInbox and SubscribeEvents.
    let tokens: SealedTokens
    /// Delivery latency; nil: not measured.
    let metrics: LiveMetrics?

    /// Creates the service.
    public init(
        pool: PGPool,
        hub: LiveHub,
        tokens: SealedTokens,
        configuration: Configuration = Configuration(),
        metrics: LiveMetrics? = nil
    ) {
        self.tokens = tokens
        self.metrics = metrics
        self.hub = hub
        self.repository = LiveRepository(pool: pool)
        self.configuration = configuration
    }

    /// Registers the methods.
    public func register(in router: inout Router) {
        router.register(ChatMethods.LiveService.watchThread) { request, context, writer in
            try await self.watchThread(request, context, writer)
        }
        router.register(ChatMethods.LiveService.watchInbox) { request, context, writer in
            try await self.watchInbox(request, context, writer)
        }
        router.register(ChatMethods.EventService.subscribeEvents) { request, context, writer in
            try await self.subscribeEvents(request, context, writer)
        }
    }

    // MARK: - WatchThread

    // The watch handlers and the steps they wait between are kept out of line (`@inline(never)`): a stream spends
    // its life suspended in `waitForChange`, and every frame of the chain above it stays allocated meanwhile, so the
    // temporaries of reading and sending a page belong in frames that return before the wait. Inlined, they made an
    // idle stream's frames about 10 KB.

    @inline(never)
    func watchThread(
        _ request: WatchThreadRequest,
        _ context: CallContext,
        _ writer: ResponseWriter<WatchThreadResponse>
    ) async throws {
        let principal = try context.requirePrincipal()
        let threadID = try Validate.uuid(request.threadId, "thread_id")
        guard request.afterSeq <= UInt64(Int64.max) else {
            throw RPCError.invalidArgument(field: "after_seq", "at most 2^63-1")
        }
        let tenant = TenantContext(principal)
        var stream = LiveStream(
            writer: writer,
            principal: principal,
            configuration: self.configuration,
            kind: .watchThread,
            metrics: self.metrics
        )
        var cursor = Int64(request.afterSeq)
        let subscription = self.hub.subscribe(tenantID: principal.tenantID, interest: .thread(threadID))
        defer { self.hub.unsubscribe(subscription) }
        subscription.delivered(threadPosition: cursor)
        do {
            var pending: LiveRepository.ThreadChanges? = try await self.readChanges(
                tenant,
                threadID,
                after: cursor,
                &stream
            )
            guard var thread = pending?.thread else {
                throw RPCError(.notFound, "thread \(threadID) does not exist or is outside your scope")
            }
            try await Self.sendHead(headSeq: thread.eventSeq, &stream)
            while true {
                let changes: LiveRepository.ThreadChanges
                if let first = pending {
                    changes = first
                    pending = nil
                } else {
                    changes = try await self.readChanges(tenant, threadID, after: cursor, &stream)
                }
                guard let current = changes.thread else {
                    // Deleted while watched (or on resume): say so and end.
                    try await Self.sendDeleted(thread, &stream)
                    return
                }
                thread = current
                let pageFull = try await self.deliver(changes, after: &cursor, &stream)
                subscription.delivered(threadPosition: cursor)
                if !pageFull {
                    try await stream.waitForChange(subscription) {
                        WatchThreadResponse(event: LiveEvents.heartbeat(cursor: ""))
                    }
                }
            }
        } catch {
            throw stream.ended(by: error, resume: ResumeInfo(afterSeq: UInt64(cursor)), "after_seq \(cursor)")
        }
    }

    // Responses are large values (a message or a thread inline); built in these frames, not the stream's.

    @inline(never)
    private static func sendHead(headSeq: Int64, _ stream: inout LiveStream<WatchThreadResponse>) async throws {
        try await stream.send(
            WatchThreadResponse(event: WatchEvent(event: .head(StreamHead(headSeq: UInt64(max(0, headSeq))))))
        )
    }

    @inline(never)
    private static func sendDeleted(_ thread: ThreadRecord, _ stream: inout LiveStream<WatchThreadResponse>)
        async throws
    {
        try await stream.send(WatchThreadResponse(event: LiveEvents.threadDeleted(thread)))
    }

    /// Reads a page of a thread's changes after `cursor`, retrying while the database is unavailable.
    @inline(never)
    private func readChanges(
        _ tenant: TenantContext,
        _ threadID: String,
        after cursor: Int64,
        _ stream: inout LiveStream<WatchThreadResponse>
    ) async throws -> LiveRepository.ThreadChanges {
        try await stream.read {
            try await self.repository.threadChanges(
                tenant,
                threadID: threadID,
                after: cursor,
                limit: self.configuration.pageSize
            )
        }
    }

    /// Sends a page of a thread's changes in position order, moving `cursor` as each is queued; true when the page
    /// was full (more may be waiting).
    @inline(never)
    private func deliver(
        _ changes: LiveRepository.ThreadChanges,
        after cursor: inout Int64,
        _ stream: inout LiveStream<WatchThreadResponse>
    ) async throws -> Bool {
        guard let thread = changes.thread else { return false }
        let pageFull = changes.messages.count == self.configuration.pageSize
        let events = LiveEvents.merge(thread: thread, messages: changes.messages, after: cursor, pageFull: pageFull)
        guard let last = events.last else { return pageFull }
        try await stream.send(events.map { WatchThreadResponse(event: $0) }, advancing: &cursor, to: Int64(last.seq))
        // A message's event happened at its newest change.
        stream.delivered(
            occurredAtMicros: changes.messages.lazy.map { message in
                message.deletedAtMicros ?? message.editedAtMicros ?? message.createdAtMicros
            }
        )
        return pageFull
    }

    // MARK: - WatchInbox

    /// The event types an inbox carries: thread and message events.
    static let inboxTypes = EventType.chatEvents.sorted { $0.rawValue < $1.rawValue }

    func watchInbox(
        _ request: WatchInboxRequest,
        _ context: CallContext,
        _ writer: ResponseWriter<WatchInboxResponse>
    ) async throws {
        let principal = try context.requirePrincipal()
        var learners: Set<String>? = principal.role.seesWholeTenant ? nil : Set(principal.learnerScope)
        var learnerFilter: String?
        if !request.learnerId.isEmpty {
            let learner = try Validate.uuid(request.learnerId, "learner_id")
            guard principal.hasInScope(learner) else {
                throw RPCError(.permissionDenied, "learner \(learner) is outside your scope")
            }
            learners = [learner]
            learnerFilter = learner
        }
        let tenant = TenantContext(principal)
        var stream = LiveStream(
            writer: writer,
            principal: principal,
            configuration: self.configuration,
            kind: .watchInbox,
            metrics: self.metrics
        )
        let subscription = self.hub.subscribe(tenantID: principal.tenantID, interest: .feed(learners: learners))
        defer { self.hub.unsubscribe(subscription) }
        var cursor = OutboxCursor.origin
        let seal = { (cursor: OutboxCursor) in self.tokens.seal([cursor.token], .watchInbox, for: principal) }
        do {
            if request.cursor.isEmpty {
                cursor = try await stream.read { try await self.repository.currentCursor(tenant) }
            } else {
                cursor = try self.openCursor(request.cursor, .watchInbox, for: principal)
                try await self.requireInResumeWindow(cursor, tenant, &stream)
            }
            try await stream.send(
                WatchInboxResponse(
                    event: WatchEvent(cursor: seal(cursor), event: .head(StreamHead(cursor: seal(cursor))))
                )
            )
            try await self.followOutbox(
                tenant,
                cursor: &cursor,
                types: Self.inboxTypes,
                learnerID: learnerFilter,
                withMessages: true,
                subscription: subscription,
                stream: &stream
            ) { records in
                try await self.inboxEvents(tenant, records, seal: seal).map { (WatchInboxResponse(event: $0.0), $0.1) }
            } heartbeat: { cursor in
                WatchInboxResponse(event: LiveEvents.heartbeat(cursor: seal(cursor)))
            }
        } catch {
            throw stream.ended(by: error, resume: ResumeInfo(cursor: seal(cursor)), "cursor \(cursor.token)")
        }
    }

    /// Refuses a cursor from before the outbox's horizon (its events may have been trimmed): OUT_OF_RANGE, saying
    /// how to start again.
    func requireInResumeWindow<Response: ProtoMessage>(
        _ cursor: OutboxCursor,
        _ tenant: TenantContext,
        _ stream: inout LiveStream<Response>
    ) async throws {
        guard let horizon = try await stream.read({ try await self.repository.outboxHorizon(tenant) }),
            cursor < horizon
        else { return }
        throw RPCError(
            .outOfRange,
            "cursor: older than the outbox's resume window (the events after it were trimmed); start again with an "
                + "empty cursor, after reading the current state",
            details: [StatusDetail(detail: .errorInfo(ErrorInfo(reason: "CURSOR_EXPIRED", domain: "chat.v1")))]
        )
    }

    /// A cursor this server sealed for the caller, opened.
    func openCursor(
        _ text: String,
        _ purpose: SealedTokens.Purpose,
        for principal: Principal
    ) throws -> OutboxCursor {
        let fields = try self.tokens.open(text, purpose, for: principal, count: 1, field: "cursor")
        guard let cursor = OutboxCursor(token: fields[0]) else {
            throw RPCError.invalidArgument(field: "cursor", "not a cursor of this kind")
        }
        return cursor
    }

    private func inboxEvents(
        _ tenant: TenantContext,
        _ records: [OutboxRecord],
        seal: (OutboxCursor) -> String
    ) async throws -> [(WatchEvent, OutboxCursor)] {
        let threadIDs = Set(records.filter { EventType.threadEvents.contains($0.type) }.compactMap(\.threadID))
        let threads = threadIDs.isEmpty ? [:] : try await self.repository.threads(tenant, ids: Array(threadIDs))
        return records.compactMap { record in
            LiveEvents.inboxEvent(record, threads: threads, cursor: seal(record.cursor)).map { ($0, record.cursor) }
        }
    }
}
