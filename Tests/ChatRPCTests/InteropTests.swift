import ChatTestSupport
import Foundation
import Testing

@Suite("Interoperability: a Python client written from docs/PROTOCOL.md")
struct InteropTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    func python(_ port: Int, _ arguments: [String]) async throws -> (status: Int32, output: String) {
        try await runProgram(
            "/usr/bin/python3",
            [
                Self.root.appendingPathComponent("clients/python/chat_client.py").path,
                "--address", "127.0.0.1:\(port)",
                "--ca", try TestCertificates.path("ca.pem"),
                "--descriptors", Self.root.appendingPathComponent("Tests/ChatProtoTests/Resources/chat.desc").path,
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
