import ArgumentParser
import ChatClient
import ChatProto
import ChatRPC
import Foundation

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
