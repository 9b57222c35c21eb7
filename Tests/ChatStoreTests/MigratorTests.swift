import ChatStoreTestSupport
import Logging
import Testing

@testable import ChatStore

@Suite("Migrations")
struct MigratorTests {
    @Test("a second run on a migrated database is a no-op")
    func idempotent() async throws {
        let database = try await TestDatabase.makeMigrated()
        let owner = try PGConnection(conninfo: database.owner)
        let report = try Migrator().migrate(owner, logger: Logger(label: "test"))
        #expect(report.applied.isEmpty)
        #expect(report.alreadyApplied == Migrations.all.map(\.version))
        let recorded = try owner.query("SELECT count(*) FROM chat_meta.schema_migrations")
        #expect(try recorded.int64(row: 0, column: 0) == Int64(Migrations.all.count))
    }

    @Test("a failing migration is rolled back and not recorded")
    func failingMigrationRollsBack() async throws {
        let database = try await TestDatabase.makeMigrated()
        let owner = try PGConnection(conninfo: database.owner)
        let broken = Migration(
            version: 9_999,
            name: "broken",
            sql: "CREATE TABLE chat.half_done (x int); SELECT * FROM no_such_table;"
        )
        #expect {
            try Migrator(migrations: Migrations.all + [broken]).migrate(owner, logger: Logger(label: "test"))
        } throws: { error in
            (error as! StorageError).code == .migrationFailed && (error as! StorageError).sqlState == "42P01"
        }
        #expect(try owner.query("SELECT to_regclass('chat.half_done') IS NULL").bool(row: 0, column: 0) == true)
        let recorded = try owner.query("SELECT count(*) FROM chat_meta.schema_migrations WHERE version = 9999")
        #expect(try recorded.int64(row: 0, column: 0) == 0)
    }

    @Test("an applied migration that was edited is refused")
    func editedMigration() async throws {
        let database = try await TestDatabase.makeMigrated()
        let owner = try PGConnection(conninfo: database.owner)
        let edited = Migrations.all.map { Migration(version: $0.version, name: $0.name, sql: $0.sql + "\n-- edit") }
        #expect {
            try Migrator(migrations: edited).migrate(owner, logger: Logger(label: "test"))
        } throws: { error in
            (error as! StorageError).code == .migrationFailed
        }
    }

    @Test("the application role is not owner, not superuser and cannot bypass row-level security")
    func applicationRole() async throws {
        let database = try await TestDatabase.makeMigrated()
        let superuser = try PGConnection(conninfo: database.superuser)
        let role = try superuser.query(
            "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = 'chat_app'"
        )
        #expect(role.rowCount == 1)
        for column in 0..<4 {
            #expect(try role.bool(row: 0, column: column) == false)
        }
        let owned = try superuser.query(
            """
            SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner
            WHERE r.rolname = 'chat_app'
            """
        )
        #expect(try owned.int64(row: 0, column: 0) == 0)
        // The owner role cannot bypass row-level security either.
        let ownerRole = try superuser.query("SELECT rolbypassrls FROM pg_roles WHERE rolname = 'chat_owner'")
        #expect(try ownerRole.bool(row: 0, column: 0) == false)
        // The application role has no access to the migration records.
        let app = try PGConnection(conninfo: database.app)
        #expect {
            try app.query("SELECT * FROM chat_meta.schema_migrations")
        } throws: { error in
            (error as! StorageError).sqlState == "42501"
        }
    }
}
