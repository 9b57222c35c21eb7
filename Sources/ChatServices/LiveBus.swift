internal import CNats
internal import ChatRPC
public import ChatStore
internal import Foundation
public import Logging
internal import Synchronization

/// What a bus reports to the hub.
enum LiveBusEvent: Sendable, Hashable {
    /// Connected (the first time or again), or hints were dropped: what was sent meanwhile may be lost, so every
    /// stream catches up from the database now.
    case resync
    /// A payload another instance published.
    case message(String)
}

extension AsyncStream<LiveBusEvent>.Continuation {
    /// Yields `event`; when the buffer was full (its oldest hint dropped), a `resync` follows, so that the consumer
    /// wakes every stream instead of missing the dropped hint's.
    func deliver(_ event: LiveBusEvent) {
        if case .dropped = self.yield(event) { self.yield(.resync) }
    }
}

/// How instances tell each other what committed: text payloads of ids and positions (`LiveBusMessage`), never data.
/// Best effort: a payload lost costs latency (the periodic check and `resync` catch up), never an event.
protocol LiveBus: Sendable {
    /// What arrives, for one consumer.
    var events: AsyncStream<LiveBusEvent> { get }
    /// Connects, and stays connected (reconnecting) until the calling task is cancelled.
    func run() async
    /// Sends payloads to every instance.
    func publish(_ payloads: [String]) async throws
    /// The last error connecting, when the bus keeps one (for tests and diagnosis).
    var lastError: String? { get }
}

extension LiveBus {
    var lastError: String? { nil }
}

/// PostgreSQL's LISTEN/NOTIFY, the embedded default: one LISTEN connection, and `pg_notify` on a pooled connection,
/// never inside a write transaction (whose commit would then take the cluster-wide notify lock).
final class PostgresLiveBus: LiveBus {
    let events: AsyncStream<LiveBusEvent>
    private let continuation: AsyncStream<LiveBusEvent>.Continuation
    private let listener: PGListener
    private let pool: PGPool
    private let channel: String

    init(conninfo: String, channel: String, pool: PGPool, logger: Logger) {
        self.listener = PGListener(conninfo: conninfo, channels: [channel], logger: logger)
        self.pool = pool
        self.channel = channel
        (self.events, self.continuation) = AsyncStream.makeStream(
            of: LiveBusEvent.self,
            bufferingPolicy: .bufferingNewest(65_536)
        )
    }

    func run() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.listener.run() }
            group.addTask {
                for await event in self.listener.events {
                    switch event {
                    case .listening: self.continuation.deliver(.resync)
                    case .notification(_, let payload): self.continuation.deliver(.message(payload))
                    }
                }
            }
            await group.next()
            group.cancelAll()
        }
        self.continuation.finish()
    }

    func publish(_ payloads: [String]) async throws {
        let channel = self.channel
        try await self.pool.withConnection { connection in
            for payload in payloads {
                _ = try connection.query("SELECT pg_notify(\(channel), \(payload))")
            }
        }
    }
}

/// NATS (the official C client, libnats), when configured: core NATS publish/subscribe on one subject. The library
/// runs its own threads (reading, flushing, reconnecting); this type only bridges its callbacks. It reconnects
/// forever, reports `resync` after every (re)connection and when the server or the library dropped messages of a
/// slow subscriber, and keeps at most `pendingLimit` unread messages.
final class NATSLiveBus: LiveBus {
    /// How the bus connects.
    struct Configuration: Sendable, Hashable {
        /// Server URLs (`nats://host:port`, or `tls://` for TLS); the library picks one and fails over.
        var urls: [String]
        /// The subject every instance publishes to and subscribes to.
        var subject: String
        /// A CA certificate file (PEM) to verify a `tls://` server with; nil: the system's.
        var caFile: String?
        /// Unread messages kept at most (beyond it the library drops them and `resync` follows).
        var pendingLimit: Int32 = 65_536
        /// Between reconnection attempts.
        var reconnectWait: Duration = .milliseconds(250)
    }

    let events: AsyncStream<LiveBusEvent>
    private let continuation: AsyncStream<LiveBusEvent>.Continuation
    private let configuration: Configuration
    private let name: String
    private let logger: Logger
    /// The connection, once created (it may not be connected: the library retries in the background).
    private let connection = Mutex<ConnectionBox?>(nil)
    /// Why the last setup failed, or the connection was closed for good; nil once set up again.
    private let setupError = Mutex<String?>(nil)

    /// The C pointers, owned here; only used under `connection`'s lock or by the library's threads.
    private final class ConnectionBox: @unchecked Sendable {
        let connection: OpaquePointer
        let subscription: OpaquePointer?
        init(connection: OpaquePointer, subscription: OpaquePointer?) {
            self.connection = connection
            self.subscription = subscription
        }
    }

