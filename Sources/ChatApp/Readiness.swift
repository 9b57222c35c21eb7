public import ChatRPC
public import ChatStore

/// Whether this instance should get new connections: not draining, the database answers as the application role
/// within a second, and its schema is the one this binary needs. `/readyz` answers with it; a load balancer or an
/// orchestrator stops sending new connections once it says no (from the moment SIGTERM starts the drain).
public struct Readiness: Sendable {
    let server: ChatServer
    let pool: PGPool
    /// How long the database check may take before it counts as unreachable.
    let timeout: Duration

    /// What the check found.
    public struct Report: Sendable, Hashable {
        /// The reasons this instance is not ready; empty when it is.
        public var problems: [String]
        /// True when there is no problem.
        public var ready: Bool { self.problems.isEmpty }
    }

    /// Creates the check.
    public init(server: ChatServer, pool: PGPool, timeout: Duration = .seconds(1)) {
        self.server = server
        self.pool = pool
        self.timeout = timeout
    }

    /// Checks now.
    public func check() async -> Report {
        var problems: [String] = []
        if self.server.isDraining { problems.append("draining: shutting down") }
        do {
            let budget = DatabaseBudget(deadline: .now + self.timeout)
            let version = try await DatabaseBudget.$current.withValue(budget) {
                do {
                    return try await self.schemaVersion()
                } catch let error as StorageError where error.code == .connectionFailed {
                    // After a server restart the first use of an old connection finds it gone (and every
                    // connection reconnects); the question is whether the database answers now: ask once more.
                    return try await self.schemaVersion()
                }
            }
            if version < Migrations.latestVersion {
                problems.append(
                    "schema at migration \(version), this chatd needs \(Migrations.latestVersion): run chatd migrate"
                )
            }
        } catch let error as StorageError where error.sqlState == "42883" {
            problems.append("schema older than migration 6: run chatd migrate")
        } catch {
            problems.append("database unreachable")
        }
        return Report(problems: problems)
    }

    private func schemaVersion() async throws -> Int64 {
        try await self.pool.withConnection { connection in
            try connection.query("SELECT chat.schema_version() AS version").requiredInt64(row: 0, column: "version")
        }
    }
}
