import ChatDomain
import ChatProto
import Testing

/// The domain's facts against the contract's enums: roles, event-type groups and the permission table are derived
/// from (or checked against) proto/, so a value added there and forgotten here fails one of these.
@Suite("The domain's facts agree with the contract")
struct DomainContractTests {
    @Test("the assignable roles are the contract's Role values but UNSPECIFIED, named as claims and SQL name them")
    func roles() {
        #expect(Role.assignable.count == Role.allCases.count - 1)
        #expect(!Role.assignable.contains(.unspecified))
        #expect(
            Role.assignable.map(\.claimName) == [
                "learner", "guardian", "teacher", "tenant_admin", "service", "privacy_officer",
            ]
        )
        for role in Role.assignable {
            #expect(Role(name: role.claimName) == role)
            #expect(Role(stored: role.claimName) == role)
        }
        // Only assignable names open: not the placeholder, not the proto spelling, not another case.
        for name in ["unspecified", "ROLE_TENANT_ADMIN", "Tenant_Admin", "tenantAdmin", "", "admin"] {
            #expect(Role(name: name) == nil, "\(name)")
            #expect(Role(stored: name) == .unspecified, "\(name)")
        }
        #expect(Role.unrecognized(99).claimName == "unspecified")
        #expect(!Role.unrecognized(99).seesWholeTenant && !Role.unspecified.seesWholeTenant)
    }

    @Test("every assignable role has its row in the permission table, and the table has no other")
    func permissionTable() {
        #expect(Set(AuthorizationTable.rolePermissions.keys) == Set(Role.assignable))
        for role in Role.assignable {
            #expect(!(AuthorizationTable.rolePermissions[role] ?? []).isEmpty, "\(role.claimName)")
        }
        // Every method of the contract has an entry (public or a permission); none is left to fail closed by
        // accident.
        for method in ChatMethods.all {
            #expect(AuthorizationTable.methodPermissions[method.path] != nil, "\(method.path)")
        }
        #expect(AuthorizationTable.methodPermissions.count == ChatMethods.all.count)
    }

    @Test("event-type groups follow the contract's names: every THREAD_ and MESSAGE_ type is a chat event")
    func eventGroups() {
        let known = EventType.allCases.filter { $0 != .unspecified }
        #expect(EventType.subscribable == known)
        let threads = Set(known.filter { $0.name?.hasPrefix("thread_") == true })
        let messages = Set(known.filter { $0.name?.hasPrefix("message_") == true })
        #expect(EventType.threadEvents == threads)
        #expect(EventType.messageEvents == messages)
        #expect(EventType.chatEvents == threads.union(messages))
        #expect(EventType.threadEvents.isDisjoint(with: EventType.messageEvents))
        // The privacy operations' events are not chat events (an erasure must not mark its own receipt erased).
        #expect(known.filter { !EventType.chatEvents.contains($0) }.allSatisfy { $0.rawValue > 6 })
        #expect(EventType.threadCreated.number == 1 && AuditKind.retentionPolicySet.number == 6)
    }
}
