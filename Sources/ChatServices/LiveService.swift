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

    /// Creates the service.
    public init(pool: PGPool, hub: LiveHub, tokens: SealedTokens, configuration: Configuration = Configuration()) {
        self.tokens = tokens
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
        var stream = LiveStream(writer: writer, principal: principal, configuration: self.configuration)
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
        var stream = LiveStream(writer: writer, principal: principal, configuration: self.configuration)
        let subscription = self.hub.subscribe(tenantID: principal.tenantID, interest: .feed(learners: learners))
        defer { self.hub.unsubscribe(subscription) }
        var cursor = OutboxCursor.origin
        let seal = { (cursor: OutboxCursor) in self.tokens.seal([cursor.token], .watchInbox, for: principal) }
        do {
            if request.cursor.isEmpty {
                cursor = try await stream.read { try await self.repository.currentCursor(tenant) }
            } else {
                cursor = try self.openCursor(request.cursor, .watchInbox, for: principal)
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

    /// A cursor this server sealed for the caller, opened.
    private func openCursor(
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

    // MARK: - SubscribeEvents

    func subscribeEvents(
        _ request: SubscribeEventsRequest,
        _ context: CallContext,
        _ writer: ResponseWriter<SubscribeEventsResponse>
    ) async throws {
        let principal = try context.requirePrincipal()
        var types: [EventType] = []
        for type in request.types {
            guard EventType.subscribable.contains(type) else {
                throw RPCError.invalidArgument(field: "types", "unknown event type \(type.rawValue)")
            }
            types.append(type)
        }
        if types.isEmpty { types = EventType.subscribable }
        var cursor = OutboxCursor.origin
        if !request.cursor.isEmpty {
            cursor = try self.openCursor(request.cursor, .subscribeEvents, for: principal)
        }
        let seal = { (cursor: OutboxCursor) in self.tokens.seal([cursor.token], .subscribeEvents, for: principal) }
        let tenant = TenantContext(principal)
        var stream = LiveStream(writer: writer, principal: principal, configuration: self.configuration)
        let subscription = self.hub.subscribe(tenantID: principal.tenantID, interest: .feed(learners: nil))
        defer { self.hub.unsubscribe(subscription) }
        do {
            try await self.followOutbox(
                tenant,
                cursor: &cursor,
                types: types,
                learnerID: nil,
                withMessages: false,
                subscription: subscription,
                stream: &stream
            ) { records in
                records.map {
                    (
                        SubscribeEventsResponse(
                            event: OutboxEvent($0, tenantID: principal.tenantID, cursor: seal($0.cursor))
                        ), $0.cursor
                    )
                }
            } heartbeat: { _ in
                nil
            }
        } catch {
            throw stream.ended(by: error, resume: ResumeInfo(cursor: seal(cursor)), "cursor \(cursor.token)")
        }
    }

    /// Reads the outbox after `cursor` in commit order and sends what `convert` makes of each page, then waits for
    /// the hub and reads again, until the stream ends.
    private func followOutbox<Response: ProtoMessage>(
        _ tenant: TenantContext,
        cursor: inout OutboxCursor,
        types: [EventType],
        learnerID: String?,
        withMessages: Bool,
        subscription: LiveSubscription,
        stream: inout LiveStream<Response>,
        convert: ([OutboxRecord]) async throws -> [(Response, OutboxCursor)],
        heartbeat: @escaping (OutboxCursor) -> Response?
    ) async throws {
        subscription.scanned(feedPosition: cursor)
        var quietRetries = 0
        while true {
            let from = cursor
            let page = try await stream.read {
                try await self.repository.outbox(
                    tenant,
                    after: from,
                    types: types,
                    learnerID: learnerID,
                    withMessages: withMessages,
                    limit: self.configuration.pageSize
                )
            }
            let converted = try await convert(page.records)
            if let last = converted.last {
                try await stream.send(converted.map(\.0), advancing: &cursor, to: last.1)
            }
            if let last = page.records.last { cursor = max(cursor, last.cursor) }
            if page.records.count == self.configuration.pageSize {
                subscription.scanned(feedPosition: cursor)
                continue
            }
            // A short page has seen every event below the watermark: the stream has read up to it.
            cursor = max(cursor, page.watermark)
            subscription.scanned(feedPosition: cursor)
            // A stream woken for an event it cannot read yet is waiting for an older transaction to end (the
            // watermark); that one usually ends within milliseconds: look again a few times before waiting.
            if page.records.isEmpty && quietRetries < 5 {
                quietRetries += 1
                try await Task.sleep(for: .milliseconds(1 << quietRetries))
                continue
            }
            quietRetries = 0
            try await stream.waitForChange(subscription) { heartbeat(cursor) }
        }
    }
}

/// What the three streams share: sending with the stall limit, heartbeats, the token's expiry, riding out a
/// database outage, and the status a stream ends with.
struct LiveStream<Response: ProtoMessage> {
    let writer: ResponseWriter<Response>
    let configuration: LiveService.Configuration
    let expiry: ContinuousClock.Instant?
    var lastSend = ContinuousClock.now

    struct Expired: Error {}

    init(writer: ResponseWriter<Response>, principal: Principal, configuration: LiveService.Configuration) {
        self.writer = writer
        self.configuration = configuration
        self.expiry = principal.expiresAt.map { expiresAt in
            let remaining = Double(expiresAt) - Date().timeIntervalSince1970
            return ContinuousClock.now + .milliseconds(Int64(max(0, remaining) * 1000))
        }
    }

    mutating func send(_ response: Response) async throws {
        try await self.writer.write(response, stallLimit: self.configuration.stallLimit)
        self.lastSend = .now
    }

    /// Sends a page of events in one write and moves `position` to the last once they are queued (a stalled write
    /// says whether it queued them; a cancelled one has not).
    mutating func send<Position>(_ responses: [Response], advancing position: inout Position, to last: Position)
        async throws
    {
        do {
            try await self.writer.write(contentsOf: responses, stallLimit: self.configuration.stallLimit)
            self.lastSend = .now
        } catch let error as ResponseStalled {
            if error.queued { position = last }
            throw error
        }
        position = last
    }

    /// Waits until the hub wakes the stream; sends a heartbeat whenever the stream has been quiet for the interval.
    ///
    /// - Throws: `Expired` when the token expires, `CancellationError` when the call ends.
    @inline(never)
    mutating func waitForChange(
        _ subscription: LiveSubscription,
        heartbeat: () -> Response?
    ) async throws {
        while true {
            let now = ContinuousClock.now
            if let expiry = self.expiry, now >= expiry { throw Expired() }
            let heartbeatDue = self.lastSend + self.configuration.heartbeatInterval
            var until = heartbeatDue
            if let expiry = self.expiry { until = min(until, expiry) }
            let woken = await subscription.wait(timeout: max(.zero, until - now))
            try Task.checkCancellation()
            if woken { return }
            if let expiry = self.expiry, ContinuousClock.now >= expiry { throw Expired() }
            if ContinuousClock.now >= heartbeatDue { try await self.sendHeartbeat(heartbeat) }
        }
    }

    @inline(never)
    private mutating func sendHeartbeat(_ heartbeat: () -> Response?) async throws {
        if let beat = heartbeat() { try await self.send(beat) }
    }

    /// Runs a read, retrying while the database is unavailable (up to the outage limit).
    func read<Value>(_ body: () async throws -> Value) async throws -> Value {
        let giveUp = ContinuousClock.now + self.configuration.storageOutageLimit
        var backoff = Duration.milliseconds(50)
        while true {
            do {
                return try await body()
            } catch let error as StorageError where error.isRetryable && ContinuousClock.now < giveUp {
                try await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(1))
            }
        }
    }

    /// The status a stream ends with, carrying the position to resume from.
    func ended(by error: any Error, resume: ResumeInfo, _ position: String) -> any Error {
        let details = [StatusDetail(detail: .resumeInfo(resume))]
        switch error {
        case is CancellationError:
            return RPCError(
                .unavailable,
                "the stream was interrupted (the server is shutting down); resume from \(position)",
                details: details
            )
        case is ResponseStalled:
            return RPCError(
                .resourceExhausted,
                "the client read too slowly (no room for \(self.configuration.stallLimit)); resume from \(position)",
                details: details
            )
        case is Expired:
            return RPCError(
                .unauthenticated,
                "the token expired; open a new stream with a fresh token from \(position)",
                details: details
            )
        case let error as StorageError where error.isRetryable:
            return RPCError(.unavailable, "the database is unavailable; resume from \(position)", details: details)
        default:
            return error
        }
    }
}

/// The events of the streams, as pure functions of what the database returned.
enum LiveEvents {
    /// A thread's page of changes after `after`, in position order: its messages, and the thread's own update when
    /// it falls in the page (when the page is full, only up to its last message; the rest is read next).
    static func merge(thread: ThreadRecord, messages: [MessageRecord], after: Int64, pageFull: Bool) -> [WatchEvent] {
        var events: [WatchEvent] = []
        events.reserveCapacity(messages.count + 1)
        let threadChange = thread.metaEventSeq
        var threadPending = threadChange > after && (!pageFull || threadChange < (messages.last?.eventSeq ?? 0))
        for message in messages {
            if threadPending && threadChange < message.eventSeq {
                events.append(Self.threadUpdated(thread))
                threadPending = false
            }
            events.append(Self.message(message, kind: Self.kind(of: message)))
        }
        if threadPending { events.append(Self.threadUpdated(thread)) }
        return events
    }

    /// A message's newest change: what a compacted replay reports.
    static func kind(of message: MessageRecord) -> MessageEvent.Kind {
        if message.deletedAtMicros != nil { return .deleted }
        return message.editCount > 0 ? .edited : .created
    }

    static func message(_ message: MessageRecord, kind: MessageEvent.Kind) -> WatchEvent {
        WatchEvent(seq: UInt64(message.eventSeq), event: .message(MessageEvent(kind: kind, message: Message(message))))
    }

    static func threadUpdated(_ thread: ThreadRecord) -> WatchEvent {
        WatchEvent(
            seq: UInt64(thread.metaEventSeq),
            event: .thread(ThreadEvent(kind: .updated, thread: Thread(thread, unread: 0)))
        )
    }

    static func threadDeleted(_ thread: ThreadRecord) -> WatchEvent {
        WatchEvent(
            seq: UInt64(thread.eventSeq + 1),
            event: .thread(
                ThreadEvent(kind: .deleted, thread: ChatProto.Thread(id: thread.id, learnerId: thread.learnerID))
            )
        )
    }

    static func heartbeat(cursor: String) -> WatchEvent {
        WatchEvent(
            cursor: cursor,
            event: .heartbeat(Heartbeat(serverTimeUs: Int64(Date().timeIntervalSince1970 * 1_000_000)))
        )
    }

    /// An inbox event from an outbox row; nil when there is nothing to show (the message was erased since).
    static func inboxEvent(_ record: OutboxRecord, threads: [String: ThreadRecord], cursor: String) -> WatchEvent? {
        let seq = UInt64(max(0, record.eventSeq ?? 0))
        switch record.type {
        case .threadCreated, .threadUpdated:
            guard let id = record.threadID, let thread = threads[id] else { return nil }
            let kind: ThreadEvent.Kind = record.type == .threadCreated ? .created : .updated
            return WatchEvent(
                cursor: cursor,
                seq: seq,
                event: .thread(ThreadEvent(kind: kind, thread: Thread(thread, unread: 0)))
            )
        case .threadDeleted:
            guard let id = record.threadID else { return nil }
            return WatchEvent(
                cursor: cursor,
                seq: seq,
                event: .thread(
                    ThreadEvent(kind: .deleted, thread: ChatProto.Thread(id: id, learnerId: record.learnerID ?? ""))
                )
            )
        case .messageCreated, .messageEdited, .messageDeleted:
            guard let message = record.message else { return nil }
            let kind: MessageEvent.Kind =
                record.type == .messageCreated ? .created : record.type == .messageEdited ? .edited : .deleted
            return WatchEvent(
                cursor: cursor,
                seq: seq,
                event: .message(MessageEvent(kind: kind, message: Message(message)))
            )
        default:
            return nil
        }
    }
}

extension OutboxEvent {
    init(_ record: OutboxRecord, tenantID: String, cursor: String) {
        self.init(
            id: UInt64(max(0, record.id)),
            tenantId: tenantID,
            type: record.type,
            learnerId: record.learnerID ?? "",
            threadId: record.threadID ?? "",
            seq: UInt64(max(0, record.seq ?? 0)),
            occurredAtUs: record.occurredAtMicros,
            payloadJson: record.erased ? "" : (record.payloadJSON ?? ""),
            erased: record.erased,
            cursor: cursor
        )
    }
}
