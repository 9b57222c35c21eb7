import ArgumentParser
import ChatClient
import ChatProto
import ChatRPC
import Foundation

/// `chatctl privacy ...`: the batch side of GDPR - export, erasure, legal holds, retention and the audit trail.
struct Privacy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Export and erase learners' data, place and lift legal holds, run retention, read the audit trail.",
        subcommands: [
            ExportCommand.self, EraseCommand.self, HoldCommand.self, ReleaseCommand.self, HoldsCommand.self,
            PolicyCommand.self, SweepCommand.self, AuditCommand.self,
        ]
    )
}

/// One learner (`--learner`) or a file of them (`--learners`, one id per line; blank lines and `#` comments skipped).
struct LearnerSelection: ParsableArguments {
    @Option(name: .customLong("learner"), help: "The learner's id.")
    var learner: String?

    @Option(name: .customLong("learners"), help: "A file with one learner id per line: runs a batch.")
    var learnersFile: String?

    func learners() throws -> [String] {
        switch (self.learner, self.learnersFile) {
        case (let learner?, nil):
            return [learner]
        case (nil, let file?):
            guard let data = FileManager.default.contents(atPath: file) else {
                throw ValidationError("cannot read --learners \(file)")
            }
            let ids = String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline)
                .map { $0.trimmingCharacters(in: .whitespaces) }
                .filter { !$0.isEmpty && !$0.hasPrefix("#") }
            guard !ids.isEmpty else { throw ValidationError("--learners \(file) lists no learner") }
            return ids
        default:
            throw ValidationError("give exactly one of --learner and --learners")
        }
    }
}

/// Progress on standard error: a bar redrawn in place on a terminal, plain lines every few seconds otherwise (logs of
/// batch jobs).
final class ProgressReporter {
    private let terminal = isatty(STDERR_FILENO) == 1
    private var last = Date.distantPast
    private var drawn = false

    /// Shows `text`, with a bar when `fraction` is known.
    func update(_ text: String, fraction: Double? = nil) {
        let now = Date()
        guard now.timeIntervalSince(self.last) >= (self.terminal ? 0.1 : 5) else { return }
        self.last = now
        if self.terminal {
            var line = text
            if let fraction {
                let width = 30
                let filled = Int((min(1, max(0, fraction)) * Double(width)).rounded(.down))
                line =
                    "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
                    + "] \(Int(fraction * 100))%  " + text
            }
            FileHandle.standardError.write(Data("\r\u{1B}[K\(line)".utf8))
            self.drawn = true
        } else {
            FileHandle.standardError.write(Data("\(text)\n".utf8))
        }
    }

