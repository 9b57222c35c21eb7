import ArgumentParser
import ChatStore
import Foundation
import Logging
import ServiceLifecycle
import UnixSignals

/// The chatd server.
@main
struct Chatd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chatd",
        abstract: "The chat service for education platforms.",
        subcommands: [Serve.self, Migrate.self],
        defaultSubcommand: Serve.self
    )
}

/// Options every subcommand shares.
struct CommonOptions: ParsableArguments {
    @Option(
        name: .customLong("database-url"),
        help: "libpq connection string or URI (env CHATD_DATABASE_URL)."
    )
    var databaseURL: String?

    @Option(name: .customLong("pool-size"), help: "Database connections of the application role.")
    var poolSize: Int = 8

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    /// The database URL from the flag or the environment.
    func resolvedDatabaseURL() throws -> String {
        if let url = self.databaseURL ?? ProcessInfo.processInfo.environment["CHATD_DATABASE_URL"] {
            return url
        }
        throw ValidationError("no database: pass --database-url or set CHATD_DATABASE_URL")
    }

    /// Bootstraps the logging backend (only the application does this) and returns the root logger.
    func bootstrapLogging() throws -> Logger {
        guard let level = Logger.Level(rawValue: self.logLevel) else {
            throw ValidationError("unknown --log-level \(self.logLevel)")
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        return Logger(label: "chatd")
    }
}
