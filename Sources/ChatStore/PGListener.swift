internal import Foundation
internal import Glibc
public import Logging

/// A dedicated connection that LISTENs on channels, on a thread of its own, and reconnects when the connection is
/// lost. After every (re)connection it reports `.listening`: notifications sent while it was away are lost, so a
/// consumer catches up from the database then. A lost notification costs latency, never data.
public final class PGListener: @unchecked Sendable {
    /// What the listener reports.
    public enum Event: Sendable, Hashable {
        /// Connected and listening (first time or after a reconnection): catch up now.
        case listening
        /// A notification on one of the channels.
        case notification(channel: String, payload: String)
    }

    /// The events, for one consumer.
    public let events: AsyncStream<Event>

    private let continuation: AsyncStream<Event>.Continuation
    private let conninfo: String
    private let channels: [String]
    private let logger: Logger
    private let lock = NSLock()
    private var stopped = false

    /// Creates a listener; it connects when `run()` starts.
    ///
    /// - Parameters:
    ///   - conninfo: the libpq connection string.
    ///   - channels: channel names, lower-case identifiers (`[a-z_][a-z0-9_]*`).
    ///   - logger: where connection events are logged.
    public init(conninfo: String, channels: [String], logger: Logger) {
        precondition(
            channels.allSatisfy { name in
                !name.isEmpty && name.utf8.first.map { !(0x30...0x39).contains($0) } == true
                    && name.utf8.allSatisfy { (0x61...0x7A).contains($0) || (0x30...0x39).contains($0) || $0 == 0x5F }
            },
            "channel names are lower-case identifiers"
        )
        self.conninfo = conninfo
        self.channels = channels
        self.logger = logger
        (self.events, self.continuation) = AsyncStream.makeStream(
            of: Event.self,
            bufferingPolicy: .bufferingNewest(65_536)
        )
    }

    /// Listens until the calling task is cancelled.
    public func run() async {
        let thread = Thread { [self] in self.loop() }
        thread.name = "chat-pg-listen"
        thread.start()
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(3600))
        }
        self.lock.withLock { self.stopped = true }
    }

    private var isStopped: Bool { self.lock.withLock { self.stopped } }

    private func loop() {
        var backoff = 0.05
        while !self.isStopped {
            let connection: PGConnection
            do {
                connection = try PGConnection(conninfo: self.conninfo)
                for channel in self.channels {
                    // A channel name is an identifier, checked in init: it cannot be bound.
                    try connection.query("LISTEN \(unsafeRaw: channel)")
                }
            } catch {
                self.logger.debug("listen connection failed", metadata: ["error": "\(error)"])
                Thread.sleep(forTimeInterval: backoff)
                backoff = min(backoff * 2, 2)
                continue
            }
            backoff = 0.05
            self.logger.debug("listening", metadata: ["pg.channels": "\(self.channels)"])
            self.continuation.yield(.listening)
            while !self.isStopped {
                var descriptor = pollfd(fd: connection.socket, events: Int16(POLLIN), revents: 0)
                let ready = poll(&descriptor, 1, 200)
                if ready < 0 && errno != EINTR { break }
                if ready <= 0 { continue }
                do {
                    for notification in try connection.consumeNotifications() {
                        self.continuation.yield(
                            .notification(channel: notification.channel, payload: notification.payload)
                        )
                    }
                } catch {
                    self.logger.info("listen connection lost", metadata: ["error": "\(error)"])
                    break
                }
            }
            connection.close()
        }
        self.continuation.finish()
    }
}
