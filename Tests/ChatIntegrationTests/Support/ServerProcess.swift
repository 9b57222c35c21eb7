import ChatTestSupport
import Foundation

/// Starts `argv` (a server of the tests' own: haproxy, pgbouncer) and waits up to `limit` for it to accept TCP
/// connections on `port`. Returns its pid, or nil when it exited first (its port was taken) or did not listen in
/// time, in which case it has been killed and reaped.
func spawnListening(_ argv: [String], log: String, port: Int, limit: Duration = .seconds(15)) async throws -> pid_t? {
    let pid = try spawnProgram(argv, log: log)
    let deadline = ContinuousClock.now + limit
    while ContinuousClock.now < deadline {
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == pid { return nil }
        if let fd = try? connectTCP(port: port) {
            close(fd)
            return pid
        }
        try await Task.sleep(for: .milliseconds(50))
    }
    kill(pid, SIGKILL)
    var status: Int32 = 0
    _ = waitpid(pid, &status, 0)
    return nil
}

/// A server process of the tests' own (haproxy, pgbouncer), listening on `port`, its files in `directory`.
final class ServerProcess: Sendable {
    let pid: pid_t
    let port: Int
    let directory: String

    struct DidNotStart: Error, CustomStringConvertible {
        var description: String
    }

    init(pid: pid_t, port: Int, directory: String) {
        self.pid = pid
        self.port = port
        self.directory = directory
    }

    /// SIGTERM (runuser passes it on), reaped; its files removed.
    func stop() {
        kill(self.pid, SIGTERM)
        var status: Int32 = 0
        _ = waitpid(self.pid, &status, 0)
        try? FileManager.default.removeItem(atPath: self.directory)
    }
}
