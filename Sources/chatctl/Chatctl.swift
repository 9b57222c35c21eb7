import ArgumentParser
import ChatClient
import ChatProto
import ChatRPC
import ChatTLS
import Foundation
import NIOCore
import NIOPosix

/// The operator and batch CLI of chatd.
@main
struct Chatctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chatctl",
        abstract: "Talk to a chatd server.",
        subcommands: [
            Threads.self, Messages.self, Watch.self, Privacy.self, Health.self, Methods.self, Token.self,
        ]
    )
}

/// How to reach the server.
struct ConnectionOptions: ParsableArguments {
    @Option(name: .customLong("address"), help: "The server, host:port (env CHATCTL_ADDRESS).")
    var address: String = ProcessInfo.processInfo.environment["CHATCTL_ADDRESS"] ?? "127.0.0.1:7443"

    @Option(name: .customLong("ca"), help: "PEM CA to verify the server with (env CHATCTL_CA).")
    var ca: String?

    @Option(name: .customLong("certificate"), help: "PEM client certificate, for mTLS.")
    var certificate: String?

    @Option(name: .customLong("key"), help: "PEM key of the client certificate.")
    var key: String?

    @Option(name: .customLong("token"), help: "Bearer token (env CHATCTL_TOKEN).")
    var token: String?

    @Option(name: .customLong("timeout"), help: "Seconds each call may take.")
    var timeout: Double = 10

    /// Runs `body` with a connected client, and closes it.
    func withClient<T>(_ body: (ChatClient) async throws -> T) async throws -> T {
        guard let colon = self.address.lastIndex(of: ":"),
            let port = Int(self.address[self.address.index(after: colon)...])
        else {
            throw ValidationError("--address must be host:port, not \(self.address)")
        }
        guard let ca = self.ca ?? ProcessInfo.processInfo.environment["CHATCTL_CA"] else {
            throw ValidationError("--ca is required (or set CHATCTL_CA)")
        }
        let token = self.token ?? ProcessInfo.processInfo.environment["CHATCTL_TOKEN"]
        let tls = try TLSContext(
            configuration: .client(trustRoots: ca, certificate: self.certificate, privateKey: self.key)
        )
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let client = ChatClient(
            host: String(self.address[..<colon]),
            port: port,
            tls: tls,
            authorization: token.map { "Bearer \($0)" },
            group: group
        )
        do {
            let result = try await body(client)
            await client.close()
            try await group.shutdownGracefully()
            return result
        } catch {
            await client.close()
            try await group.shutdownGracefully()
            throw error
        }
    }

    var callOptions: CallOptions {
        CallOptions(timeout: .milliseconds(Int(self.timeout * 1000)))
    }
}

/// `chatctl health`: the serving status of the server or of one service.
struct Health: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check (or --watch) the server's health.")

    @OptionGroup var connection: ConnectionOptions

    @Option(name: .customLong("service"), help: "A service, e.g. chat.v1.MessageService; empty for the server.")
    var service: String = ""

    @Flag(name: .customLong("watch"), help: "Print every change until interrupted.")
    var watch = false

    func run() async throws {
        let request = HealthCheckRequest(service: self.service)
        let name = self.service.isEmpty ? "server" : self.service
        let status = try await self.connection.withClient { client -> ServingStatus in
            if self.watch {
                var last = ServingStatus.unknown
                for try await update in try await client.healthWatch(request) {
                    print("\(name): \(Self.describe(update.status))")
                    last = update.status
                }
                return last
            }
            return try await client.healthCheck(request, options: self.connection.callOptions).status
        }
        if !self.watch { print("\(name): \(Self.describe(status))") }
        if status != .serving { throw ExitCode(2) }
    }

    static func describe(_ status: ServingStatus) -> String {
        switch status {
        case .serving: "SERVING"
        case .notServing: "NOT_SERVING"
        case .serviceUnknown: "SERVICE_UNKNOWN"
        case .unknown: "UNKNOWN"
        case .unrecognized(let value): "UNRECOGNIZED(\(value))"
        }
    }
}

/// `chatctl methods`: what the server serves.
struct Methods: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the methods the server serves.")

    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        let listing = try await self.connection.withClient { client in
            try await client.listMethods(ListMethodsRequest(), options: self.connection.callOptions)
        }
        print("server \(listing.serverVersion), protocol \(listing.protocolVersion)")
        for method in listing.methods {
            let kind = method.kind == .serverStreaming ? "stream" : "unary "
            print("\(kind) \(method.name)  \(method.requestType) -> \(method.responseType)")
        }
    }
}
