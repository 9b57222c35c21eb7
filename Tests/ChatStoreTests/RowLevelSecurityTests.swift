import ChatProto
import ChatRPC
import ChatServices
import ChatStoreTestSupport
import Testing

@testable import ChatStore

/// The tables that hold tenant data, with a statement that inserts one row for a tenant (`$1`), a learner (`$2`)
/// and a thread (`$3`). The catalog guard checks that this list covers every table with a `tenant_id` column.
let tenantTables: [(table: String, insert: String)] = [
    (
        "threads",
        """
        INSERT INTO chat.threads (tenant_id, id, learner_id, title, created_by, created_by_role)
        VALUES ($1, $3, $2, 'Homework', 'teacher-1', 'teacher')
        """
    ),
    (
        "messages",
        """
        INSERT INTO chat.messages (tenant_id, thread_id, seq, learner_id, author_id, author_role, body, idempotency_key)
        VALUES ($1, $3, 1, $2, 'teacher-1', 'teacher', 'hello', gen_random_uuid()::text)
        """
    ),
    (
        "message_edits",
        """
        INSERT INTO chat.message_edits (tenant_id, thread_id, seq, revision, learner_id, body, edited_by, edited_by_role)
        VALUES ($1, $3, 1, 1, $2, 'helo', 'teacher-1', 'teacher')
        """
    ),
    (
        "read_cursors",
        """
        INSERT INTO chat.read_cursors (tenant_id, user_id, thread_id, learner_id, read_seq)
        VALUES ($1, 'guardian-' || gen_random_uuid(), $3, $2, 1)
        """
    ),
    (
        "outbox",
        """
        INSERT INTO chat.outbox (tenant_id, type, learner_id, thread_id, seq, payload)
        VALUES ($1, 4, $2, $3, 1, '{}')
        """
    ),
    (
        "privacy_audit",
        """
        INSERT INTO chat.privacy_audit (tenant_id, kind, actor_id, actor_role, learner_id)
        SELECT $1, 1, 'officer-1', 'privacy_officer', $2 WHERE $3::uuid IS NOT NULL
        """
    ),
    (
        "idempotency_keys",
        """
        INSERT INTO chat.idempotency_keys (tenant_id, user_id, key, method, request_hash, expires_at)
        SELECT $1, 'teacher-1', decode(md5($2::text || $3::text), 'hex'), '/chat.v1.ThreadService/CreateThread',
               sha256($3::text::bytea), now() + interval '1 day'
        """
    ),
    (
        // Written only by the audit trigger (the owner): the privacy_audit rows above give each tenant its entry, and
        // this insert, which adds nothing, is what the application role is refused.
        "privacy_audit_chain",
        """
        INSERT INTO chat.privacy_audit_chain (tenant_id, seq, audit_id, digest, prev_hash, hash)
        SELECT $1, 1, $3, '', '', '' WHERE $2::uuid IS NULL
        """
    ),
    (
        // Written only by chat.trim_outbox (the owner); the application role reads its tenant's row.
        "outbox_horizon",
        """
        INSERT INTO chat.outbox_horizon (tenant_id, tx_id, id)
        SELECT $1, '1'::xid8, 1 WHERE $2::uuid IS NOT NULL AND $3::uuid IS NOT NULL
        ON CONFLICT (tenant_id) DO NOTHING
        """
    ),
    (
        "retention_policies",
        """
        INSERT INTO chat.retention_policies (tenant_id, message_retention_days, updated_by, updated_by_role)
        SELECT $1, 30, 'admin-1', 'tenant_admin' WHERE $2::uuid IS NOT NULL AND $3::uuid IS NOT NULL
        ON CONFLICT (tenant_id) DO UPDATE SET message_retention_days = 31
        """
    ),
    (
        "legal_holds",
        """
        INSERT INTO chat.legal_holds (tenant_id, learner_id, reason, placed_by, placed_by_role)
        SELECT $1, $2, 'case 1', 'officer-1', 'privacy_officer' WHERE $3::uuid IS NOT NULL
        ON CONFLICT (tenant_id, learner_id) DO UPDATE SET reason = 'case 2'
        """
    ),
]

/// Tables whose rows belong to one learner (restrictive `learner_scope` policy).
let learnerScopedTables: Set<String> = [
    "threads", "messages", "message_edits", "read_cursors", "outbox", "privacy_audit", "legal_holds",
]

/// Tables that only privacy roles (tenant admin, privacy officer, service) may touch.
let privacyTables: Set<String> = ["privacy_audit", "privacy_audit_chain", "retention_policies", "legal_holds"]

/// Tables the application role may only insert into (or, the chain and the outbox horizon, only read): UPDATE and
/// DELETE are refused.
let appendOnlyTables: Set<String> = ["privacy_audit", "privacy_audit_chain", "outbox_horizon"]

