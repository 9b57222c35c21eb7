import ArgumentParser
import ChatClient
import ChatProto
import ChatRPC
import Foundation

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
