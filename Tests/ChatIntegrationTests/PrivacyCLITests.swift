import ChatAuth
import ChatClient
import ChatProto
import ChatRPC
import ChatServices
import ChatStoreTestSupport
import ChatTestSupport
import Foundation
import Testing

@Suite("chatctl privacy: batch export, erasure, holds, retention and the audit trail")
struct PrivacyCLITests {
    @Test("export to JSON lines and resume a torn file; hold, erase a batch, sweep, read the audit trail")
    func batchJob() async throws {
        let key = try await ChatctlKey.make("chatctl-privacy")
        defer { key.remove() }
        let directory = key.directory
        let harness = try await ServiceHarness(extraKeys: key.trusted)
        let seeded = try await SeededLearner.seed(harness, learner: Fixture.learnerA1, threads: 3, perThread: 40)
        _ = try await SeededLearner.seed(harness, learner: Fixture.learnerA2, threads: 1, perThread: 2)

        let token = try await key.mint(sub: "dpo-1", role: "privacy_officer")
        let tls = ProcessInfo.processInfo.environment["CHAT_TEST_TLS_DIR"] ?? ""
        let common = [
            "--address", "127.0.0.1:\(harness.port)", "--ca", "\(tls)/ca.pem", "--token", token, "--timeout", "120",
        ]
        func chatctl(_ arguments: [String], status: Int32 = 0) async throws -> String {
            let result = try await runProgram(CLITests.chatctl, ["privacy"] + arguments + common)
            #expect(result.status == status, "chatctl privacy \(arguments.joined(separator: " ")): \(result.output)")
            return result.output
        }
        func records(_ path: String) throws -> [[String: Any]] {
            let text = try String(contentsOfFile: path, encoding: .utf8)
            return try text.split(separator: "\n").map {
                try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] ?? [:]
            }
        }
        func recordKey(_ record: [String: Any]) -> String {
            let type = record["type"] as? String ?? "?"
            let body = record[type] as? [String: Any] ?? [:]
            switch type {
            case "thread": return "t/\(body["id"] ?? "")"
            case "message": return "m/\(body["thread_id"] ?? "")/\(body["seq"] ?? "")"
            case "edit_history": return "e/\(body["thread_id"] ?? "")/\(body["seq"] ?? "")"
            case "read_cursor": return "c/\(body["thread_id"] ?? "")/\(body["user_id"] ?? "")"
            case "audit": return "a/\(body["id"] ?? "")"
            default: return type
            }
        }

        // One more thread of 1,500 messages of 300 bytes, written directly: the export is larger than the server
        // buffers for one stream (256 KiB), so the interrupted export below is still running when its client goes away
        // (a small one could be sent, and completed, before the server notices).
        let bulkMessages = 1500
        _ = try await superuserQuery(
            harness.database,
            """
            WITH t AS (
                INSERT INTO chat.threads (tenant_id, learner_id, title, last_seq, event_seq, created_by, created_by_role)
                VALUES ('\(Fixture.tenantA)', '\(Fixture.learnerA1)', 'Bulk', \(bulkMessages), \(bulkMessages), 'seed',
                        'teacher')
                RETURNING tenant_id, id, learner_id
            )
            INSERT INTO chat.messages (tenant_id, thread_id, seq, learner_id, author_id, author_role, body,
                                       idempotency_key, event_seq)
            SELECT t.tenant_id, t.id, g, t.learner_id, 'seed', 'teacher', repeat('b', 300), 'bulk-' || g, g
            FROM t, generate_series(1, \(bulkMessages)) g
            """
        )

        // A complete export.
        let full = "\(directory)/full.jsonl"
        #expect(try await chatctl(["export", "--learner", Fixture.learnerA1, "--out", full]).contains("records"))
        let complete = try records(full)
        let expected =
            seeded.threads.count + seeded.messages + seeded.threads.count + seeded.readCursors + 1 + 1 + bulkMessages
        #expect(complete.count == expected, "threads, messages, one edit history per thread, cursors, summary")
        #expect(complete.last?["type"] as? String == "summary")
        #expect(Set(complete.map(recordKey)).count == complete.count)
        // Refuses to overwrite.
        _ = try await chatctl(["export", "--learner", Fixture.learnerA1, "--out", full], status: 64)

