import ChatAuth
import ChatClient
import ChatProto
import ChatRPC
import ChatServices
import ChatStoreTestSupport
import ChatTestSupport
import Foundation
import Testing

@testable import ChatStore

/// Rebuilds tenant A's chain from scratch as the superuser, as someone who edited a record and wanted it unseen
/// would: every hash recomputed.
private let rechain = """
    DO $$
    DECLARE
        r chat.privacy_audit;
        n bigint := 0;
        previous bytea := decode(repeat('00', 32), 'hex');
        st jsonb;
        d bytea;
    BEGIN
        DELETE FROM chat.privacy_audit_chain WHERE tenant_id = 'a0000000-0000-4000-8000-000000000001';
        FOR r IN SELECT * FROM chat.privacy_audit WHERE tenant_id = 'a0000000-0000-4000-8000-000000000001'
                 ORDER BY started_at, id LOOP
            n := n + 1;
            st := chat.audit_state(r);
            d := chat.audit_digest(st);
            INSERT INTO chat.privacy_audit_chain (tenant_id, seq, audit_id, state, digest, prev_hash, hash)
            VALUES (r.tenant_id, n, r.id, st, d, previous, chat.audit_chain_hash(previous, d, n, r.id));
            previous := chat.audit_chain_hash(previous, d, n, r.id);
        END LOOP;
    END
    $$
    """

/// A statement run as the superuser with the triggers off, as someone editing the trail behind chatd's back would.
private func tamper(_ database: MigratedDatabase, _ statement: String) async throws {
    _ = try await superuserQuery(
        database,
        "DO $tamper$ BEGIN SET LOCAL session_replication_role = replica; \(statement); END $tamper$"
    )
}

@Suite("The audit trail: insert-only for chatd, a hash chain per tenant, verified")
struct AuditChainTests {
    /// A harness with some history: holds, a policy, an export, an erasure, a sweep.
    static func history() async throws -> (ServiceHarness, ChatClient) {
        let harness = try await ServiceHarness()
        _ = try await SeededLearner.seed(harness, learner: Fixture.learnerA1, threads: 1, perThread: 3)
        let officer = try harness.client(.privacyOfficer, user: "officer-1")
        _ = try await officer.placeLegalHold(PlaceLegalHoldRequest(learnerId: Fixture.learnerA1, reason: "case 1"))
        _ = try await officer.releaseLegalHold(ReleaseLegalHoldRequest(learnerId: Fixture.learnerA1, reason: "closed"))
        _ = try await officer.setRetentionPolicy(SetRetentionPolicyRequest(messageRetentionDays: 30))
        for try await _ in try await officer.exportLearnerData(ExportLearnerDataRequest(learnerId: Fixture.learnerA1)) {
        }
        for try await _ in try await officer.runRetentionSweep(RunRetentionSweepRequest()) {}
        _ = try await officer.eraseLearnerData(EraseLearnerDataRequest(learnerId: Fixture.learnerA2, reason: "gone"))
        return (harness, officer)
    }

