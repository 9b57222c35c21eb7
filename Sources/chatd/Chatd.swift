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

    /// Parses the command line with the environment's `CHATD_` flags added (`Environment`), then runs.
    static func main() async {
        var arguments = Array(CommandLine.arguments.dropFirst())
        do {
            let serve = Environment.flags(of: Serve.self)
            let migrate = Environment.flags(of: Migrate.self)
            arguments = try Environment.arguments(
                arguments,
                environment: ProcessInfo.processInfo.environment,
                flags: arguments.first == "migrate" ? migrate : serve,
                known: Set(serve.keys).union(migrate.keys)
            )
            var command = try Self.parseAsRoot(arguments)
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            Self.exit(withError: error)
        }
    }
}

/// Options every subcommand shares.
struct CommonOptions: ParsableArguments {
    @Option(
        name: .customLong("database-url"),
        help: "libpq connection string or URI."
    )
    var databaseURL: String?

    @Option(name: .customLong("pool-size"), help: "Database connections of the application role.")
    var poolSize: Int = 8

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    @Option(name: .customLong("log-format"), help: "text, or json (one JSON object a line).")
    var logFormat: String = "text"

    /// The database URL from the flag or the environment.
    func resolvedDatabaseURL() throws -> String {
        if let url = self.databaseURL {
            return url
        }
        throw ValidationError("no database: pass --database-url or set CHATD_DATABASE_URL")
    }

    /// Bootstraps the logging backend (only the application does this) and returns the root logger.
    func bootstrapLogging() throws -> Logger {
        guard let level = Logger.Level(rawValue: self.logLevel) else {
            throw ValidationError("unknown --log-level \(self.logLevel)")
        }
        switch self.logFormat {
        case "text":
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            }
        case "json":
            LoggingSystem.bootstrap { label in JSONLogHandler(label: label, logLevel: level) }
        default:
            throw ValidationError("--log-format is text or json, not \(self.logFormat)")
        }
        return Logger(label: "chatd")
    }
}
