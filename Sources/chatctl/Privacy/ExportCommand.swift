import ArgumentParser
import ChatClient
import ChatProto
import ChatRPC
import Foundation

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
        } else if !FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600]) {
            throw ValidationError("cannot create \(path)")
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
