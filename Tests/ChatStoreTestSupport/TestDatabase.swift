internal import ChatDomain
internal import ChatProto
internal import ChatTestSupport
public import Foundation
internal import Logging

// SQL(text:binds:) is internal to ChatStore (the only raw-text statement constructor); the tests build some
// statements from tables of text.
@testable public import ChatStore

/// The PostgreSQL cluster that scripts/test started. Tests fail (they do not skip) without it, since CI must run them.
public enum TestDatabase {
    public struct Missing: Error, CustomStringConvertible {
        public var description: String { "CHAT_TEST_DATABASE_URL is not set: run the tests through scripts/test" }
    }

    /// The bootstrap superuser on the `postgres` database.
    public static var conninfo: String {
        get throws {
            guard let url = ProcessInfo.processInfo.environment["CHAT_TEST_DATABASE_URL"] else { throw Missing() }
            return url
        }
    }

    /// The cluster's socket directory.
    public static var socketDirectory: String {
        get throws {
            guard let dir = ProcessInfo.processInfo.environment["CHAT_TEST_PG_SOCKET_DIR"] else { throw Missing() }
            return dir
        }
    }

    /// A connection string for `user` on `database` of the test cluster.
    public static func conninfo(database: String, user: String) throws -> String {
        "host=\(try Self.socketDirectory) port=5432 dbname=\(database) user=\(user)"
    }

    /// A new database owned by `chat_owner`, migrated, with connection strings for the owner, the application role
    /// and the superuser.
    public static func makeMigrated() async throws -> MigratedDatabase {
        // libpq blocks: off the cooperative pool.
        try await offPool { try Self.makeMigratedBlocking() }
    }

    public static func makeMigratedBlocking() throws -> MigratedDatabase {
        let name = "chat_t_\(UInt32.random(in: 0...UInt32.max))_\(UInt32.random(in: 0...UInt32.max))"
        let admin = try PGConnection(conninfo: try Self.conninfo)
        try admin.query("CREATE DATABASE \(unsafeRaw: name) OWNER chat_owner")
        admin.close()
        let owner = try PGConnection(conninfo: try Self.conninfo(database: name, user: "chat_owner"))
        defer { owner.close() }
        _ = try Migrator().migrate(owner, logger: Logger(label: "test"))
        return MigratedDatabase(
            name: name,
            owner: try Self.conninfo(database: name, user: "chat_owner"),
            app: try Self.conninfo(database: name, user: "chat_app"),
            superuser: try Self.conninfo(database: name, user: "postgres")
        )
    }

    /// The repository's root folder.
    public static let repositoryRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Runs a command of the repository's scripts and returns its exit status. Uses posix_spawn and waitpid:
    /// Foundation's `Process.waitUntilExit` can hang when called from an async test.
    @discardableResult
    public static func runScript(_ arguments: [String]) async throws -> Int32 {
        try await offPool { try Self.runScriptBlocking(arguments) }
    }

    public static func runScriptBlocking(_ arguments: [String]) throws -> Int32 {
        try runProgramBlocking(
            Self.repositoryRoot.appendingPathComponent(arguments[0]).path,
            Array(arguments.dropFirst())
        )
        .status
    }
}

/// A migrated database of the test cluster.
public struct MigratedDatabase: Sendable {
    public let name: String
    /// `chat_owner`, which ran the migrations.
    public let owner: String
    /// `chat_app`: not owner, not superuser, no BYPASSRLS.
    public let app: String
    /// The bootstrap superuser, which bypasses row-level security (for seeding and checking).
    public let superuser: String

    /// A database by its connection strings.
    public init(name: String, owner: String, app: String, superuser: String) {
        self.name = name
        self.owner = owner
        self.app = app
        self.superuser = superuser
    }

    public func makePool(size: Int = 4) -> PGPool {
        PGPool(conninfo: self.app, size: size, logger: Logger(label: "test"))
    }
}

/// Fixed identities for the tests.
public enum Fixture {
    public static let tenantA = "a0000000-0000-4000-8000-000000000001"
    public static let tenantB = "b0000000-0000-4000-8000-000000000002"
    public static let learnerA1 = "a1000000-0000-4000-8000-000000000011"
    public static let learnerA2 = "a2000000-0000-4000-8000-000000000012"
    public static let learnerB1 = "b1000000-0000-4000-8000-000000000021"

    public static func admin(_ tenant: String) -> TenantContext {
        TenantContext(tenantID: tenant, userID: "admin-\(tenant.prefix(1))", role: .tenantAdmin)
    }

    public static func guardian(_ tenant: String, of learners: [String]) -> TenantContext {
        TenantContext(tenantID: tenant, userID: "guardian-1", role: .guardian, learnerScope: learners)
    }
}

extension PGConnection {
    /// Runs a statement given as text with its binds (tests build some statements from tables of text).
    @discardableResult
    public func queryText(_ text: String, _ binds: [String?] = []) throws(StorageError) -> PGResult {
        try self.query(SQL(text: text, binds: binds))
    }
}
