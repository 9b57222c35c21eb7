import ChatTestSupport
import Foundation
import Testing

/// One of the test tools in Tests/Tools (an OTLP receiver, an HTTPS server), run as a process by the Python that
/// `scripts/test` prepares (`CHAT_TEST_PYTHON`). Each prints `{"port": N}` first, then one JSON line per event.
final class PythonTool: Sendable {
    let pid: pid_t
    let output: String
    let port: Int

    /// Starts `Tests/Tools/<script>` with `arguments` and returns once it listens.
    static func start(_ script: String, _ arguments: [String] = []) async throws -> PythonTool {
        let python = try #require(
            ProcessInfo.processInfo.environment["CHAT_TEST_PYTHON"],
            "scripts/test sets CHAT_TEST_PYTHON (a virtualenv with the tools' packages)"
        )
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Tools/\(script)").path
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("tool-\(UUID()).jsonl").path
        let pid = try spawnProgram([python, path] + arguments, log: output)
        @Sendable func port() -> Int? {
            let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
            guard let first = text.split(separator: "\n").first,
                let object = try? JSONSerialization.jsonObject(with: Data(first.utf8)) as? [String: Int]
            else { return nil }
            return object["port"]
        }
        do {
            try await waitUntil("\(script) listens") { port() != nil }
        } catch {
            kill(pid, SIGKILL)
            var status: Int32 = 0
            _ = waitpid(pid, &status, 0)
            throw error
        }
        return PythonTool(pid: pid, output: output, port: port()!)
    }

    private init(pid: pid_t, output: String, port: Int) {
        self.pid = pid
        self.output = output
        self.port = port
    }

    deinit {
        kill(self.pid, SIGKILL)
        var status: Int32 = 0
        _ = waitpid(self.pid, &status, 0)
        try? FileManager.default.removeItem(atPath: self.output)
    }

    /// Every line after the port.
    var lines: [String] {
        let text = (try? String(contentsOfFile: self.output, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").dropFirst().map(String.init)
    }
}
