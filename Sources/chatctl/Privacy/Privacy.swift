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