    /// Ends the progress display with a final line.
    func finish(_ text: String) {
        if self.terminal && self.drawn { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        self.drawn = false
        self.last = .distantPast
        FileHandle.standardError.write(Data("\(text)\n".utf8))
    }
}

// MARK: - export

/// `chatctl privacy export`: everything held about a learner as JSON lines, one record per line, each with the
/// resume token that continues after it. Resumes by itself when the connection drops; `--resume` continues a file
/// left by an interrupted run.
struct ExportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Export a learner's data (GDPR Art. 15/20) to JSON lines; --learners writes one file per learner."
    )

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var selection: LearnerSelection

    @Option(name: .customLong("out"), help: "The output file (with --learners: a directory, one <id>.jsonl each).")
    var out: String

    @Flag(name: .customLong("resume"), help: "Continue an interrupted export from the last record in the file.")
    var resume = false

    @Option(name: .customLong("reason"), help: "Case reference for the audit trail (at most 512 bytes).")
    var reason: String = ""

    func run() async throws {
        let learners = try self.selection.learners()
        let batch = self.selection.learnersFile != nil
        if batch { try FileManager.default.createDirectory(atPath: self.out, withIntermediateDirectories: true) }
        let progress = ProgressReporter()
        var done = 0
        var failed: [(String, String)] = []
        var records: UInt64 = 0
        try await self.connection.withClient { client in
            for (index, learner) in learners.enumerated() {
                let path = batch ? "\(self.out)/\(learner).jsonl" : self.out
                do {
                    let count = try await self.export(learner, to: path, client: client) { count in
                        progress.update(
                            batch
                                ? "learner \(index + 1)/\(learners.count) \(learner): \(count) records"
                                : "\(learner): \(count) records",
                            fraction: batch ? Double(index) / Double(learners.count) : nil
                        )
                    }
                    records += count
                    done += 1
                    progress.finish("exported \(learner): \(count) records to \(path)")
                } catch let error as ValidationError {
                    throw error
                } catch {
                    guard batch else { throw error }
                    failed.append((learner, "\(error)"))
                    progress.finish("FAILED \(learner): \(error)")
                }
            }
        }
        if batch {
            print("export: \(done) of \(learners.count) learners, \(records) records, \(failed.count) failed")
            for (learner, error) in failed { print("  failed \(learner): \(error)") }
            if !failed.isEmpty { throw ExitCode(1) }
        }
    }

    /// Exports one learner into `path`, resuming from the file when asked; returns the records written in all runs.
    func export(_ learner: String, to path: String, client: ChatClient, progress: (UInt64) -> Void) async throws
        -> UInt64
    {
        var token = ""
        if self.resume, FileManager.default.fileExists(atPath: path) {
            guard let last = try ExportFile.lastRecord(path) else {
                throw ValidationError("\(path) holds no complete record to resume from; delete it to start over")
            }
            if last.summary != nil { return last.summary ?? 0 }
            token = last.token
        } else if FileManager.default.fileExists(atPath: path) {
            throw ValidationError("\(path) exists: pass --resume to continue it, or choose another --out")
        } else {
            FileManager.default.createFile(atPath: path, contents: nil)
        }
        guard let handle = FileHandle(forWritingAtPath: path) else { throw ValidationError("cannot write \(path)") }
        defer { try? handle.close() }
        try handle.seekToEnd()
        var written: UInt64 = 0
        var total: UInt64 = 0
        var options = WatchOptions()
        options.maxReconnects = 20
        try await resuming(options, describe: { "the export of \(learner)" }) {
            let request = ExportLearnerDataRequest(
                learnerId: learner,
                resumeToken: token,
                reason: token.isEmpty ? self.reason : ""
            )
            var lines = Data()
            // What was received is written before a resume, so the file's last token is where the stream stopped.
            defer { try? handle.write(contentsOf: lines) }
            for try await response in try await client.exportLearnerData(request) {
                guard let record = response.record else { continue }
                lines.append(ExportFile.line(record))
                if case .summary(let summary)? = record.record {
                    total = summary.records
                } else {
                    token = record.resumeToken
                    written += 1
                }
                if lines.count >= 256 * 1024 || total > 0 {
                    try handle.write(contentsOf: lines)
                    lines.removeAll(keepingCapacity: true)
                    progress(written)
                }
            }
            try handle.write(contentsOf: lines)
            lines.removeAll()
            try handle.synchronize()
            return true
        }
        return total
    }
}

/// The JSON-lines form of an export: `{"type": ..., "resume_token": ..., "<type>": {...}}` per record.
enum ExportFile {
    static func line(_ record: ExportRecord) -> Data {
        var object: [String: Any] = ["resume_token": record.resumeToken]
        switch record.record {
        case .thread(let thread)?:
            object["type"] = "thread"
            object["thread"] = json(thread)
        case .message(let message)?:
            object["type"] = "message"
            object["message"] = json(message)
        case .edits(let history)?:
            object["type"] = "edit_history"
            object["edit_history"] =
                [
                    "thread_id": history.threadId, "seq": history.seq,
                    "revisions": history.edits.map {
                        [
                            "revision": $0.revision, "body": $0.body, "edited_by": describe($0.editedBy),
                            "edited_at_us": $0.editedAtUs,
                        ] as [String: Any]
                    },
                ] as [String: Any]
        case .readCursor(let cursor)?:
            object["type"] = "read_cursor"
            object["read_cursor"] =
                [
                    "user_id": cursor.userId, "thread_id": cursor.threadId, "read_seq": cursor.readSeq,
                    "updated_at_us": cursor.updatedAtUs,
                ] as [String: Any]
        case .audit(let audit)?:
            object["type"] = "audit"
            object["audit"] = json(audit)
        case .summary(let summary)?:
            object["type"] = "summary"
            object["summary"] = ["audit_id": summary.auditId, "records": summary.records] as [String: Any]
        case nil:
            object["type"] = "unknown"
        }
        var data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
        data.append(UInt8(ascii: "\n"))
        return data
    }

    /// The last complete line of an export file: its resume token, or the record count when it is the summary. A
    /// torn last line (the run was killed while writing it) is cut off, so that appending continues cleanly.
    static func lastRecord(_ path: String) throws -> (token: String, summary: UInt64?)? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        var end = data.count
        if let lastNewline = data.lastIndex(of: UInt8(ascii: "\n")), lastNewline + 1 < data.count {
            end = lastNewline + 1
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
            try handle.truncate(atOffset: UInt64(end))
            try handle.close()
        } else if data.lastIndex(of: UInt8(ascii: "\n")) == nil {
            return nil
        }
        let lines = data[..<end].split(separator: UInt8(ascii: "\n"))
        guard let last = lines.last,
            let object = try? JSONSerialization.jsonObject(with: Data(last)) as? [String: Any]
        else { return nil }
        if object["type"] as? String == "summary" {
            let summary = object["summary"] as? [String: Any]
            return ("", (summary?["records"] as? NSNumber)?.uint64Value ?? 0)
        }
        guard let token = object["resume_token"] as? String, !token.isEmpty else { return nil }
        return (token, nil)
    }
}