/// Insert-only tables whose rows may be deleted (the outbox, migration 8: erasure and retention replace an event by
/// its tombstone, trimming deletes old events): UPDATE is refused, DELETE goes through row-level security.
let noUpdateTables: Set<String> = ["outbox"]

/// Tables whose rows belong to one caller of the tenant (`user_id` = `app.user_id`); the seeded rows are teacher-1's.
let callerOwnedTables: Set<String> = ["idempotency_keys"]

/// The catalog guard: every table with a `tenant_id` column has row-level security enabled and forced and at
/// least one policy. Returns the tables that break the rule.
func rowLevelSecurityViolations(_ connection: PGConnection) throws -> [String] {
    let result = try connection.query(
        """
        SELECT n.nspname || '.' || c.relname AS name
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
        WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND NOT (c.relrowsecurity AND c.relforcerowsecurity
                   AND EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid))
        ORDER BY 1
        """
    )
    return try (0..<result.rowCount).map { try result.requiredString(row: $0, column: "name") }
}

/// Seeds rows of tenants A (learners A1 and A2) and B (learner B1) in every table, as the superuser.
func seedEveryTable(_ database: MigratedDatabase) throws -> [String: String] {
    let superuser = try PGConnection(conninfo: database.superuser)
    let threads = [
        Fixture.learnerA1: "a1a1a1a1-0000-4000-8000-000000000001",
        Fixture.learnerA2: "a2a2a2a2-0000-4000-8000-000000000002",
        Fixture.learnerB1: "b1b1b1b1-0000-4000-8000-000000000003",
    ]
    for (tenant, learner) in [
        (Fixture.tenantA, Fixture.learnerA1), (Fixture.tenantA, Fixture.learnerA2),
        (Fixture.tenantB, Fixture.learnerB1),
    ] {
        for (_, insert) in tenantTables {
            try superuser.queryText(insert, [tenant, learner, threads[learner]!])
        }
    }
    return threads
}

@Suite("Row-level security")
struct RowLevelSecurityTests {
    @Test("catalog guard: every table with tenant data has RLS enabled, forced and a policy")
    func catalogGuard() async throws {
        let database = try await TestDatabase.makeMigrated()
        let superuser = try PGConnection(conninfo: database.superuser)
        #expect(try rowLevelSecurityViolations(superuser) == [])
        let tables = try superuser.query(
            """
            SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
            WHERE n.nspname = 'chat' AND c.relkind = 'r' ORDER BY 1
            """
        )
        let names = try (0..<tables.rowCount).map { try tables.requiredString(row: $0, column: "relname") }
        // The isolation tests below cover exactly these tables.
        #expect(Set(names) == Set(tenantTables.map(\.table)))
    }

    @Test("catalog guard catches a new table without row-level security")
    func catalogGuardCatchesNewTable() async throws {
        let database = try await TestDatabase.makeMigrated()
        let owner = try PGConnection(conninfo: database.owner)
        try owner.query("CREATE TABLE chat.sneaky (tenant_id uuid NOT NULL, note text)")
        try owner.query("CREATE TABLE chat.half (tenant_id uuid NOT NULL)")
        try owner.query("ALTER TABLE chat.half ENABLE ROW LEVEL SECURITY")
        let superuser = try PGConnection(conninfo: database.superuser)
        #expect(try rowLevelSecurityViolations(superuser) == ["chat.half", "chat.sneaky"])
    }

    @Test("tenant A sees none of tenant B's rows, in every table")
    func tenantIsolationReads() async throws {
        let database = try await TestDatabase.makeMigrated()
        _ = try seedEveryTable(database)
        let pool = database.makePool(size: 2)
        defer { pool.shutdown() }
        for (table, _) in tenantTables {
            let counts = try await pool.withTenantTransaction(Fixture.admin(Fixture.tenantA)) { tx in
                let all = try tx.query(SQL(text: "SELECT count(*) FROM chat.\(table)", binds: []))
                let other = try tx.query(
                    SQL(text: "SELECT count(*) FROM chat.\(table) WHERE tenant_id = $1", binds: [Fixture.tenantB])
                )
                return (try all.int64(row: 0, column: 0)!, try other.int64(row: 0, column: 0)!)
            }
            #expect(counts.1 == 0, "\(table): tenant B rows visible from A")
            if !callerOwnedTables.contains(table) {
                #expect(counts.0 >= 1, "\(table): tenant A sees none of its own rows")
            }
        }
    }

