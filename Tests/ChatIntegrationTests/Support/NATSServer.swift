import Foundation
import Synchronization

/// nats-server (Debian's package), on loopback, for the tests that run the live hub over NATS.
final class NATSServer: Sendable {
    let port: Int
    private let directory: String
    private let process: Mutex<ServerProcess?>
    /// The server's certificate and key when it speaks TLS only.
    private let tls: (certificate: String, key: String)?

    var url: String { "\(self.tls == nil ? "nats" : "tls")://127.0.0.1:\(self.port)" }

    private init(port: Int, directory: String, process: ServerProcess, tls: (certificate: String, key: String)?) {
        self.port = port
        self.directory = directory
        self.process = Mutex(process)
        self.tls = tls
    }

    /// A server on a free port; with `tls`, clients must speak TLS to it (`tls://`).
    static func start(tls: (certificate: String, key: String)? = nil) async throws -> NATSServer {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("nats-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for _ in 0..<5 {
            let port = Int.random(in: 20_000...45_000)
            if let process = try await Self.spawn(port: port, directory: directory, tls: tls) {
                return NATSServer(port: port, directory: directory, process: process, tls: tls)
            }
        }
        throw ServerProcess.DidNotStart(
            description: (try? String(contentsOfFile: "\(directory)/log", encoding: .utf8)) ?? ""
        )
    }

    private static func spawn(
        port: Int,
        directory: String,
        tls: (certificate: String, key: String)?
    ) async throws -> ServerProcess? {
        let tlsArguments = tls.map { ["--tls", "--tlscert", $0.certificate, "--tlskey", $0.key] } ?? []
        guard
            let pid = try await spawnListening(
                ["/usr/sbin/nats-server", "-a", "127.0.0.1", "-p", "\(port)", "--no_advertise"] + tlsArguments,
                log: "\(directory)/log",
                port: port
            )
        else { return nil }
        return ServerProcess(pid: pid, port: port, directory: directory)
    }

    /// SIGKILL: the server is gone at once, its connections reset, whatever was in flight lost.
    func kill() {
        guard
            let process = self.process.withLock({ state -> ServerProcess? in
                defer { state = nil }
                return state
            })
        else { return }
        Foundation.kill(process.pid, SIGKILL)
        var status: Int32 = 0
        _ = waitpid(process.pid, &status, 0)
    }

    /// Starts it again on the same port.
    func restart() async throws {
        guard let process = try await Self.spawn(port: self.port, directory: self.directory, tls: self.tls) else {
            throw ServerProcess.DidNotStart(description: "nats-server did not start again on \(self.port)")
        }
        self.process.withLock { $0 = process }
    }

    func stop() {
        let process = self.process.withLock { state -> ServerProcess? in
            defer { state = nil }
            return state
        }
        if let process {
            process.stop()
        } else {
            try? FileManager.default.removeItem(atPath: self.directory)
        }
    }
}
