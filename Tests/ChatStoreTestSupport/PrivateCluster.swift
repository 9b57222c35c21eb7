internal import ChatTestSupport
public import Foundation
internal import Logging
internal import Synchronization

@testable internal import ChatStore

/// A PostgreSQL cluster of one test's own (scripts/pgcluster), for tests that stop or restart it: the shared one
/// serves the other suites. It holds a migrated `chat` database with the owner and application roles.
public final class PrivateCluster: Sendable {
    /// The cluster's directory (data, socket, log).
    public let directory: String
    /// The migrated database on it.
    public let database: MigratedDatabase
    /// Set once `remove()` has stopped it.
    private let removed = Atomic<Bool>(false)

    private init(directory: String, database: MigratedDatabase) {
        self.directory = directory
        self.database = database
    }

    /// Starts a new cluster and migrates its `chat` database.
    public static func start() async throws -> PrivateCluster {
        let directory = "/tmp/chatd-cluster-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        guard try await TestDatabase.runScript(["scripts/pgcluster", "start", directory]) == 0 else {
            throw POSIXError(.EIO)
        }
        let superuser = "host=\(directory) port=5432 dbname=postgres user=postgres"
        let owner = "host=\(directory) port=5432 dbname=chat user=chat_owner"
        try await offPool {
            let admin = try PGConnection(conninfo: superuser)
            defer { admin.close() }
            _ = try admin.query("CREATE ROLE chat_owner LOGIN CREATEROLE NOBYPASSRLS")
            _ = try admin.query("CREATE DATABASE chat OWNER chat_owner")
            let connection = try PGConnection(conninfo: owner)
            defer { connection.close() }
            _ = try Migrator().migrate(connection, logger: Logger(label: "test"))
        }
        return PrivateCluster(
            directory: directory,
            database: MigratedDatabase(
                name: "chat",
                owner: owner,
                app: "host=\(directory) port=5432 dbname=chat user=chat_app",
                superuser: "host=\(directory) port=5432 dbname=chat user=postgres"
            )
        )
    }

    /// Stops the server (the data stays); `resume()` starts it again.
    public func stop() async throws -> Int32 {
        try await TestDatabase.runScript(["scripts/pgcluster", "stop", self.directory])
    }

    /// Starts the server again after `stop()`.
    public func resume() async throws -> Int32 {
        try await TestDatabase.runScript(["scripts/pgcluster", "start", self.directory])
    }

    /// Restarts the server.
    public func restart() async throws -> Int32 {
        try await TestDatabase.runScript(["scripts/pgcluster", "restart", self.directory])
    }

    /// Stops the cluster and removes its files (the stop runs off the cooperative pool: other tests' tasks need it
    /// meanwhile).
    public func remove() async {
        _ = try? await TestDatabase.runScript(["scripts/pgcluster", "stop", self.directory])
        try? FileManager.default.removeItem(atPath: self.directory)
        self.removed.store(true, ordering: .releasing)
    }

    deinit {
        // A test that failed before `remove()`: the cluster is stopped all the same.
        if !self.removed.load(ordering: .acquiring) {
            _ = try? TestDatabase.runScriptBlocking(["scripts/pgcluster", "stop", self.directory])
            try? FileManager.default.removeItem(atPath: self.directory)
        }
    }
}
