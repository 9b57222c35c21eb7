import ChatStore
import Logging
import ServiceLifecycle

/// Checks at start-up that the database answers, then holds until graceful shutdown.
struct DatabaseProbe: Service {
    let conninfo: String
    let logger: Logger

    func run() async throws {
        let conninfo = self.conninfo
        let version = try await runBlocking { () throws(StorageError) -> Int in
            let connection = try PGConnection(conninfo: conninfo)
            defer { connection.close() }
            return connection.serverVersion
        }
        self.logger.info("database reachable", metadata: ["pg.server_version": "\(version)"])
        self.logger.info("chatd ready; serving RPCs comes with the RPC runtime")
        try? await gracefulShutdown()
        self.logger.info("chatd stopped")
    }
}
