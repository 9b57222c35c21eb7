import ChatClient
import ChatProto
import ChatTLS
import ChatTestSupport
import ChatWire
import Foundation
import NIOCore
import NIOPosix
import Testing

/// The real `chatd` executable (next to the test bundle), started as a process on the test database.
final class ChatdProcess: Sendable {
    let pid: pid_t
    let port: Int
    let log: String

    /// The chatd binary next to the test bundle.
    static let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        .appendingPathComponent("chatd").path

    init(database: MigratedDatabase, directory: String, arguments: [String] = []) throws {
        let tls = ProcessInfo.processInfo.environment["CHAT_TEST_TLS_DIR"] ?? ""
        let key = "\(directory)/signing.pem"
        #expect(
            try runProgramBlocking("/usr/bin/openssl", ["genpkey", "-algorithm", "ed25519", "-out", key]).status == 0
        )
        let jwks = try runProgramBlocking(CLITests.chatctl, ["token", "jwks", "--key", key, "--kid", "p"])
        try jwks.output.write(toFile: "\(directory)/jwks.json", atomically: true, encoding: .utf8)
        try "1 \(Data(repeating: 7, count: 32).base64EncodedString())\n".write(
            toFile: "\(directory)/seal.keys",
            atomically: true,
            encoding: .utf8
        )
        self.port = try Self.freePort()
        self.log = "\(directory)/chatd.log"
        let argv =
            [
                Self.binary, "--database-url", database.app, "--listen", "127.0.0.1:\(self.port)",
                "--tls-certificate", "\(tls)/server.pem", "--tls-key", "\(tls)/server.key",
                "--auth-jwks", "\(directory)/jwks.json", "--auth-issuer", "test", "--retention-interval", "0",
                "--token-seal-keys", "\(directory)/seal.keys",
                "--log-level", "warning",
            ] + arguments
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, self.log, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var cArguments: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { cArguments.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, Self.binary, &actions, nil, &cArguments, environ)
        guard spawned == 0 else { throw POSIXError(POSIXErrorCode(rawValue: spawned) ?? .EINVAL) }
        self.pid = pid
    }

    /// A port nobody listens on now.
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard bound else { throw POSIXError(.EADDRINUSE) }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Waits for the process to exit; its exit status.
    func wait() async throws -> Int32 {
        let pid = self.pid
        return try await offPool {
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 {
                guard errno == EINTR else { throw POSIXError(.ECHILD) }
            }
            return (status & 0x7F) == 0 ? (status >> 8) & 0xFF : -1
        }
    }
}

/// Succeeds its promise when the TLS handshake is done; drops whatever arrives.
final class HandshakeWatcher: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    let done: EventLoopPromise<Void>
    init(done: EventLoopPromise<Void>) { self.done = done }
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is TLSEvent { self.done.succeed() }
    }
    func channelInactive(context: ChannelHandlerContext) {
        struct Closed: Error {}
        self.done.fail(Closed())
    }
}

@Suite("The chatd executable")
struct ChatdProcessTests {
    @Test("serves over TLS; on SIGTERM with idle connections (one never answers PING) exits within 2 s")
    func sigtermWithIdleConnection() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("chatd-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let database = try await TestDatabase.makeMigrated()
        let chatd = try ChatdProcess(database: database, directory: directory, arguments: ["--drain-grace", "30"])
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let tls = ProcessInfo.processInfo.environment["CHAT_TEST_TLS_DIR"] ?? ""
        let client = ChatClient(
            host: "127.0.0.1",
            port: chatd.port,
            tls: try TLSContext(configuration: .client(trustRoots: "\(tls)/ca.pem")),
            group: group
        )
        var serving = false
        let deadline = ContinuousClock.now + .seconds(30)
        while !serving, ContinuousClock.now < deadline {
            serving = (try? await client.healthCheck(HealthCheckRequest()).status) == .serving
            if !serving { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(serving, "chatd did not come up: \((try? String(contentsOfFile: chatd.log, encoding: .utf8)) ?? "")")
        // A second idle connection that never answers PING (the drain's PING included): it must not hold shutdown.
        let clientTLS = try TLSContext(configuration: .client(trustRoots: "\(tls)/ca.pem"))
        let handshake = group.next().makePromise(of: Void.self)
        let silent = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        TLSHandler(context: clientTLS, serverName: "127.0.0.1")
                    )
                    try channel.pipeline.syncOperations.addHandler(HandshakeWatcher(done: handshake))
                }
            }
            .connect(host: "127.0.0.1", port: chatd.port)
            .get()
        try await handshake.futureResult.get()
        var greeting = ByteBuffer(bytes: WireConstants.preface)
        greeting.writeFrame(.settings([]))
        try await silent.writeAndFlush(greeting)
        // The Swift client's connection stays open and idle too.
        let started = ContinuousClock.now
        kill(chatd.pid, SIGTERM)
        let status = try await chatd.wait()
        let took = ContinuousClock.now - started
        #expect(status == 0, "\((try? String(contentsOfFile: chatd.log, encoding: .utf8)) ?? "")")
        #expect(took < .seconds(2), "chatd took \(took) to exit")
        await client.close()
        try? await silent.close()
        try await group.shutdownGracefully()
    }
}
