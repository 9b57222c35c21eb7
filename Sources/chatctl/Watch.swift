import ArgumentParser
import ChatClient
import ChatProto
import ChatRPC
import Foundation

/// `chatctl watch ...`: live streams that print events as they arrive and resume by themselves after a lost
/// connection, a server shutdown or a stall, from the last position printed (nothing lost, nothing twice).
struct Watch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a thread's or the inbox's events as they arrive; resumes by itself after a reconnect.",
        subcommands: [WatchThreadCommand.self, WatchInboxCommand.self]
    )
}

/// What a watch prints, and when it stops.
struct WatchOptions: ParsableArguments {
    @Option(name: .customLong("max-events"), help: "Exit after this many message and thread events.")
    var maxEvents: Int?

    @Option(name: .customLong("max-reconnects"), help: "Give up after this many reconnections in a row.")
    var maxReconnects: Int = 100
}

/// Whether a stream that ended with `error` may be resumed: the server went away or ended the stream for a reason
/// that a new stream fixes. Credentials, scope and bad arguments are not retried.
func resumable(_ error: any Error) -> Bool {
    guard let error = error as? RPCError else { return true }  // connection lost, TLS, ...
    switch error.code {
    case .unavailable, .resourceExhausted, .cancelled, .deadlineExceeded, .aborted, .internal: return true
    default: return false
    }
}

/// Runs `open` until it returns false (done) or fails for good, reconnecting with backoff in between.
func resuming(
    _ options: WatchOptions,
    describe: () -> String,
    _ open: () async throws -> Bool
) async throws {
    var failures = 0
    while true {
        do {
            if try await open() { return }
            failures = 0
        } catch {
            guard resumable(error), failures < options.maxReconnects else { throw error }
            failures += 1
            let delay = min(5.0, 0.1 * pow(2, Double(min(failures, 6))))
            FileHandle.standardError.write(Data("stream ended (\(error)); resuming \(describe()) in \(delay)s\n".utf8))
            try await Task.sleep(for: .milliseconds(Int(delay * 1000)))
        }
    }
}

func print(_ event: WatchEvent, _ output: OutputOptions) -> Bool {
    var object: [String: Any]
    let line: String
    switch event.event {
    case .message(let message)?:
        let body = message.message ?? Message()
        object = json(body)
        object["event"] = "message.\(message.kind)"
        line = "[\(event.seq) \(message.kind)] \(human(body))"
    case .thread(let thread)?:
        let record = thread.thread ?? ChatProto.Thread()
        object = json(record)
        object["event"] = "thread.\(thread.kind)"
        line = "[\(event.seq) thread \(thread.kind)] \(human(record))"
    default:
        return false
    }
    object["position"] = event.seq
    if !event.cursor.isEmpty { object["cursor"] = event.cursor }
    output.print(object, human: line)
    return true
}

struct WatchThreadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "thread", abstract: "Watch one thread.")
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions
    @OptionGroup var watch: WatchOptions
    @Argument(help: "The thread id.") var thread: String
    @Option(name: .customLong("after-seq"), help: "Start after this event position (0: the whole thread).")
    var afterSeq: UInt64 = 0

    func run() async throws {
        var after = self.afterSeq
        var printed = 0
        try await self.connection.withClient { client in
            try await resuming(self.watch, describe: { "after position \(after)" }) {
                let request = WatchThreadRequest(threadId: self.thread, afterSeq: after)
                for try await response in try await client.watchThread(request, options: CallOptions()) {
                    guard let event = response.event, print(event, self.output) else { continue }
                    if event.seq > 0 { after = event.seq }
                    printed += 1
                    if let max = self.watch.maxEvents, printed >= max { return true }
                }
                return true  // the thread was deleted
            }
        }
    }
}

struct WatchInboxCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inbox",
        abstract: "Watch every thread in your scope (or one learner's)."
    )
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions
    @OptionGroup var watch: WatchOptions
    @Option(name: .customLong("learner"), help: "Only this learner's threads.") var learner: String = ""
    @Option(name: .customLong("cursor"), help: "Resume after this cursor (default: from now).") var cursor: String = ""

    func run() async throws {
        var cursor = self.cursor
        var printed = 0
        try await self.connection.withClient { client in
            try await resuming(self.watch, describe: { "from cursor \(cursor)" }) {
                let request = WatchInboxRequest(cursor: cursor, learnerId: self.learner)
                for try await response in try await client.watchInbox(request, options: CallOptions()) {
                    guard let event = response.event else { continue }
                    if !event.cursor.isEmpty { cursor = event.cursor }
                    guard print(event, self.output) else { continue }
                    printed += 1
                    if let max = self.watch.maxEvents, printed >= max { return true }
                }
                return false
            }
        }
    }
}