    /// What the callbacks reach through their closure pointer: one per bus, for every connection it sets up,
    /// retained once (`retainedCallbacks`) and never released: the library may call back from its threads until it
    /// is unloaded.
    private final class Callbacks: Sendable {
        let continuation: AsyncStream<LiveBusEvent>.Continuation
        let logger: Logger
        /// Set before the connection is closed on purpose: its disconnection is then no news.
        let closing = Mutex(false)
        init(continuation: AsyncStream<LiveBusEvent>.Continuation, logger: Logger) {
            self.continuation = continuation
            self.logger = logger
        }
    }

    private let callbacks: Callbacks
    /// `callbacks`, retained once for the library's closure pointer.
    private let retainedCallbacks: Unmanaged<Callbacks>

    init(configuration: Configuration, name: String, logger: Logger) {
        self.configuration = configuration
        self.name = name
        self.logger = logger
        (self.events, self.continuation) = AsyncStream.makeStream(
            of: LiveBusEvent.self,
            bufferingPolicy: .bufferingNewest(Int(configuration.pendingLimit))
        )
        self.callbacks = Callbacks(continuation: self.continuation, logger: logger)
        self.retainedCallbacks = Unmanaged.passRetained(self.callbacks)
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    private static func check(_ status: natsStatus, _ what: String) throws {
        guard status == NATS_OK else {
            throw Failure(description: "\(what): \(String(cString: natsStatus_GetText(status)))")
        }
    }

    /// Sets the connection up and keeps it: when setting up fails, or the library closes the connection for good
    /// (it gives up on a server it cannot verify, say), it is set up again, with a backoff up to 30 s.
    func run() async {
        var backoff = Duration.milliseconds(250)
        while !Task.isCancelled {
            if self.connection.withLock({ $0 == nil }) {
                do {
                    let box = try await runBlocking { () throws -> ConnectionBox in try self.open() }
                    self.connection.withLock { $0 = box }
                    self.setupError.withLock { $0 = nil }
                } catch {
                    self.setupError.withLock { $0 = "\(error)" }
                    self.logger.error(
                        "the NATS bus could not be set up; trying again",
                        metadata: [LogKey.error: "\(error)"]
                    )
                    try? await Task.sleep(for: backoff)
                    backoff = min(backoff * 2, .seconds(30))
                    continue
                }
            }
            try? await Task.sleep(for: .seconds(1))
            let closed = self.connection.withLock { state -> ConnectionBox? in
                guard let box = state, natsConnection_Status(box.connection) == NATS_CONN_STATUS_CLOSED else {
                    return nil
                }
                state = nil
                return box
            }
            if let closed {
                let reason = Self.lastError(of: closed.connection) ?? "closed"
                self.setupError.withLock { $0 = reason }
                self.logger.error(
                    "the NATS connection was closed; setting it up again",
                    metadata: [LogKey.error: "\(reason)"]
                )
                await Self.destroy(closed)
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(30))
            } else {
                backoff = .milliseconds(250)
            }
        }
        if let box = self.connection.withLock({ state -> ConnectionBox? in
            defer { state = nil }
            return state
        }) {
            self.callbacks.closing.withLock { $0 = true }
            await Self.destroy(box)
        }
        self.continuation.finish()
    }

    private static func destroy(_ box: ConnectionBox) async {
        await runBlocking {
            if let subscription = box.subscription { natsSubscription_Destroy(subscription) }
            natsConnection_Close(box.connection)
            natsConnection_Destroy(box.connection)
        }
    }

    /// The library's last error on `connection` (status and text), if any.
    private static func lastError(of connection: OpaquePointer) -> String? {
        var text: UnsafePointer<CChar>?
        let status = natsConnection_GetLastError(connection, &text)
        guard status != NATS_OK else { return nil }
        let detail = text.map { String(cString: $0) } ?? ""
        return "\(String(cString: natsStatus_GetText(status))): \(detail)"
    }

    /// The library's last connection error (status and text), or why the last setup failed, if any.
    var lastError: String? {
        let current = self.connection.withLock { box in box.flatMap { Self.lastError(of: $0.connection) } }
        return current ?? self.setupError.withLock { $0 }
    }

    /// Publishes on a Dispatch thread: the library may write to its socket in the call when its buffer is full,
    /// which can block up to its write deadline.
    func publish(_ payloads: [String]) async throws {
        try await runBlocking { () throws -> Void in
            try self.connection.withLock { box in
                guard let box else { throw Failure(description: "not connected") }
                for payload in payloads {
                    var bytes = Array(payload.utf8)
                    try Self.check(
                        natsConnection_Publish(box.connection, self.configuration.subject, &bytes, Int32(bytes.count)),
                        "publish"
                    )
                }
            }
        }
    }