    @Test("chatd's role cannot update or delete audit records, nor write the chain; its one function is narrow")
    func insertOnly() async throws {
        let (harness, officer) = try await Self.history()
        let pool = harness.pool
        let context = TenantContext(tenantID: Fixture.tenantA, userID: "officer-1", role: .privacyOfficer)
        for statement: SQL in [
            "UPDATE chat.privacy_audit SET outcome = 'forged'",
            "DELETE FROM chat.privacy_audit",
            "DELETE FROM chat.privacy_audit_chain",
            "UPDATE chat.privacy_audit_chain SET hash = ''",
        ] {
            await #expect("\(statement.text) was allowed") {
                try await pool.withTenantTransaction(context) { tx in _ = try tx.query(statement) }
            } throws: { error in
                (error as? StorageError)?.sqlState == "42501"
            }
        }
        // The function changes unfinished records only, and counts only grow.
        let finished =
            try await superuserQuery(
                harness.database,
                "SELECT id::text FROM chat.privacy_audit WHERE finished_at IS NOT NULL LIMIT 1"
            ).first?.first ?? nil
        let changed = try await pool.withTenantTransaction(context) { tx in
            try tx.query("SELECT * FROM chat.audit_update(\(finished!)::uuid, new_outcome => 'forged')").rowCount
        }
        #expect(changed == 0)
        await #expect(throws: StorageError.self) {
            try await pool.withTenantTransaction(context) { tx in
                _ = try tx.query("SELECT * FROM chat.audit_update(\(finished!)::uuid, add_messages => -1)")
            }
        }
        // Not for roles without privacy duties.
        let guardian = Fixture.guardian(Fixture.tenantA, of: [Fixture.learnerA1])
        await #expect(throws: StorageError.self) {
            try await pool.withTenantTransaction(guardian) { tx in
                _ = try tx.query("SELECT * FROM chat.audit_update(\(finished!)::uuid)")
            }
        }
        let report = try await officer.verifyAuditTrail(VerifyAuditTrailRequest())
        #expect(report.intact && report.problems.isEmpty)
        // Seven records (hold placed, released, policy, export, sweep, erasure) and their progress changes.
        let records =
            try await superuserQuery(
                harness.database,
                "SELECT count(*) FROM chat.privacy_audit WHERE tenant_id = '\(Fixture.tenantA)'"
            ).first?.first ?? nil
        #expect(Int(records ?? "") ?? 0 >= 6)
        #expect(report.entries > UInt64(Int(records ?? "") ?? 0))
        await officer.close()
        try await harness.stop()
    }

    @Test("verification finds a record edited, deleted or moved by the superuser, and a chain cut or reordered")
    func tampering() async throws {
        let (harness, officer) = try await Self.history()
        let ids = try await superuserQuery(
            harness.database,
            "SELECT id::text FROM chat.privacy_audit WHERE tenant_id = '\(Fixture.tenantA)' ORDER BY started_at, id"
        ).compactMap { $0[0] }
        #expect(ids.count >= 6)
        func problems() async throws -> [AuditChainProblem] {
            let report = try await officer.verifyAuditTrail(VerifyAuditTrailRequest())
            #expect(report.intact == report.problems.isEmpty)
            return report.problems
        }
        #expect(try await problems().isEmpty)

        // Even the superuser cannot edit or delete a record while the triggers are on.
        for statement in [
            "UPDATE chat.privacy_audit SET outcome = 'nothing happened' WHERE id = '\(ids[2])'",
            "DELETE FROM chat.privacy_audit WHERE id = '\(ids[2])'",
        ] {
            await #expect(throws: StorageError.self, "\(statement)") {
                _ = try await superuserQuery(harness.database, statement)
            }
        }

        // An edited record (triggers off).
        try await tamper(
            harness.database,
            "UPDATE chat.privacy_audit SET outcome = 'nothing happened' WHERE id = '\(ids[2])'"
        )
        var found = try await problems()
        #expect(found.contains { $0.auditId == ids[2] && $0.description.contains("altered") }, "\(found)")
        // Changing the record back makes it intact again (the check is of content, not of history).
        try await tamper(harness.database, "UPDATE chat.privacy_audit SET outcome = 'ok' WHERE id = '\(ids[2])'")
        #expect(try await problems().isEmpty)

        // An edit that goes through the chain (the flag set by hand) is chained, but is no change a job makes.
        _ = try await superuserQuery(
            harness.database,
            """
            DO $edit$ BEGIN
                PERFORM set_config('chat.audit_update', 'on', true);
                UPDATE chat.privacy_audit SET outcome = 'rewritten' WHERE id = '\(ids[1])';
            END $edit$
            """
        )
        found = try await problems()
        #expect(found.contains { $0.auditId == ids[1] && $0.description.contains("after it had finished") }, "\(found)")

        // A deleted record.
        try await tamper(harness.database, "DELETE FROM chat.privacy_audit WHERE id = '\(ids[0])'")
        found = try await problems()
        #expect(found.contains { $0.auditId == ids[0] && $0.description.contains("deleted") }, "\(found)")

        // A record moved in time (reordered).
        try await tamper(
            harness.database,
            "UPDATE chat.privacy_audit SET started_at = started_at - interval '1 year' WHERE id = '\(ids[3])'"
        )
        found = try await problems()
        #expect(found.contains { $0.auditId == ids[3] }, "\(found)")

        // Chain entries swapped, and one removed.
        for (from, to) in [(2, 1_000_000), (3, 2), (1_000_000, 3)] {
            _ = try await superuserQuery(
                harness.database,
                "UPDATE chat.privacy_audit_chain SET seq = \(to) WHERE tenant_id = '\(Fixture.tenantA)' AND seq = \(from)"
            )
        }
        found = try await problems()
        #expect(found.contains { $0.seq == 2 || $0.seq == 3 }, "\(found)")
        _ = try await superuserQuery(
            harness.database,
            "DELETE FROM chat.privacy_audit_chain WHERE tenant_id = '\(Fixture.tenantA)' AND seq = 5"
        )
        found = try await problems()
        #expect(found.contains { $0.description.contains("removed or moved") }, "\(found)")
        await officer.close()
        try await harness.stop()
    }

    @Test("chatctl privacy audit --verify: exit 0 and the head; a rewritten trail fails against the head kept")
    func chatctlVerify() async throws {
        let (harness, officer) = try await Self.history()
        await officer.close()
        let key = try await ChatctlKey.make("chatctl-audit")
        defer { key.remove() }
        // A second instance on the same database that trusts chatctl's key.
        let server = try await ServiceHarness(extraKeys: key.trusted, sharing: harness.database)
        let token = try await key.mint(sub: "dpo-1", role: "privacy_officer")
        let tls = ProcessInfo.processInfo.environment["CHAT_TEST_TLS_DIR"] ?? ""
        func verify(_ extra: [String] = []) async throws -> (status: Int32, output: String) {
            try await runProgram(
                CLITests.chatctl,
                [
                    "privacy", "audit", "--verify", "--address", "127.0.0.1:\(server.port)", "--ca", "\(tls)/ca.pem",
                    "--token", token,
                ] + extra
            )
        }
        let first = try await verify()
        #expect(first.status == 0, "\(first.output)")
        let head =
            first.output.split(separator: " ").last.map { String($0).trimmingCharacters(in: .whitespacesAndNewlines) }
            ?? ""
        #expect(head.contains(":"), "\(first.output)")
        #expect(try await verify(["--expect-head", head]).status == 0)

        // An edit, found by itself.
        try await tamper(
            harness.database,
            "UPDATE chat.privacy_audit SET reason = 'nothing to see' WHERE tenant_id = '\(Fixture.tenantA)' AND kind = 3"
        )
        let edited = try await verify()
        #expect(edited.status == 1 && edited.output.contains("PROBLEM"), "\(edited.output)")
        // The same edit with the whole chain recomputed: consistent in itself, but not with the head kept.
        _ = try await superuserQuery(harness.database, rechain)
        #expect(try await verify().status == 0)
        let rewritten = try await verify(["--expect-head", head])
        #expect(
            rewritten.status == 1 && rewritten.output.contains("not the one recorded earlier"),
            "\(rewritten.output)"
        )
        #expect(try await verify(["--expect-head", "nonsense"]).status != 0)
        try await server.stop()
        try await harness.stop()
    }
}
