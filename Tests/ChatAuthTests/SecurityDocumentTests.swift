import ChatDomain
import ChatProto
import Foundation
import Testing

@testable import ChatAuth

@Suite("docs/SECURITY.md states the authorization table of the code")
struct SecurityDocumentTests {
    static let document: String = {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        return (try? String(contentsOf: root.appendingPathComponent("docs/SECURITY.md"), encoding: .utf8)) ?? ""
    }()

    /// The cells of the table rows whose first cell starts with `prefix`.
    static func rows(startingWith prefix: String) -> [[String]] {
        Self.document.split(separator: "\n").compactMap { line in
            guard line.hasPrefix("| `\(prefix)") else { return nil }
            return line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
        }
    }

    static func names(_ cell: String) -> Set<String> {
        Set(cell.split(separator: ",").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: " `")) })
    }

    @Test("every method and what it needs")
    func methods() {
        let rows = Self.rows(startingWith: "/chat.v1.")
        #expect(rows.count == AuthorizationTable.methodPermissions.count)
        for row in rows {
            let method = row[0].trimmingCharacters(in: CharacterSet(charactersIn: "`"))
            guard let entry = AuthorizationTable.methodPermissions[method] else {
                Issue.record("\(method) is documented but not in the table")
                continue
            }
            let documented = row[1].trimmingCharacters(in: CharacterSet(charactersIn: "`"))
            #expect(documented == (entry?.rawValue ?? "nothing (public)"), "\(method)")
        }
    }

    @Test("every role, what it sees and its permissions")
    func roles() {
        for role in Role.assignable {
            guard let row = Self.rows(startingWith: role.claimName + "`").first else {
                Issue.record("\(role.claimName) is not documented")
                continue
            }
            #expect(row[1] == (role.seesWholeTenant ? "whole tenant" : "learner scope"), "\(role)")
            #expect(
                Self.names(row[2]) == Set(AuthorizationTable.rolePermissions[role]!.map(\.rawValue)),
                "\(role)"
            )
        }
    }
}
