public import Logging

/// One versioned schema change.
public struct Migration: Sendable {
    /// Applied in increasing order; never reused.
    public let version: Int
    /// A short name, recorded with the version.
    public let name: String
    /// The SQL script; runs in one transaction.
    public let sql: String

    /// A stable checksum of the script (FNV-1a), recorded so that an edited, already-applied migration is caught.
    public var checksum: String {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in self.sql.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01B3
        }
        return String(hash, radix: 16)
    }
}

/// Applies the migrations in order, each in its own transaction, under an advisory lock (so two instances starting
/// together cannot race), and records them in `chat_meta.schema_migrations`. Runs as the owner role.
public struct Migrator: Sendable {
    /// What a run did.
    public struct Report: Sendable, Hashable {
        /// Versions applied by this run, in order.
        public var applied: [Int]
        /// Versions that were already there.
        public var alreadyApplied: [Int]
    }

    /// The migrations, in order.
    public let migrations: [Migration]

    /// The advisory lock key: "chatmigr" as an integer.
    static let lockKey = "7161385118098018930"

    /// Creates a migrator for the project's migrations.
    public init(migrations: [Migration] = Migrations.all) {
        self.migrations = migrations
    }

    /// Applies what is missing.
    ///
    /// - Parameters:
    ///   - connection: a connection as the owner role; it must not be in a transaction.
    ///   - logger: where applied migrations are logged.
    /// - Returns: what was applied and what was there already.
    /// - Throws: `StorageError` when a migration fails (it is rolled back) or an applied one was edited.
    public func migrate(_ connection: PGConnection, logger: Logger) throws(StorageError) -> Report {
        try connection.query("SELECT pg_advisory_lock(\(unsafeRaw: Self.lockKey))")
        defer { _ = try? connection.query("SELECT pg_advisory_unlock(\(unsafeRaw: Self.lockKey))") }
        try connection.execute(
            script: """
                CREATE SCHEMA IF NOT EXISTS chat_meta;
                CREATE TABLE IF NOT EXISTS chat_meta.schema_migrations (
                    version integer PRIMARY KEY,
                    name text NOT NULL,
                    checksum text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                );
                """
        )
        let existing = try connection.query("SELECT version, checksum FROM chat_meta.schema_migrations")
        var applied: [Int: String] = [:]
        for row in 0..<existing.rowCount {
            applied[Int(try existing.requiredInt64(row: row, column: "version"))] =
                try existing.requiredString(row: row, column: "checksum")
        }
        var report = Report(applied: [], alreadyApplied: [])
        for migration in self.migrations.sorted(by: { $0.version < $1.version }) {
            if let checksum = applied[migration.version] {
                guard checksum == migration.checksum else {
                    throw StorageError(
                        code: .migrationFailed,
                        detail: "migration \(migration.version) was edited after it was applied"
                    )
                }
                report.alreadyApplied.append(migration.version)
                continue
            }
            do {
                try connection.execute(script: "BEGIN;\n\(migration.sql)")
                try connection.query(
                    """
                    INSERT INTO chat_meta.schema_migrations (version, name, checksum)
                    VALUES (\(migration.version), \(migration.name), \(migration.checksum))
                    """
                )
                try connection.execute(script: "COMMIT")
            } catch {
                _ = try? connection.execute(script: "ROLLBACK")
                throw StorageError(
                    code: .migrationFailed,
                    sqlState: error.sqlState,
                    detail: "migration \(migration.version) (\(migration.name)): \(error.detail)"
                )
            }
            logger.info(
                "migration applied",
                metadata: ["migration.version": "\(migration.version)", "migration.name": "\(migration.name)"]
            )
            report.applied.append(migration.version)
        }
        return report
    }
}

/// Every migration of the project, in order.
public enum Migrations {
    /// The list `Migrator` applies.
    public static let all: [Migration] = [
        Migration(version: 1, name: "initial schema, roles and row-level security", sql: migration0001),
        Migration(version: 2, name: "event positions for live delivery", sql: migration0002),
        Migration(version: 3, name: "privacy: roles, retention schedule, outbox by age", sql: migration0003),
        Migration(version: 4, name: "idempotency keys", sql: migration0004),
        Migration(version: 5, name: "audit trail: insert-only, hash chain", sql: migration0005),
        Migration(version: 6, name: "schema version for readiness", sql: migration0006),
        Migration(version: 7, name: "a bounded outbox: trimming and the resume horizon", sql: migration0007),
        Migration(version: 8, name: "the outbox for Debezium's router, insert-only", sql: migration0008),
    ]

    /// The newest version this binary knows: a database at a lower one is not ready for it.
    public static var latestVersion: Int { Self.all.map(\.version).max() ?? 0 }
}