func json(_ audit: AuditRecord) -> [String: Any] {
    let removed = audit.removed ?? RemovalCounts()
    return [
        "id": audit.id, "kind": "\(audit.kind)", "actor": describe(audit.actor), "learner_id": audit.learnerId,
        "started_at_us": audit.startedAtUs, "finished_at_us": audit.finishedAtUs, "outcome": audit.outcome,
        "reason": audit.reason, "exported_records": audit.exportedRecords,
        "removed": [
            "threads": removed.threads, "messages": removed.messages, "message_edits": removed.messageEdits,
            "read_cursors": removed.readCursors, "outbox_payloads": removed.outboxPayloads,
        ],
    ]
}

func human(_ removed: RemovalCounts?) -> String {
    let removed = removed ?? RemovalCounts()
    return "\(removed.threads) threads, \(removed.messages) messages, \(removed.messageEdits) edits, "
        + "\(removed.readCursors) read cursors, \(removed.outboxPayloads) event payloads"
}

// MARK: - erase

/// `chatctl privacy erase`: erases learners (GDPR Art. 17) and prints each receipt; a batch ends with a summary and
/// exits non-zero when any learner was not erased (held or failed).
struct EraseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "erase",
        abstract: "Erase everything held about learners (GDPR Art. 17); prints the receipts."
    )

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions
    @OptionGroup var selection: LearnerSelection

    @Option(name: .customLong("reason"), help: "Case reference for the audit trail (at most 512 bytes).")
    var reason: String = ""

    func run() async throws {
        let learners = try self.selection.learners()
        let progress = ProgressReporter()
        var erased = 0
        var held: [(String, String)] = []
        var failed: [(String, String)] = []
        var total = RemovalCounts()
        try await self.connection.withClient { client in
            for (index, learner) in learners.enumerated() {
                progress.update(
                    "erasing \(index + 1)/\(learners.count)",
                    fraction: Double(index) / Double(learners.count)
                )
                do {
                    let receipt =
                        try await client.eraseLearnerData(
                            EraseLearnerDataRequest(learnerId: learner, reason: self.reason),
                            options: self.connection.callOptions
                        ).receipt ?? ErasureReceipt()
                    erased += 1
                    let removed = receipt.removed ?? RemovalCounts()
                    total.threads += removed.threads
                    total.messages += removed.messages
                    total.messageEdits += removed.messageEdits
                    total.readCursors += removed.readCursors
                    total.outboxPayloads += removed.outboxPayloads
                    progress.finish("")
                    self.output.print(
                        [
                            "learner_id": receipt.learnerId, "audit_id": receipt.auditId,
                            "completed_at_us": receipt.completedAtUs,
                            "removed": json(AuditRecord(removed: removed))["removed"] ?? [:],
                        ],
                        human: "erased \(learner): \(human(receipt.removed)) (audit \(receipt.auditId))"
                    )
                } catch let error as RPCError where error.code == .failedPrecondition {
                    held.append((learner, error.message))
                    progress.finish("NOT ERASED \(learner): \(error.message)")
                } catch let error as RPCError where learners.count > 1 && error.code != .unauthenticated {
                    failed.append((learner, "\(error.code): \(error.message)"))
                    progress.finish("FAILED \(learner): \(error.code): \(error.message)")
                }
            }
        }
        if learners.count > 1 {
            print(
                "erase: \(erased) of \(learners.count) learners erased (\(human(total))), "
                    + "\(held.count) under legal hold, \(failed.count) failed"
            )
        }
        if !held.isEmpty || !failed.isEmpty { throw ExitCode(1) }
    }
}

// MARK: - holds

struct HoldCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hold",
        abstract: "Place a legal hold on learners: erasure and retention skip them until it is released."
    )

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var selection: LearnerSelection

    @Option(name: .customLong("reason"), help: "Why (case reference), 1 to 512 bytes; required.")
    var reason: String

    func run() async throws {
        let learners = try self.selection.learners()
        try await self.connection.withClient { client in
            for learner in learners {
                let hold = try await client.placeLegalHold(
                    PlaceLegalHoldRequest(learnerId: learner, reason: self.reason),
                    options: self.connection.callOptions
                ).hold
                print("hold placed on \(learner) at \(time(hold?.placedAtUs ?? 0))")
            }
        }
    }
}

