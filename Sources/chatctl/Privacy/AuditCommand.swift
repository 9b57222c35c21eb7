import ArgumentParser
import ChatClient
import ChatDomain
import ChatProto
import ChatRPC
import Foundation

struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "List the tenant's audit trail, newest first; or verify it (--verify).",
        discussion: """
            --verify checks the tenant's audit chain in chatd's database: every record and every change of one is an
            entry that commits to the one before it, so an edited, deleted or reordered record or entry is found. It
            prints the chain's head (SEQ:HASH); keep it outside chatd and pass it back with --expect-head: a trail
            rewritten from scratch no longer holds that entry. Exits 1 when anything is wrong.
            """
    )

    @Flag(name: .customLong("verify"), help: "Verify the audit chain instead of listing records.")
    var verify = false

    @Option(
        name: .customLong("expect-head"),
        help: "With --verify: a head printed earlier (SEQ:HASH) that must still be in the chain."
    )
    var expectHead: String?

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions

    @Option(name: .customLong("learner"), help: "Only records about this learner.")
    var learner: String = ""

    @Option(
        name: .customLong("kind"),
        help: ArgumentHelp("Only this kind: \(auditKindNames.keys.sorted().joined(separator: ", ")).")
    )
    var kind: String?

    @Option(name: .customLong("since"), help: "From this time on (ISO 8601, e.g. 2026-11-01T00:00:00Z).")
    var since: String?

    @Option(name: .customLong("until"), help: "Before this time (ISO 8601).")
    var until: String?

    @Option(name: .customLong("limit"), help: "At most this many records.")
    var limit: Int = 1000

    func run() async throws {
        if self.verify {
            try await self.verifyChain()
            return
        }
        let kinds = auditKindNames
        var request = ListAuditRecordsRequest(learnerId: self.learner)
        if let kind = self.kind {
            guard let value = kinds[kind] else {
                throw ValidationError("--kind is one of \(kinds.keys.sorted().joined(separator: ", "))")
            }
            request.kind = value
        }
        request.fromUs = try Self.micros(self.since, "--since")
        request.toUs = try Self.micros(self.until, "--until")
        try await self.connection.withClient { client in
            var printed = 0
            var token = ""
            repeat {
                request.page = PageRequest(pageSize: UInt32(min(200, self.limit - printed)), pageToken: token)
                let page = try await client.listAuditRecords(request, options: self.connection.callOptions)
                for record in page.records {
                    let detail =
                        record.kind == .export
                        ? "\(record.exportedRecords) records exported" : human(record.removed)
                    self.output.print(
                        json(record),
                        human: "\(time(record.startedAtUs))  \(text(record.kind))  \(record.outcome)  "
                            + "by \(record.actor?.userId ?? "?")  learner \(record.learnerId.isEmpty ? "-" : record.learnerId)  "
                            + "\(detail)  \(record.reason.isEmpty ? "" : "\"\(record.reason)\"")"
                    )
                    printed += 1
                }
                token = page.page?.nextPageToken ?? ""
            } while !token.isEmpty && printed < self.limit
        }
    }

    func verifyChain() async throws {
        var anchor: (seq: UInt64, hash: String)?
        if let expected = self.expectHead {
            let parts = expected.split(separator: ":")
            guard parts.count == 2, let seq = UInt64(parts[0]), seq > 0, parts[1].count == 64 else {
                throw ValidationError("--expect-head is SEQ:HASH as --verify printed it, e.g. 42:9f86d0...")
            }
            anchor = (seq, parts[1].lowercased())
        }
        try await self.connection.withClient { client in
            let report = try await client.verifyAuditTrail(
                VerifyAuditTrailRequest(anchorSeq: anchor?.seq ?? 0),
                options: self.connection.callOptions
            )
            let head = "\(report.headSeq):\(Hex.encode(report.headHash))"
            var problems = report.problems.map { problem in
                "entry \(problem.seq == 0 ? "-" : String(problem.seq)), record \(problem.auditId): \(problem.description)"
            }
            if let anchor, Hex.encode(report.anchorHash) != anchor.hash {
                problems.append(
                    "entry \(anchor.seq) is not the one recorded earlier (\(anchor.seq):\(anchor.hash)): the trail was "
                        + (report.anchorHash.isEmpty ? "cut" : "rewritten")
                )
            }
            for problem in problems {
                self.output.print(["problem": problem], human: "PROBLEM  \(problem)")
            }
            let intact = problems.isEmpty
            self.output.print(
                ["intact": intact, "entries": report.entries, "head": head],
                human: intact
                    ? "audit trail intact: \(report.entries) entries, head \(head)"
                    : "audit trail NOT intact: \(problems.count) problems in \(report.entries) entries, head \(head)"
            )
            if !intact { throw ExitCode(1) }
        }
    }

    static func micros(_ text: String?, _ option: String) throws -> Int64 {
        guard let text else { return 0 }
        guard let date = ISO8601DateFormatter().date(from: text) else {
            throw ValidationError("\(option) must be an ISO 8601 time such as 2026-11-01T00:00:00Z")
        }
        return Int64(date.timeIntervalSince1970 * 1_000_000)
    }
}
