public import ChatProto

/// What a principal may do. docs/SECURITY.md has the same table (SecurityDocumentTests compares them).
public enum Permission: String, Sendable, Hashable, CaseIterable, Comparable {
    case threadsRead = "threads.read"
    case threadsWrite = "threads.write"
    case threadsDelete = "threads.delete"
    case messagesRead = "messages.read"
    case messagesWrite = "messages.write"
    case messagesModerate = "messages.moderate"
    case liveWatch = "live.watch"
    case eventsSubscribe = "events.subscribe"
    case privacyExport = "privacy.export"
    case privacyErase = "privacy.erase"
    case privacyHold = "privacy.hold"
    case privacyRetention = "privacy.retention"
    case privacyAudit = "privacy.audit"

    public static func < (lhs: Permission, rhs: Permission) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// The authorization table: which role holds which permission, and which permission each method needs.
public enum AuthorizationTable {
    /// The permissions of each role. A token's `permissions` claim can narrow these, never widen them.
    public static let rolePermissions: [Role: Set<Permission>] = [
        .learner: [.threadsRead, .messagesRead, .messagesWrite, .liveWatch],
        .guardian: [.threadsRead, .threadsWrite, .messagesRead, .messagesWrite, .liveWatch],
        .teacher: [.threadsRead, .threadsWrite, .messagesRead, .messagesWrite, .messagesModerate, .liveWatch],
        .tenantAdmin: [
            .threadsRead, .threadsWrite, .threadsDelete, .messagesRead, .messagesWrite, .messagesModerate, .liveWatch,
            .privacyExport, .privacyErase, .privacyHold, .privacyRetention, .privacyAudit,
        ],
        .service: [
            .threadsRead, .threadsWrite, .threadsDelete, .messagesRead, .messagesWrite, .messagesModerate, .liveWatch,
            .eventsSubscribe,
        ],
        .privacyOfficer: [
            .threadsRead, .messagesRead, .messagesModerate, .privacyExport, .privacyErase, .privacyHold,
            .privacyRetention, .privacyAudit,
        ],
    ]

    /// What each method needs; nil means public (health and the method listing need no credentials).
    public static let methodPermissions: [String: Permission?] = [
        ChatMethods.ThreadService.createThread.path: .threadsWrite,
        ChatMethods.ThreadService.getThread.path: .threadsRead,
        ChatMethods.ThreadService.listThreads.path: .threadsRead,
        ChatMethods.ThreadService.updateThread.path: .threadsWrite,
        ChatMethods.ThreadService.deleteThread.path: .threadsDelete,
        ChatMethods.MessageService.sendMessage.path: .messagesWrite,
        ChatMethods.MessageService.getMessage.path: .messagesRead,
        ChatMethods.MessageService.listMessages.path: .messagesRead,
        ChatMethods.MessageService.editMessage.path: .messagesWrite,
        ChatMethods.MessageService.deleteMessage.path: .messagesWrite,
        ChatMethods.MessageService.listMessageEdits.path: .messagesModerate,
        ChatMethods.MessageService.markRead.path: .messagesRead,
        ChatMethods.LiveService.watchThread.path: .liveWatch,
        ChatMethods.LiveService.watchInbox.path: .liveWatch,
        ChatMethods.EventService.subscribeEvents.path: .eventsSubscribe,
        ChatMethods.PrivacyService.exportLearnerData.path: .privacyExport,
        ChatMethods.PrivacyService.eraseLearnerData.path: .privacyErase,
        ChatMethods.PrivacyService.placeLegalHold.path: .privacyHold,
        ChatMethods.PrivacyService.releaseLegalHold.path: .privacyHold,
        ChatMethods.PrivacyService.listLegalHolds.path: .privacyHold,
        ChatMethods.PrivacyService.getRetentionPolicy.path: .privacyRetention,
        ChatMethods.PrivacyService.setRetentionPolicy.path: .privacyRetention,
        ChatMethods.PrivacyService.runRetentionSweep.path: .privacyRetention,
        ChatMethods.PrivacyService.listAuditRecords.path: .privacyAudit,
        ChatMethods.PrivacyService.verifyAuditTrail.path: .privacyAudit,
        ChatMethods.HealthService.check.path: nil,
        ChatMethods.HealthService.watch.path: nil,
        ChatMethods.MethodListService.listMethods.path: nil,
    ]

    /// The decision for one call.
    public enum Decision: Hashable, Sendable {
        /// Public method: no credentials needed.
        case publicMethod
        /// Needs credentials with this permission.
        case requires(Permission)
        /// A method the table does not know: refused (fail closed).
        case unknownMethod
    }

    /// What `method` needs.
    public static func decision(for method: String) -> Decision {
        guard let entry = Self.methodPermissions[method] else { return .unknownMethod }
        guard let permission = entry else { return .publicMethod }
        return .requires(permission)
    }
}
