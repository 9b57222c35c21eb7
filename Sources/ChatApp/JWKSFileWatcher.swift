public import ChatAuth
internal import Foundation
public import Logging
public import ServiceLifecycle

/// Re-reads the JWKS file when it changes, so that a key rotation at the identity provider needs no restart: the
/// file is checked every `interval`; new contents that parse replace the ring's keys (tokens of a removed key fail
/// from then on, cached ones included), contents that do not parse are logged and ignored (the keys in use stay).
public struct JWKSFileWatcher: Service {
    let path: String
    let ring: KeyRing
    let interval: Duration
    let logger: Logger

    /// Watches `path` for `ring`.
    public init(path: String, ring: KeyRing, interval: Duration, logger: Logger) {
        self.path = path
        self.ring = ring
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        // Ends at once on graceful shutdown (not after the rest of a sleep).
        try? await cancelWhenGracefulShutdown {
            try await pollFileChanges([self.path], every: self.interval) { contents in
                if let data = contents[0] { self.reload(data) }
            }
        }
    }

    /// Parses `contents` and, when it is a key set with at least one key, puts it in the ring.
    func reload(_ contents: Data) {
        do {
            let keys = try JWKSet(json: Array(contents))
            guard !keys.keys.isEmpty else {
                self.logger.warning(
                    "the JWKS file has no keys: keeping the keys in use",
                    metadata: ["path": "\(self.path)"]
                )
                return
            }
            self.ring.replace(with: keys)
            self.logger.notice(
                "JWKS reloaded",
                metadata: ["path": "\(self.path)", "kids": "\(keys.keys.keys.sorted().joined(separator: ","))"]
            )
        } catch {
            self.logger.warning(
                "the JWKS file does not parse: keeping the keys in use",
                metadata: ["path": "\(self.path)", "error": "\(error)"]
            )
        }
    }
}
