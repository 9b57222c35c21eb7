public import ChatAuth
internal import ChatDomain
public import ChatProto
public import ChatRPC
public import ChatStore
internal import Foundation

/// SubscribeEvents (proto service `EventService`): the outbox of the caller's tenant in commit order, for internal
/// services.
extension LiveService {
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
        var stream = LiveStream(
            writer: writer,
            principal: principal,
            configuration: self.configuration,
            kind: .subscribeEvents,
            metrics: self.metrics
        )
        let subscription = self.hub.subscribe(tenantID: principal.tenantID, interest: .feed(learners: nil))
        defer { self.hub.unsubscribe(subscription) }
        do {
            if !request.cursor.isEmpty { try await self.requireInResumeWindow(cursor, tenant, &stream) }
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
    func followOutbox<Response: ProtoMessage>(
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
                stream.delivered(occurredAtMicros: page.records.lazy.map(\.occurredAtMicros))
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
