import Foundation
import Testing

/// Runs a program to completion with posix_spawn (Foundation's Process can hang in async tests) and returns its exit
/// status and what it printed.
func runProgram(_ path: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let outputPath = FileManager.default.temporaryDirectory.appendingPathComponent("chat-interop-\(UUID()).txt").path
    defer { try? FileManager.default.removeItem(atPath: outputPath) }
    var actions: posix_spawn_file_actions_t = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    var argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var pid: pid_t = 0
    let spawned = posix_spawn(&pid, path, &actions, nil, &argv, environ)
    guard spawned == 0 else { throw POSIXError(POSIXErrorCode(rawValue: spawned) ?? .EINVAL) }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 {
        guard errno == EINTR else { throw POSIXError(.ECHILD) }
    }
    let output = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
    return ((status & 0x7F) == 0 ? (status >> 8) & 0xFF : -1, output)
}

@Suite("Interoperability: a Python client written from docs/PROTOCOL.md")
struct InteropTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    func python(_ port: Int, _ arguments: [String]) async throws -> (status: Int32, output: String) {
        let root = Self.root
        let ca = try TestCertificates.path("ca.pem")
        return try await withCheckedThrowingContinuation { continuation in
            // Waiting for the program blocks a thread: never one of the cooperative pool, which the in-process
            // server's handlers need.
            DispatchQueue.global().async {
                continuation.resume(with: Result { try Self.pythonBlocking(root: root, ca: ca, port, arguments) })
            }
        }
    }

    static func pythonBlocking(root: URL, ca: String, _ port: Int, _ arguments: [String]) throws
        -> (status: Int32, output: String)
    {
        try runProgram(
            "/usr/bin/python3",
            [
                root.appendingPathComponent("clients/python/chat_client.py").path,
                "--address", "127.0.0.1:\(port)",
                "--ca", ca,
                "--descriptors", root.appendingPathComponent("Tests/ChatProtoTests/Resources/chat.desc").path,
            ] + arguments
        )
    }

    @Test("Health.Check and Health.Watch from Python, and an error status")
    func pythonClient() async throws {
        let server = try await TestServer()
        let check = try await self.python(server.port, ["check"])
        #expect(check.status == 0, "\(check.output)")
        #expect(check.output.contains("check server: SERVING"), "\(check.output)")

        let watch = try await self.python(server.port, ["watch", "--service", "chat.v1.MessageService"])
        #expect(watch.status == 0, "\(watch.output)")
        #expect(watch.output.contains("watch chat.v1.MessageService: SERVING"), "\(watch.output)")
        #expect(watch.output.contains("check after cancel: SERVING"), "\(watch.output)")

        let unknown = try await self.python(server.port, ["check", "--service", "nope"])
        #expect(unknown.status == 1)
        #expect(unknown.output.contains("status 5"), "\(unknown.output)")
        try await server.stop()
    }
}