    private func open() throws -> ConnectionBox {
        var options: OpaquePointer?
        try Self.check(natsOptions_Create(&options), "options")
        guard let options else { throw Failure(description: "no options") }
        defer { natsOptions_Destroy(options) }
        let callbacks = self.retainedCallbacks.toOpaque()
        var urls = self.configuration.urls.map { strdup($0) }
        defer { urls.forEach { free($0) } }
        try urls.withUnsafeMutableBufferPointer { buffer in
            try buffer.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: buffer.count) {
                try Self.check(natsOptions_SetServers(options, $0, Int32(buffer.count)), "servers")
            }
        }
        try Self.check(natsOptions_SetName(options, self.name), "name")
        try Self.check(natsOptions_SetNoEcho(options, true), "no echo")
        try Self.check(natsOptions_SetMaxReconnect(options, -1), "reconnect")
        try Self.check(
            natsOptions_SetReconnectWait(options, Int64(self.configuration.reconnectWait.milliseconds)),
            "reconnect wait"
        )
        try Self.check(natsOptions_SetPingInterval(options, 2_000), "ping interval")
        try Self.check(natsOptions_SetMaxPingsOut(options, 2), "pings out")
        if let caFile = self.configuration.caFile {
            try Self.check(natsOptions_LoadCATrustedCertificates(options, caFile), "CA file")
        }
        let connected: natsConnectionHandler = { _, closure in
            guard let closure else { return }
            let callbacks = Unmanaged<Callbacks>.fromOpaque(closure).takeUnretainedValue()
            callbacks.logger.info("NATS bus connected")
            callbacks.continuation.deliver(.resync)
        }
        let disconnected: natsConnectionHandler = { _, closure in
            guard let closure else { return }
            let callbacks = Unmanaged<Callbacks>.fromOpaque(closure).takeUnretainedValue()
            if !callbacks.closing.withLock({ $0 }) { callbacks.logger.warning("NATS bus disconnected; reconnecting") }
        }
        let failed: natsErrHandler = { _, _, status, closure in
            guard let closure else { return }
            let callbacks = Unmanaged<Callbacks>.fromOpaque(closure).takeUnretainedValue()
            callbacks.logger.warning(
                "NATS bus error",
                metadata: [LogKey.error: "\(String(cString: natsStatus_GetText(status)))"]
            )
            // A slow consumer's messages were dropped: catch up from the database.
            callbacks.continuation.deliver(.resync)
        }
        try Self.check(natsOptions_SetReconnectedCB(options, connected, callbacks), "reconnected callback")
        try Self.check(natsOptions_SetDisconnectedCB(options, disconnected, callbacks), "disconnected callback")
        try Self.check(natsOptions_SetErrorHandler(options, failed, callbacks), "error handler")
        // The server may be down when chatd starts: the library keeps trying, and says when it got through.
        try Self.check(natsOptions_SetRetryOnFailedConnect(options, true, connected, callbacks), "retry")

        var connection: OpaquePointer?
        let status = natsConnection_Connect(&connection, options)
        guard status == NATS_OK || status == NATS_NOT_YET_CONNECTED, let connection else {
            try Self.check(status, "connect")
            throw Failure(description: "connect: no connection")
        }
        if status == NATS_NOT_YET_CONNECTED {
            self.logger.warning("NATS bus not reachable yet; retrying in the background")
        } else {
            self.continuation.deliver(.resync)
        }
        let received: natsMsgHandler = { _, _, message, closure in
            guard let message else { return }
            defer { natsMsg_Destroy(message) }
            guard let closure else { return }
            let callbacks = Unmanaged<Callbacks>.fromOpaque(closure).takeUnretainedValue()
            let length = Int(natsMsg_GetDataLength(message))
            let text = natsMsg_GetData(message).map {
                String(decoding: UnsafeRawBufferPointer(start: $0, count: length), as: UTF8.self)
            }
            callbacks.continuation.deliver(.message(text ?? ""))
        }
        var subscription: OpaquePointer?
        do {
            try Self.check(
                natsConnection_Subscribe(&subscription, connection, self.configuration.subject, received, callbacks),
                "subscribe"
            )
            try Self.check(
                natsSubscription_SetPendingLimits(subscription, self.configuration.pendingLimit, 64 << 20),
                "pending limits"
            )
        } catch {
            let cause = Self.lastError(of: connection)
            if let subscription { natsSubscription_Destroy(subscription) }
            natsConnection_Destroy(connection)
            throw Failure(description: cause.map { "\(error) (\($0))" } ?? "\(error)")
        }
        return ConnectionBox(connection: connection, subscription: subscription)
    }
}

extension Duration {
    fileprivate var milliseconds: Int64 {
        let (seconds, attoseconds) = self.components
        return seconds * 1_000 + attoseconds / 1_000_000_000_000_000
    }
}
