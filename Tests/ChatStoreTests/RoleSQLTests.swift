import ChatDomain
import ChatProto
import ChatStoreTestSupport
import ChatTestSupport
import Testing

@testable import ChatStore

/// The migrations spell roles and event types in SQL (functions the policies call, an index predicate). Migrations
/// are history and are not edited, so these tests hold the database's behaviour to the Swift definitions: a role
/// or event type added to the contract and not to a new migration fails here.
@Suite("The database's roles and event types agree with the domain's")
struct RoleSQLTests {
    @Test(
        "chat.learner_in_scope sees the whole tenant exactly for the roles that do; chat.privacy_role admits exactly the roles with privacy permissions"
    )
    func roleFunctions() async throws {
        let database = try await TestDatabase.makeMigrated()
        let rows = try await offPool { () throws -> [(String, Bool, Bool)] in
            let connection = try PGConnection(conninfo: database.app)
            defer { connection.close() }
            var rows: [(String, Bool, Bool)] = []
            for role in Role.assignable + [.unspecified] {
                let results = try connection.pipeline([
                    "BEGIN",
                    "SELECT set_config('app.role', \(role.claimName), true), set_config('app.learner_scope', '{}', true)",
                    """
                    SELECT chat.learner_in_scope('00000000-0000-4000-8000-00000000abcd') AS whole,
                           chat.privacy_role() AS privacy
                    """,
                    "ROLLBACK",
                ])
                rows.append(
                    (
                        role.claimName, try results[2].bool(row: 0, column: 0) ?? false,
                        try results[2].bool(row: 0, column: 1) ?? false
                    )
                )
            }
            return rows
        }
        #expect(rows.count == Role.assignable.count + 1)
        let privacyPermissions: Set<Permission> = Set(Permission.allCases.filter { $0.rawValue.hasPrefix("privacy.") })
        for (name, whole, privacy) in rows {
            let role = Role(stored: name)
            #expect(whole == role.seesWholeTenant, "\(name): learner_in_scope")
            let holdsPrivacy = !(AuthorizationTable.rolePermissions[role] ?? []).isDisjoint(with: privacyPermissions)
            #expect(privacy == holdsPrivacy, "\(name): privacy_role")
        }
    }

    @Test("the retention index's predicate covers exactly the chat events")
    func retentionIndexPredicate() async throws {
        let database = try await TestDatabase.makeMigrated()
        let covered = try await offPool { () throws -> [Int] in
            let connection = try PGConnection(conninfo: database.superuser)
            defer { connection.close() }
            let predicate = try connection.query(
                """
                SELECT pg_get_expr(i.indpred, i.indrelid) FROM pg_index i
                WHERE i.indexrelid = 'chat.outbox_content_by_age'::regclass
                """
            )
            let text = try predicate.string(row: 0, column: 0) ?? ""
            // Evaluate the predicate for every number an int2 event type could be in the contract's range.
            var covered: [Int] = []
            for number in 0...64 {
                let check = try connection.queryText(
                    "SELECT \(text) FROM (SELECT false AS erased, $1::int2 AS type) AS outbox",
                    [String(number)]
                )
                if try check.bool(row: 0, column: 0) == true { covered.append(number) }
            }
            return covered
        }
        #expect(covered == EventType.chatEvents.map(\.number).sorted())
    }
}