struct ReleaseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "release", abstract: "Lift learners' legal holds.")

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var selection: LearnerSelection

    @Option(name: .customLong("reason"), help: "Why, for the audit trail (at most 512 bytes).")
    var reason: String = ""

    func run() async throws {
        let learners = try self.selection.learners()
        try await self.connection.withClient { client in
            for learner in learners {
                _ = try await client.releaseLegalHold(
                    ReleaseLegalHoldRequest(learnerId: learner, reason: self.reason),
                    options: self.connection.callOptions
                )
                print("hold released on \(learner)")
            }
        }
    }
}

struct HoldsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "holds", abstract: "List the tenant's legal holds.")

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try await self.connection.withClient { client in
            var token = ""
            repeat {
                let page = try await client.listLegalHolds(
                    ListLegalHoldsRequest(page: PageRequest(pageSize: 200, pageToken: token)),
                    options: self.connection.callOptions
                )
                for hold in page.holds {
                    self.output.print(
                        [
                            "learner_id": hold.learnerId, "reason": hold.reason, "placed_by": describe(hold.placedBy),
                            "placed_at_us": hold.placedAtUs,
                        ],
                        human: "\(hold.learnerId)  since \(time(hold.placedAtUs))  by \(hold.placedBy?.userId ?? "?")  "
                            + "\"\(hold.reason)\""
                    )
                }
                token = page.page?.nextPageToken ?? ""
            } while !token.isEmpty
        }
    }
}

// MARK: - retention

struct PolicyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "Show the tenant's retention policy, or set it with --set-days (0: keep forever)."
    )

    @OptionGroup var connection: ConnectionOptions

    @Option(name: .customLong("set-days"), help: "Remove messages older than this many days (0 to 36500).")
    var days: UInt32?

    func run() async throws {
        try await self.connection.withClient { client in
            let policy: RetentionPolicy?
            if let days = self.days {
                policy = try await client.setRetentionPolicy(
                    SetRetentionPolicyRequest(messageRetentionDays: days),
                    options: self.connection.callOptions
                ).policy
            } else {
                policy = try await client.getRetentionPolicy(
                    GetRetentionPolicyRequest(),
                    options: self.connection.callOptions
                ).policy
            }
            let days = policy?.messageRetentionDays ?? 0
            print(
                days == 0
                    ? "messages are kept forever"
                    : "messages older than \(days) days are removed (set by \(policy?.updatedBy?.userId ?? "?") "
                        + "at \(time(policy?.updatedAtUs ?? 0)))"
            )
        }
    }
}

struct SweepCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sweep",
        abstract: "Run retention now for the tenant, in batches, with progress; the run is audited."
    )

    @OptionGroup var connection: ConnectionOptions

    @Option(name: .customLong("batch-size"), help: "Rows per batch (1 to 10000).")
    var batchSize: UInt32 = 1000

    func run() async throws {
        let progress = ProgressReporter()
        try await self.connection.withClient { client in
            var last: RunRetentionSweepResponse?
            for try await response in try await client.runRetentionSweep(
                RunRetentionSweepRequest(batchSize: self.batchSize)
            ) {
                last = response
                progress.update("sweeping: \(human(response.removed))")
            }
            guard let last, last.done else { throw ValidationError("the sweep ended without its final report") }
            progress.finish(
                "swept: \(human(last.removed)); \(last.skippedHeldLearners) learners under legal hold skipped "
                    + "(audit \(last.auditId))"
            )
        }
    }
}

// MARK: - audit

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
        help: "Only this kind: export, erasure, hold-placed, hold-released, retention-run, retention-policy."
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
        let kinds: [String: AuditKind] = [
            "export": .export, "erasure": .erasure, "hold-placed": .legalHoldPlaced,
            "hold-released": .legalHoldReleased, "retention-run": .retentionRun,
            "retention-policy": .retentionPolicySet,
        ]
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
                        human: "\(time(record.startedAtUs))  \(record.kind)  \(record.outcome)  "
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
            let head = "\(report.headSeq):\(hex(report.headHash))"
            var problems = report.problems.map { problem in
                "entry \(problem.seq == 0 ? "-" : String(problem.seq)), record \(problem.auditId): \(problem.description)"
            }
            if let anchor, hex(report.anchorHash) != anchor.hash {
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

/// Lowercase hex.
func hex(_ bytes: [UInt8]) -> String {
    bytes.map { String(format: "%02x", $0) }.joined()
}