    @Test("updates and deletes aimed at tenant B touch nothing; inserting a B row fails")
    func tenantIsolationWrites() async throws {
        let database = try await TestDatabase.makeMigrated()
        let threads = try seedEveryTable(database)
        let pool = database.makePool(size: 2)
        defer { pool.shutdown() }
        let context = Fixture.admin(Fixture.tenantA)
        for (table, insert) in tenantTables {
            if appendOnlyTables.contains(table) {
                for statement in ["UPDATE chat.\(table) SET tenant_id = tenant_id", "DELETE FROM chat.\(table)"] {
                    await #expect(throws: StorageError.self, "\(table): \(statement) was allowed") {
                        try await pool.withTenantTransaction(context) { tx in
                            _ = try tx.query(SQL(text: statement, binds: []))
                        }
                    }
                }
                continue
            }
            if noUpdateTables.contains(table) {
                await #expect(throws: StorageError.self, "\(table): UPDATE was allowed") {
                    try await pool.withTenantTransaction(context) { tx in
                        _ = try tx.query(SQL(text: "UPDATE chat.\(table) SET tenant_id = tenant_id", binds: []))
                    }
                }
            }
            let touched = try await pool.withTenantTransaction(context) { tx in
                let updated =
                    noUpdateTables.contains(table)
                    ? nil
                    : try tx.query(
                        SQL(
                            text: "UPDATE chat.\(table) SET tenant_id = tenant_id WHERE tenant_id = $1",
                            binds: [Fixture.tenantB]
                        )
                    )
                let deleted = try tx.query(
                    SQL(text: "DELETE FROM chat.\(table) WHERE tenant_id = $1", binds: [Fixture.tenantB])
                )
                return (updated?.affectedRows ?? 0) + deleted.affectedRows
            }
            #expect(touched == 0, "\(table): a write aimed at tenant B touched rows")
            await #expect(throws: StorageError.self, "\(table): inserting a tenant B row succeeded") {
                try await pool.withTenantTransaction(context) { tx in
                    _ = try tx.query(
                        SQL(text: insert, binds: [Fixture.tenantB, Fixture.learnerB1, threads[Fixture.learnerB1]!])
                    )
                }
            }
        }
        // Nothing of B changed, checked as the superuser.
        let superuser = try PGConnection(conninfo: database.superuser)
        for (table, _) in tenantTables {
            let count = try superuser.query(
                SQL(text: "SELECT count(*) FROM chat.\(table) WHERE tenant_id = $1", binds: [Fixture.tenantB])
            )
            #expect(try count.int64(row: 0, column: 0) == 1, "\(table)")
        }
        // Moving an A row into tenant B is refused by WITH CHECK.
        await #expect {
            try await pool.withTenantTransaction(context) { tx in
                _ = try tx.query(
                    SQL(text: "UPDATE chat.threads SET title = 'moved', tenant_id = $1", binds: [Fixture.tenantB])
                )
            }
        } throws: { error in
            guard let error = error as? StorageError, error.sqlState == "42501" else { return false }
            // The caller's status never carries the database's text (which names the policy and the table).
            let status = (mapRLS(error) as? StorageError)?.rpcError
            return error.detail.contains("row-level security") && status?.code == .permissionDenied
                && status?.message.contains("row-level security") == false
                && status?.message.contains("threads") == false
        }
    }

    @Test("idempotency keys are their caller's own: other callers of the tenant neither see nor write them")
    func callerOwnedRows() async throws {
        let database = try await TestDatabase.makeMigrated()
        _ = try seedEveryTable(database)
        let pool = database.makePool(size: 2)
        defer { pool.shutdown() }
        let owner = TenantContext(tenantID: Fixture.tenantA, userID: "teacher-1", role: .teacher)
        let colleague = TenantContext(tenantID: Fixture.tenantA, userID: "teacher-2", role: .teacher)
        // Tenant A has two seeded learners, so teacher-1 has two keys there.
        for (context, expected) in [(owner, Int64(2)), (colleague, 0), (Fixture.admin(Fixture.tenantA), 0)] {
            let count = try await pool.withTenantTransaction(context) { tx in
                try tx.query("SELECT count(*) FROM chat.idempotency_keys").int64(row: 0, column: 0)
            }
            #expect(count == expected, "\(context.userID)")
        }
        let taken = try await pool.withTenantTransaction(colleague) { tx in
            try tx.query("DELETE FROM chat.idempotency_keys").affectedRows
        }
        #expect(taken == 0)
        await #expect(throws: StorageError.self) {
            try await pool.withTenantTransaction(colleague) { tx in
                _ = try tx.query(
                    """
                    INSERT INTO chat.idempotency_keys (tenant_id, user_id, key, method, request_hash, expires_at)
                    VALUES (\(Fixture.tenantA), 'teacher-1', decode(repeat('ab', 16), 'hex'), '/m',
                            sha256(''::bytea), now() + interval '1 day')
                    """
                )
            }
        }
    }

    @Test("with no context, every table shows nothing and refuses inserts")
    func noContextFailsClosed() async throws {
        let database = try await TestDatabase.makeMigrated()
        let threads = try seedEveryTable(database)
        let app = try PGConnection(conninfo: database.app)
        for (table, insert) in tenantTables {
            let count = try app.query("SELECT count(*) FROM chat.\(unsafeRaw: table)")
            #expect(try count.int64(row: 0, column: 0) == 0, "\(table)")
            #expect(throws: StorageError.self, "\(table)") {
                try app.queryText(insert, [Fixture.tenantA, Fixture.learnerA1, threads[Fixture.learnerA1]!])
            }
        }
    }

    @Test("a context never leaks into the next transaction on the same connection")
    func contextDoesNotLeak() async throws {
        let database = try await TestDatabase.makeMigrated()
        _ = try seedEveryTable(database)
        // One connection, so both transactions run on it.
        let pool = database.makePool(size: 1)
        defer { pool.shutdown() }
        let seen = try await pool.withTenantTransaction(Fixture.admin(Fixture.tenantA)) { tx in
            try tx.query("SELECT count(*) FROM chat.threads").int64(row: 0, column: 0)
        }
        #expect(seen == 2)
        let after = try await pool.withConnection { connection in
            let settings = try connection.query("SELECT current_setting('app.tenant_id', true) AS tenant")
            let count = try connection.query("SELECT count(*) FROM chat.threads")
            return (try settings.string(row: 0, column: 0), try count.int64(row: 0, column: 0))
        }
        #expect(after.0 == nil || after.0 == "")
        #expect(after.1 == 0)
        // The same holds after a one-round-trip batch.
        _ = try await pool.tenantBatch(Fixture.admin(Fixture.tenantA), ["SELECT 1"]) { _ in () }
        let afterBatch = try await pool.withConnection { connection in
            try connection.query("SELECT count(*) FROM chat.threads").int64(row: 0, column: 0)
        }
        #expect(afterBatch == 0)
    }

    @Test("learner scope: a guardian sees and writes only the rows of learners in scope")
    func learnerScope() async throws {
        let database = try await TestDatabase.makeMigrated()
        let threads = try seedEveryTable(database)
        let pool = database.makePool(size: 2)
        defer { pool.shutdown() }
        let guardian = Fixture.guardian(Fixture.tenantA, of: [Fixture.learnerA1])
        for (table, insert) in tenantTables {
            let rows = try await pool.withTenantTransaction(guardian) { tx in
                let result = try tx.query(
                    SQL(text: "SELECT count(*) FROM chat.\(table) WHERE tenant_id = $1", binds: [Fixture.tenantA])
                )
                // Append-only tables refuse any update (checked in tenantIsolationWrites).
                if appendOnlyTables.contains(table) { return (try result.int64(row: 0, column: 0)!, 0) }
                // Tables without UPDATE: a DELETE out of scope must touch nothing instead.
                let write =
                    noUpdateTables.contains(table)
                    ? "DELETE FROM chat.\(table)" : "UPDATE chat.\(table) SET tenant_id = tenant_id"
                let outOfScope = try tx.query(
                    SQL(
                        text:
                            "\(write) WHERE tenant_id = $1 AND $2::uuid IS NOT NULL"
                            + (learnerScopedTables.contains(table) ? " AND learner_id = $2" : ""),
                        binds: [Fixture.tenantA, Fixture.learnerA2]
                    )
                )
                return (try result.int64(row: 0, column: 0)!, outOfScope.affectedRows)
            }
            if privacyTables.contains(table) {
                #expect(rows.0 == 0, "\(table): a guardian sees privacy records")
            } else if callerOwnedTables.contains(table) {
                #expect(rows.0 == 0, "\(table): a guardian sees another caller's rows")
            } else {
                #expect(rows.0 == 1, "\(table): the guardian should see exactly the in-scope learner's row")
            }
            #expect(rows.1 == 0, "\(table): a guardian updated an out-of-scope row")
            if learnerScopedTables.contains(table) {
                await #expect(throws: StorageError.self, "\(table): inserting for an out-of-scope learner succeeded") {
                    try await pool.withTenantTransaction(guardian) { tx in
                        _ = try tx.query(
                            SQL(text: insert, binds: [Fixture.tenantA, Fixture.learnerA2, threads[Fixture.learnerA2]!])
                        )
                    }
                }
            }
        }
        // A teacher scoped to A2 sees A2's thread only; a tenant admin sees both.
        let teacher = TenantContext(
            tenantID: Fixture.tenantA,
            userID: "teacher-2",
            role: .teacher,
            learnerScope: [Fixture.learnerA2]
        )
        let seenByTeacher = try await pool.withTenantTransaction(teacher) { tx in
            try tx.query("SELECT learner_id::text FROM chat.threads").string(row: 0, column: 0)
        }
        #expect(seenByTeacher == Fixture.learnerA2)
    }
}
