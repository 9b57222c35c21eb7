internal import ChatRPC
public import ChatStore
public import Logging
public import ServiceLifecycle

/// Checks at start-up that the database answers as the application role and that the schema is migrated (chatd
/// stops if not), then holds until graceful shutdown.
public struct DatabaseProbe: Service {
    let pool: PGPool
    let logger: Logger

    /// Creates the probe.
    public init(pool: PGPool, logger: Logger) {
        self.pool = pool
        self.logger = logger
    }

    public func run() async throws {
        let (version, isApplicationRole) = try await self.pool.withConnection { connection in
            let result = try connection.query(
                """
                SELECT current_setting('server_version_num')::int8 AS version,
                       NOT rolsuper AND NOT rolbypassrls AS restricted,
                       to_regclass('chat.threads') IS NOT NULL AS migrated
                FROM pg_roles WHERE rolname = current_user
                """
            )
            guard try result.bool(row: 0, column: 2) == true else {
                throw StorageError(code: .unexpectedResult, detail: "the schema is missing: run chatd migrate")
            }
            return (try result.int64(row: 0, column: 0) ?? 0, try result.bool(row: 0, column: 1) ?? false)
        }
        if !isApplicationRole {
            self.logger.warning("connected as a superuser or BYPASSRLS role: row-level security does not apply")
        }
        self.logger.info("database ready", metadata: ["pg.server_version": "\(version)"])
        try? await gracefulShutdown()
    }
}