        // An interrupted export: the first half written by a job that died in the middle of a line.
        let officer = try harness.client(.privacyOfficer, user: "dpo-2")
        let partial = "\(directory)/partial.jsonl"
        var written = Data()
        var count = 0
        for try await response in try await officer.exportLearnerData(.init(learnerId: Fixture.learnerA1)) {
            let record = response.record!
            let line: [String: Any]
            switch record.record {
            case .thread(let thread): line = ["type": "thread", "thread": ["id": thread.id]]
            case .message(let message):
                line = ["type": "message", "message": ["thread_id": message.threadId, "seq": message.seq]]
            case .edits(let edits):
                line = ["type": "edit_history", "edit_history": ["thread_id": edits.threadId, "seq": edits.seq]]
            default: line = ["type": "other"]
            }
            var object = line
            object["resume_token"] = record.resumeToken
            written.append(try JSONSerialization.data(withJSONObject: object))
            written.append(UInt8(ascii: "\n"))
            count += 1
            if count == 50 { break }
        }
        await officer.close()
        written.append(Data("{\"type\":\"mess".utf8))  // torn
        FileManager.default.createFile(atPath: partial, contents: written)
        _ = try await chatctl(["export", "--learner", Fixture.learnerA1, "--out", partial, "--resume"])
        // The second export also holds the first one's audit record (an audit record about the learner).
        let firstExport = (complete.last?["summary"] as? [String: Any])?["audit_id"] as? String ?? ""
        let resumed = try records(partial)
        #expect(resumed.count == complete.count + 1)
        #expect(Set(resumed.map(recordKey)).count == resumed.count)
        #expect(
            Set(resumed.map(recordKey)) == Set(complete.map(recordKey)).union(["a/\(firstExport)"]),
            "every record once, none lost, the torn line gone"
        )
        // Resuming a finished file does nothing.
        _ = try await chatctl(["export", "--learner", Fixture.learnerA1, "--out", partial, "--resume"])
        #expect(try records(partial).count == resumed.count)

        // A hold blocks erasure in a batch; the summary says so and the exit status is non-zero.
        _ = try await chatctl(["hold", "--learner", Fixture.learnerA1, "--reason", "case 12"])
        #expect(try await chatctl(["holds"]).contains("case 12"))
        let batch = "\(directory)/learners.txt"
        try "# erasure batch\n\(Fixture.learnerA1)\n\(Fixture.learnerA2)\n".write(
            toFile: batch,
            atomically: true,
            encoding: .utf8
        )
        let refused = try await chatctl(["erase", "--learners", batch, "--reason", "batch 1"], status: 1)
        #expect(refused.contains("legal hold") && refused.contains("1 of 2 learners erased"))
        _ = try await chatctl(["release", "--learner", Fixture.learnerA1, "--reason", "case 12 closed"])
        let erased = try await chatctl(["erase", "--learners", batch, "--reason", "batch 1"])
        #expect(
            erased.contains("2 of 2 learners erased") && erased.contains(" \(seeded.messages + bulkMessages) messages"),
            "\(erased)"
        )

        // Retention: policy, a sweep with its report, and every step in the audit trail.
        #expect(try await chatctl(["policy"]).contains("kept forever"))
        #expect(try await chatctl(["policy", "--set-days", "30"]).contains("older than 30 days"))
        #expect(try await chatctl(["sweep", "--batch-size", "10"]).contains("swept: 0 threads, 0 messages"))
        let audit = try await chatctl(["audit", "--json"]).split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        let kinds = audit.map { $0["kind"] as? String ?? "" }
        #expect(kinds.first == "retention_run" && kinds.contains("retention_policy_set"))
        // Two exports (the resumed one continues its audit record); erasures: A1 refused, A2, then A1 and A2.
        #expect(kinds.filter { $0 == "export" }.count == 2 && kinds.filter { $0 == "erasure" }.count == 4)
        #expect(try await chatctl(["audit", "--kind", "legal_hold_placed"]).contains("case 12"))
        _ = try await chatctl(["audit", "--kind", "nonsense"], status: 64)
        try await harness.stop()
    }
}
