public import ChatRPC
public import ChatTLS
internal import Foundation
public import Logging
public import ServiceLifecycle
internal import UnixSignals

/// Re-reads the server's certificate and key on SIGHUP and when the files change (checked every `interval`), so
/// that a certificate rotation needs no restart: new connections get the new pair, connections open now (and
/// their streams) keep theirs. A pair that does not load (files half written, a key that does not match) is
/// logged and ignored; the pair in use stays.
public struct TLSReloader: Service {
    let configuration: TLSConfiguration
    let server: ChatServer
    let interval: Duration
    let logger: Logger

    /// Reloads `configuration`'s files into `server`.
    public init(configuration: TLSConfiguration, server: ChatServer, interval: Duration, logger: Logger) {
        self.configuration = configuration
        self.server = server
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        try? await cancelWhenGracefulShutdown {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await _ in signals { self.reload(because: "SIGHUP") }
                }
                group.addTask {
                    let paths = [
                        self.configuration.certificatePath, self.configuration.privateKeyPath,
                        self.configuration.trustRootsPath,
                    ].compactMap { $0 }
                    try await pollFileChanges(paths, every: self.interval) { _ in
                        self.reload(because: "the files changed")
                    }
                }
                try await group.next()
                group.cancelAll()
            }
        }
    }

    /// Loads the files into a new context and gives it to the server.
    func reload(because reason: String) {
        do {
            let context = try TLSContext(configuration: self.configuration)
            self.server.replaceTLS(context)
            self.logger.notice("TLS certificate reloaded", metadata: ["reason": "\(reason)"])
        } catch {
            self.logger.warning(
                "TLS certificate not reloaded: keeping the pair in use",
                metadata: ["reason": "\(reason)", "error": "\(error)"]
            )
        }
    }
}
