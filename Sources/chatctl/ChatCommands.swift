import ArgumentParser
import ChatClient
import ChatDomain
import ChatProto
import ChatRPC
import Foundation

/// Output as a person reads it, or as JSON (one object per line) with `--json`.
struct OutputOptions: ParsableArguments {
    @Flag(name: .customLong("json"), help: "Print JSON, one object per line.")
    var json = false

    func print(_ object: [String: Any], human: String) {
        if self.json {
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
            Swift.print(String(decoding: data, as: UTF8.self))
        } else {
            Swift.print(human)
        }
    }
}

func describe(_ actor: Actor?) -> [String: Any] {
    ["user_id": actor?.userId ?? "", "role": (actor?.role ?? .unspecified).claimName]
}

func time(_ micros: Int64) -> String {
    guard micros > 0 else { return "-" }
    let date = Date(timeIntervalSince1970: Double(micros) / 1_000_000)
    return ISO8601DateFormatter().string(from: date)
}

func json(_ thread: ChatProto.Thread) -> [String: Any] {
    [
        "id": thread.id, "learner_id": thread.learnerId, "title": thread.title, "state": "\(thread.state)",
        "last_seq": thread.lastSeq, "unread_count": thread.unreadCount, "created_at_us": thread.createdAtUs,
        "last_activity_at_us": thread.lastActivityAtUs, "created_by": describe(thread.createdBy),
    ]
}

func human(_ thread: ChatProto.Thread) -> String {
    "\(thread.id)  \(thread.state)  \(thread.lastSeq) messages, \(thread.unreadCount) unread  "
        + "learner \(thread.learnerId)  \"\(thread.title)\"  (last activity \(time(thread.lastActivityAtUs)))"
}

func json(_ message: Message) -> [String: Any] {
    var object: [String: Any] = [
        "id": message.id, "thread_id": message.threadId, "seq": message.seq, "author": describe(message.author),
        "body": message.body, "created_at_us": message.createdAtUs, "edit_count": message.editCount,
        "edited_at_us": message.editedAtUs,
    ]
    if let deleted = message.deleted {
        object["deleted"] = ["by": describe(deleted.deletedBy), "at_us": deleted.deletedAtUs]
    }
    return object
}

func human(_ message: Message) -> String {
    let who = "\(message.author?.userId ?? "?") (\(message.author?.role ?? .unspecified))"
    if let deleted = message.deleted {
        return "#\(message.seq)  \(time(message.createdAtUs))  \(who): [deleted by \(deleted.deletedBy?.userId ?? "?")]"
    }
    let edited = message.editCount > 0 ? "  (edited \(message.editCount)x)" : ""
    return "#\(message.seq)  \(time(message.createdAtUs))  \(who): \(message.body)\(edited)"
}

/// `chatctl threads ...`
struct Threads: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create, list, read, update and delete threads.",
        subcommands: [Create.self, List.self, Get.self, Update.self, Delete.self]
    )

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a thread about a learner.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @Option(name: .customLong("learner"), help: "The learner (UUID).") var learner: String
        @Option(name: .customLong("title"), help: "1 to 200 characters.") var title: String

        func run() async throws {
            let thread = try await self.connection.withClient { client in
                try await client.createThread(
                    CreateThreadRequest(learnerId: self.learner, title: self.title),
                    options: self.connection.callOptions
                ).thread!
            }
            self.output.print(json(thread), human: human(thread))
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List threads, newest activity first.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @Option(name: .customLong("learner"), help: "Only this learner's threads.") var learner: String = ""
        @Option(name: .customLong("state"), help: "active or archived.") var state: String?
        @Option(name: .customLong("page-size"), help: "Threads per page (1 to 200).") var pageSize: UInt32 = 50
        @Flag(name: .customLong("all"), help: "Follow page tokens to the end.") var all = false

        func run() async throws {
            let state: ThreadState =
                switch self.state {
                case nil: .unspecified
                case "active": .active
                case "archived": .archived
                default: throw ValidationError("--state is active or archived")
                }
            try await self.connection.withClient { client in
                var token = ""
                repeat {
                    let page = try await client.listThreads(
                        ListThreadsRequest(
                            page: PageRequest(pageSize: self.pageSize, pageToken: token),
                            learnerId: self.learner,
                            state: state
                        ),
                        options: self.connection.callOptions
                    )
                    for thread in page.threads { self.output.print(json(thread), human: human(thread)) }
                    token = page.page?.nextPageToken ?? ""
                    if !token.isEmpty && !self.all && !self.output.json {
                        print("(more: --all)")
                    }
                } while self.all && !token.isEmpty
            }
        }
    }

    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one thread.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @Argument(help: "The thread id.") var thread: String

        func run() async throws {
            let thread = try await self.connection.withClient { client in
                try await client.getThread(
                    GetThreadRequest(threadId: self.thread),
                    options: self.connection.callOptions
                )
                .thread!
            }
            self.output.print(json(thread), human: human(thread))
        }
    }

    struct Update: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Rename, archive or reactivate a thread.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @Argument(help: "The thread id.") var thread: String
        @Option(name: .customLong("title"), help: "A new title.") var title: String?
        @Flag(name: .customLong("archive")) var archive = false
        @Flag(name: .customLong("activate")) var activate = false

        func run() async throws {
            var request = UpdateThreadRequest(threadId: self.thread)
            if let title = self.title { request.titleUpdate = .title(title) }
            if self.archive { request.stateUpdate = .state(.archived) }
            if self.activate { request.stateUpdate = .state(.active) }
            let thread = try await self.connection.withClient { client in
                try await client.updateThread(request, options: self.connection.callOptions).thread!
            }
            self.output.print(json(thread), human: human(thread))
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a thread and its messages.")
        @OptionGroup var connection: ConnectionOptions
        @Argument(help: "The thread id.") var thread: String

        func run() async throws {
            _ = try await self.connection.withClient { client in
                try await client.deleteThread(
                    DeleteThreadRequest(threadId: self.thread),
                    options: self.connection.callOptions
                )
            }
            print("deleted \(self.thread)")
        }
    }
}

