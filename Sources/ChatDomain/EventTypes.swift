public import ChatProto

/// The event types are the contract's `EventType` enum (proto/chat/v1/events.proto); the outbox's `type` column
/// holds their numbers. These are the groups the server treats alike, each defined once.
extension EventType {
    /// Events about a thread (WatchInbox forwards them; they name the thread).
    public static let threadEvents: Set<EventType> = [.threadCreated, .threadUpdated, .threadDeleted]

    /// Events about a message (WatchThread and WatchInbox forward them).
    public static let messageEvents: Set<EventType> = [.messageCreated, .messageEdited, .messageDeleted]

    /// The chat events: what the live streams forward, what an export lists as a learner's events, and what an
    /// erasure or retention marks erased.
    public static let chatEvents: Set<EventType> = threadEvents.union(messageEvents)

    /// Every type a SubscribeEvents caller may ask for: each value of the contract but UNSPECIFIED.
    public static let subscribable: [EventType] = EventType.allCases.filter { $0 != .unspecified }

    /// The outbox number (`type` column, int2).
    public var number: Int { Int(self.rawValue) }
}

extension AuditKind {
    /// The audit trail's number (`chat.privacy_audit.kind`, int2).
    public var number: Int { Int(self.rawValue) }
}
