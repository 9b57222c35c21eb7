import ArgumentParser
import ChatStore
import Logging

/// Applies the database migrations as the owner role; a no-op on an up-to-date database.
struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Apply the database migrations (as the owner role, not the application role)."
    )

    @OptionGroup var options: CommonOptions

    func run() async throws {
        let logger = try self.options.bootstrapLogging()
        let databaseURL = try self.options.resolvedDatabaseURL()
        let report = try await runBlocking { () throws(StorageError) -> Migrator.Report in
            let connection = try PGConnection(conninfo: databaseURL)
            defer { connection.close() }
            return try Migrator().migrate(connection, logger: logger)
        }
        logger.info(
            "migrations done",
            metadata: ["migration.applied": "\(report.applied)", "migration.present": "\(report.alreadyApplied)"]
        )
    }
}