/// `chatctl messages ...`
struct Messages: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send, list, edit, delete and read messages.",
        subcommands: [Send.self, List.self, Edit.self, Delete.self, Read.self, History.self]
    )

    struct Send: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Send a message (safe to retry with --key).")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @Argument(help: "The thread id.") var thread: String
        @Option(name: .customLong("body"), help: "1 to 4096 bytes.") var body: String
        @Option(name: .customLong("idempotency-key"), help: "Makes a retry safe (default: a new UUID).") var key:
            String?

        func run() async throws {
            let message = try await self.connection.withClient { client in
                try await client.sendMessage(
                    SendMessageRequest(
                        threadId: self.thread,
                        body: self.body,
                        idempotencyKey: self.key ?? UUID().uuidString
                    ),
                    options: self.connection.callOptions
                ).message!
            }
            self.output.print(json(message), human: human(message))
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List messages (newest first by default).")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @Argument(help: "The thread id.") var thread: String
        @Option(name: .customLong("after"), help: "Oldest first, after this sequence.") var after: UInt64?
        @Option(name: .customLong("before"), help: "Newest first, before this sequence.") var before: UInt64?
        @Option(name: .customLong("page-size"), help: "Messages per page (1 to 200).") var pageSize: UInt32 = 50
        @Flag(name: .customLong("all"), help: "Follow page tokens to the end.") var all = false

        func run() async throws {
            var request = ListMessagesRequest(threadId: self.thread, page: PageRequest(pageSize: self.pageSize))
            if let after = self.after { request.bound = .afterSeq(after) }
            if let before = self.before { request.bound = .beforeSeq(before) }
            try await self.connection.withClient { client in
                var token = ""
                repeat {
                    request.page?.pageToken = token
                    let page = try await client.listMessages(request, options: self.connection.callOptions)
                    for message in page.messages { self.output.print(json(message), human: human(message)) }
                    token = page.page?.nextPageToken ?? ""
                } while self.all && !token.isEmpty
            }
        }
    }

    struct Edit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Edit your message (the history is kept).")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @Argument(help: "The thread id.") var thread: String
        @Argument(help: "The message's sequence number.") var seq: UInt64
        @Option(name: .customLong("body"), help: "The new text.") var body: String

        func run() async throws {
            let message = try await self.connection.withClient { client in
                try await client.editMessage(
                    EditMessageRequest(threadId: self.thread, seq: self.seq, body: self.body),
                    options: self.connection.callOptions
                ).message!
            }
            self.output.print(json(message), human: human(message))
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a message (a tombstone stays).")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @Argument(help: "The thread id.") var thread: String
        @Argument(help: "The message's sequence number.") var seq: UInt64

        func run() async throws {
            let message = try await self.connection.withClient { client in
                try await client.deleteMessage(
                    DeleteMessageRequest(threadId: self.thread, seq: self.seq),
                    options: self.connection.callOptions
                ).message!
            }
            self.output.print(json(message), human: human(message))
        }
    }

    struct Read: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Mark messages read up to a sequence.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @Argument(help: "The thread id.") var thread: String
        @Option(name: .customLong("up-to"), help: "The sequence read up to.") var upTo: UInt64

        func run() async throws {
            let result = try await self.connection.withClient { client in
                try await client.markRead(
                    MarkReadRequest(threadId: self.thread, upToSeq: self.upTo),
                    options: self.connection.callOptions
                )
            }
            self.output.print(
                ["read_seq": result.readSeq, "unread_count": result.unreadCount],
                human: "read up to #\(result.readSeq), \(result.unreadCount) unread"
            )
        }
    }

    struct History: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a message's edit history (moderators).")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @Argument(help: "The thread id.") var thread: String
        @Argument(help: "The message's sequence number.") var seq: UInt64

        func run() async throws {
            let edits = try await self.connection.withClient { client in
                try await client.listMessageEdits(
                    ListMessageEditsRequest(threadId: self.thread, seq: self.seq),
                    options: self.connection.callOptions
                ).edits
            }
            for edit in edits {
                self.output.print(
                    [
                        "revision": edit.revision, "body": edit.body, "edited_by": describe(edit.editedBy),
                        "edited_at_us": edit.editedAtUs,
                    ],
                    human: "r\(edit.revision)  \(time(edit.editedAtUs))  \(edit.editedBy?.userId ?? "?"): \(edit.body)"
                )
            }
        }
    }
}
