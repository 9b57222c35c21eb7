import ChatClient
import ChatDomain
import ChatProto
import ChatRPC
import ChatServices
import ChatTLS
import ChatWire
import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// The certificates scripts/test made (scripts/lib/tls.sh).
enum TestCertificates {
    struct Missing: Error, CustomStringConvertible {
        var description: String { "CHAT_TEST_TLS_DIR is not set: run the tests through scripts/test" }
    }

    static func path(_ name: String) throws -> String {
        guard let dir = ProcessInfo.processInfo.environment["CHAT_TEST_TLS_DIR"] else { throw Missing() }
        return "\(dir)/\(name)"
    }

    static func server() throws -> TLSContext {
        try TLSContext(
            configuration: .server(certificate: try Self.path("server.pem"), privateKey: try Self.path("server.key"))
        )
    }

    static func client(certificate: String? = nil) throws -> TLSContext {
        try TLSContext(
            configuration: .client(
                trustRoots: try Self.path("ca.pem"),
                certificate: try certificate.map { try Self.path("\($0).pem") },
                privateKey: try certificate.map { try Self.path("\($0).key") }
            )
        )
    }

    static func server(clientCA: Bool) throws -> TLSContext {
        try TLSContext(
            configuration: .server(
                certificate: try Self.path("server.pem"),
                privateKey: try Self.path("server.key"),
                clientCA: clientCA ? try Self.path("ca.pem") : nil
            )
        )
    }
}

/// What the test handlers saw, for the tests to check.
final class Probe: Sendable {
    struct State {
        var streamed = 0
        var cancelled: Set<String> = []
        var started: Set<String> = []
    }

    let state = Mutex(State())

    func started(_ name: String) { self.state.withLock { _ = $0.started.insert(name) } }
    func cancelled(_ name: String) { self.state.withLock { _ = $0.cancelled.insert(name) } }
    func didCancel(_ name: String) -> Bool { self.state.withLock { $0.cancelled.contains(name) } }
    func didStart(_ name: String) -> Bool { self.state.withLock { $0.started.contains(name) } }
    var streamed: Int { self.state.withLock { $0.streamed } }
    func streamedOne() { self.state.withLock { $0.streamed += 1 } }
}

/// Methods that exist only in the tests, built from the contract's messages.
enum TestMethods {
    static let echo = ChatMethod<Message, Message>(path: "/test.Test/Echo", kind: .unary)
    /// Sleeps `afterSeq` milliseconds; records its start and its cancellation under the request's thread id.
    static let sleep = ChatMethod<WatchThreadRequest, Message>(path: "/test.Test/Sleep", kind: .unary)
    /// Streams `afterSeq` messages of 100 bytes.
    static let stream = ChatMethod<WatchThreadRequest, Message>(path: "/test.Test/Stream", kind: .serverStreaming)
    /// Streams until cancelled; records the cancellation under the request's thread id.
    static let forever = ChatMethod<WatchThreadRequest, Message>(path: "/test.Test/Forever", kind: .serverStreaming)
    /// Throws an error whose text must not reach the caller.
    static let fail = ChatMethod<Message, Message>(path: "/test.Test/Fail", kind: .unary)
    /// Answers with the principal an interceptor attached.
    static let whoAmI = ChatMethod<Message, Message>(path: "/test.Test/WhoAmI", kind: .unary)
}

struct SecretFailure: Error {
    let secret = "password=hunter2 SELECT * FROM chat.messages"
}

/// A chatd RPC server on 127.0.0.1 with the health service, the method listing and the test methods.
final class TestServer: Sendable {
    let server: ChatServer
    let port: Int
    let group: MultiThreadedEventLoopGroup
    let probe = Probe()
    let health: HealthService

    init(
        port: Int = 0,
        interceptors: [any ServerInterceptor] = [],
        routes: (inout Router) -> Void = { _ in },
        configure: (inout ChatServer.Configuration) -> Void = { _ in }
    ) async throws {
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let probe = self.probe
        let health = HealthService(services: ["chat.v1.HealthService", "chat.v1.MessageService"])
        self.health = health
        var router = Router()
        health.register(in: &router)
        router.register(TestMethods.echo) { request, _ in request }
        router.register(TestMethods.sleep) { request, _ in
            probe.started(request.threadId)
            do {
                try await Task.sleep(for: .milliseconds(Int(request.afterSeq)))
            } catch {
                probe.cancelled(request.threadId)
                throw error
            }
            return Message(body: "slept")
        }
        router.register(TestMethods.stream) { request, _, writer in
            let body = String(repeating: "x", count: 100)
            for seq in 1...max(1, request.afterSeq) {
                try await writer.write(Message(seq: seq, body: body))
                probe.streamedOne()
            }
        }
        router.register(TestMethods.forever) { request, _, writer in
            probe.started(request.threadId)
            do {
                var seq: UInt64 = 0
                while true {
                    seq += 1
                    try await writer.write(Message(seq: seq, body: "tick"))
                    try await Task.sleep(for: .milliseconds(1))
                }
            } catch {
                probe.cancelled(request.threadId)
                throw error
            }
        }
        router.register(TestMethods.fail) { _, _ in throw SecretFailure() }
        router.register(TestMethods.whoAmI) { _, context in
            Message(body: context.principal?.userID ?? "nobody")
        }
        routes(&router)
        MethodListService.register(in: &router, serverVersion: "test")
        var configuration = ChatServer.Configuration(host: "127.0.0.1", port: port, tls: try TestCertificates.server())
        // Raw peers in the hostile tests never acknowledge the drain PING: do not wait 30 s for them.
        configuration.drainGrace = .seconds(2)
        configure(&configuration)
        self.server = ChatServer(
            configuration: configuration,
            router: router,
            interceptors: interceptors,
            group: self.group,
            logger: Logger(label: "test-server")
        )
        self.port = try await self.server.start()
    }

    func makeClient() throws -> ChatClient {
        ChatClient(host: "127.0.0.1", port: self.port, tls: try TestCertificates.client(), group: self.group)
    }

    func stop() async throws {
        await self.server.drain()
        try await self.group.shutdownGracefully()
    }
}
