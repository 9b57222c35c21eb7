import ArgumentParser
import ChatClient
import ChatProto
import ChatRPC
import Foundation

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
