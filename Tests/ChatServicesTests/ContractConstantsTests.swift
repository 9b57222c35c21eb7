import ChatAuth
import ChatProto
import ChatServices
import ChatStore
import Testing

/// The storage layer's numbers and names against the contract's enums: a value added to, or renumbered in, one of
/// them and not the other fails here.
@Suite("Constants agree with the contract")
struct ContractConstantsTests {
    @Test("outbox event types are the contract's EventType numbers, every one of them")
    func eventTypes() {
        let stored: [(Int, EventType)] = [
            (OutboxEventType.threadCreated, .threadCreated), (OutboxEventType.threadUpdated, .threadUpdated),
            (OutboxEventType.threadDeleted, .threadDeleted), (OutboxEventType.messageCreated, .messageCreated),
            (OutboxEventType.messageEdited, .messageEdited), (OutboxEventType.messageDeleted, .messageDeleted),
            (PrivacyEventType.exportRequested, .privacyExportRequested),
            (PrivacyEventType.exportCompleted, .privacyExportCompleted),
            (PrivacyEventType.erasureCompleted, .privacyErasureCompleted),
            (PrivacyEventType.legalHoldPlaced, .legalHoldPlaced),
            (PrivacyEventType.legalHoldReleased, .legalHoldReleased),
            (PrivacyEventType.retentionRunCompleted, .retentionRunCompleted),
        ]
        for (number, type) in stored {
            #expect(EventType(rawValue: Int32(number)) == type, "\(number)")
        }
        // Every type of the contract is written by the server, except the erasure request (an erasure is one
        // transaction: only its completion is an event).
        let written = Set(stored.map(\.1))
        let unwritten = EventType.allCases.filter { $0 != .unspecified && !written.contains($0) }
        #expect(unwritten == [.privacyErasureRequested], "\(unwritten)")
    }

    @Test("audit record kinds are the contract's AuditKind numbers, every one of them")
    func auditKinds() {
        let stored: [(Int, AuditKind)] = [
            (AuditRecordKind.export, .export), (AuditRecordKind.erasure, .erasure),
            (AuditRecordKind.legalHoldPlaced, .legalHoldPlaced),
            (AuditRecordKind.legalHoldReleased, .legalHoldReleased),
            (AuditRecordKind.retentionRun, .retentionRun), (AuditRecordKind.retentionPolicySet, .retentionPolicySet),
        ]
        for (number, kind) in stored {
            #expect(AuditKind(rawValue: Int32(number)) == kind, "\(number)")
        }
        #expect(Set(stored.map(\.1)) == Set(AuditKind.allCases.filter { $0 != .unspecified }))
    }

    @Test("roles: the authorization table's, the database context's and the contract's are the same set")
    func roles() {
        let authorization = Set(ChatAuth.Role.allCases.map(\.rawValue))
        let database = Set(TenantContext.Role.allCases.map(\.rawValue))
        #expect(authorization == database)
        let contract = Set(ChatProto.Role.allCases.filter { $0 != .unspecified })
        #expect(contract.count == authorization.count)
        // Whole-tenant roles are the same in both layers.
        for role in TenantContext.Role.allCases {
            let principal = Principal(
                userID: "u",
                tenantID: "t",
                role: ChatAuth.Role(rawValue: role.rawValue)!,
                learnerScope: [],
                permissions: []
            )
            #expect(TenantContext(principal).role == role)
        }
    }
}
