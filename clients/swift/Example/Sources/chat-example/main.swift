// chat-example: what a service that depends on ChatClient does. It connects to one or more chatd instances, checks
// health, creates a thread for a learner, watches it with a stream that resumes by itself, sends messages, and
// prints the events it sees.
//
//   chat-example --address HOST:PORT[,HOST:PORT...] --ca CA.pem --learner LEARNER_ID [--messages N]
//
// The token (a JWT) comes from CHAT_TOKEN.
import ChatClient
import ChatProto
import ChatRPCCore
import ChatTLS
import Foundation

struct Usage: Error, CustomStringConvertible {
    var description: String {
        "usage: chat-example --address HOST:PORT[,HOST:PORT...] --ca CA.pem --learner ID [--messages N]"
    }
}

func option(_ name: String, in arguments: [String]) -> String? {
    guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count else { return nil }
    return arguments[index + 1]
}

let arguments = Array(CommandLine.arguments.dropFirst())
guard let addresses = option("--address", in: arguments), let ca = option("--ca", in: arguments),
    let learner = option("--learner", in: arguments), let token = ProcessInfo.processInfo.environment["CHAT_TOKEN"]
else {
    print(Usage())
    exit(2)
}
let count = Int(option("--messages", in: arguments) ?? "3") ?? 3
let endpoints = addresses.split(separator: ",").compactMap { Endpoint(String($0)) }
guard !endpoints.isEmpty else {
    print(Usage())
    exit(2)
}

do {
    let client = ChatClient(
        endpoints: endpoints,
        tls: try TLSContext(configuration: .client(trustRoots: ca)),
        authorization: "Bearer \(token)"
    )
    let health = try await client.healthCheck(HealthCheckRequest())
    print("health: \(health.status)")
    let created = try await client.createThread(CreateThreadRequest(learnerId: learner, title: "chat-example"))
    guard let thread = created.thread?.id else { throw RPCError(.internal, "no thread in the response") }
    print("thread: \(thread)")

    // Watch first, so that every message sent below is seen live.
    var events = client.watchThreadResuming(WatchThreadRequest(threadId: thread)).makeAsyncIterator()
    guard case .head(let head)? = try await events.next()?.event?.event else {
        throw RPCError(.internal, "the stream did not start with its head")
    }
    print("watching from \(head.headSeq)")
    for index in 1...count {
        let sent = try await client.sendMessage(
            SendMessageRequest(threadId: thread, body: "message \(index)"),
            options: CallOptions(timeout: .seconds(10))
        )
        print("sent seq \(sent.message?.seq ?? 0)")
    }
    var seen = 0
    while seen < count, let response = try await events.next() {
        if case .message(let event)? = response.event?.event, let message = event.message {
            print("event seq \(message.seq): \(message.body)")
            seen += 1
        }
    }
    // What the server says about bad input: a status with a field violation.
    do {
        _ = try await client.sendMessage(SendMessageRequest(threadId: thread, body: ""))
    } catch let error as RPCError {
        let fields = error.details.compactMap { detail -> String? in
            if case .fieldViolation(let violation)? = detail.detail { return violation.field }
            return nil
        }
        print("refused: \(error.code) \(fields.joined(separator: ","))")
    }
    await client.close()
    print("done: \(seen) events, \(client.connections) connection(s)")
} catch {
    print("chat-example: \(error)")
    exit(1)
}
