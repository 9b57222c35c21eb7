public import ChatAuth
internal import ChatDomain
public import ChatProto
public import ChatRPC
public import ChatStore
internal import Foundation

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
        // Not inbox events (an inbox reads only EventType.chatEvents). Listed, not defaulted: a type added to the
        // contract does not compile until it is placed here or above.
        case .privacyExportRequested, .privacyExportCompleted, .privacyErasureRequested, .privacyErasureCompleted,
            .legalHoldPlaced, .legalHoldReleased, .retentionRunCompleted, .unspecified, .unrecognized:
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
