public import ChatProto
internal import ChatRPCCore
public import ChatTLS
internal import ChatWire
public import NIOCore
internal import NIOPosix
internal import Synchronization

/// Per-call options.
public struct CallOptions: Sendable {
    /// How long the call may take; nil for no deadline. Sent to the server, which enforces it too.
    public var timeout: Duration?
    /// `Bearer <JWT>`; nil for the client's default.
    public var authorization: String?
    /// Makes a mutation safe to retry (16 to 64 bytes); empty for one the client makes (see
    /// `automaticIdempotencyKey`).
    public var idempotencyKey: [UInt8]
    /// Whether a unary mutation without an `idempotencyKey` gets one the client makes (16 random bytes, the same on
    /// every attempt). Off, a mutation without a key is not retried once it may have run.
    public var automaticIdempotencyKey: Bool
    /// Extra metadata.
    public var metadata: [MetadataEntry]
    /// The caller's span (W3C trace context: a 16-byte trace id, an 8-byte span id, the flags), which the call's
    /// server span becomes a child of; nil for none.
    public var trace: TraceContext?

    /// Creates options.
    public init(
        timeout: Duration? = nil,
        authorization: String? = nil,
        idempotencyKey: [UInt8] = [],
        metadata: [MetadataEntry] = [],
        trace: TraceContext? = nil,
        automaticIdempotencyKey: Bool = true
    ) {
        self.automaticIdempotencyKey = automaticIdempotencyKey
        self.timeout = timeout
        self.authorization = authorization
        self.idempotencyKey = idempotencyKey
        self.metadata = metadata
        self.trace = trace
    }
}

/// The responses of a server-streaming call, as an `AsyncSequence`. Reading a message returns its flow-control
/// credit to the server; not reading holds the server back (backpressure). Dropping the sequence, or cancelling the
/// reading task, cancels the call.
public struct ResponseStream<Response: ProtoMessage>: AsyncSequence, Sendable {
    public typealias Element = Response

    let messages: AsyncThrowingStream<ByteBuffer, any Error>
    let consumed: @Sendable (Int) -> Void

    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: AsyncThrowingStream<ByteBuffer, any Error>.AsyncIterator
        let consumed: @Sendable (Int) -> Void

        public mutating func next() async throws -> Response? {
            guard let bytes = try await self.base.next() else { return nil }
            self.consumed(bytes.readableBytes + WireConstants.envelopePrefixSize)
            return try bytes.withUnsafeReadableBytes { try Response(serializedBytes: $0) }
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: self.messages.makeAsyncIterator(), consumed: self.consumed)
    }
}

/// One TLS connection that multiplexes calls.
final class ChatConnection: Sendable {
    let channel: any Channel
    let handler: NIOLoopBound<ClientConnectionHandler>
    private let usability: ConnectionUsability
    private let tokens = Atomic<UInt64>(0)

    init(channel: any Channel, handler: NIOLoopBound<ClientConnectionHandler>, usability: ConnectionUsability) {
        self.channel = channel
        self.handler = handler
        self.usability = usability
    }

    static func connect(
        host: String,
        port: Int,
        tls: TLSContext,
        serverName: String?,
        group: any EventLoopGroup
    ) async throws -> ChatConnection {
        let eventLoop = group.next()
        let ready = eventLoop.makePromise(of: Void.self)
        let usability = ConnectionUsability()
        let channel = try await ClientBootstrap(group: eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(TLSHandler(context: tls, serverName: serverName ?? host))
                    try sync.addHandler(ByteToMessageHandler(FrameDecoder(expectsPreface: false)))
                    try sync.addHandler(ClientConnectionHandler(ready: ready, usable: usability))
                }
            }
            .connect(host: host, port: port)
            .get()
        try await ready.futureResult.get()
        let handler: NIOLoopBound<ClientConnectionHandler>
        do {
            handler = try await channel.eventLoop.submit {
                NIOLoopBound(
                    try channel.pipeline.syncOperations.handler(type: ClientConnectionHandler.self),
                    eventLoop: channel.eventLoop
                )
            }.get()
        } catch {
            // The server closed the connection between its settings and now (an idle timeout, a drain): no call
            // was sent on it, so connecting again is safe.
            throw ClosedBeforeUse()
        }
        return ChatConnection(channel: channel, handler: handler, usability: usability)
    }

    /// A connection that closed after it was set up and before any call was sent on it.
    struct ClosedBeforeUse: Error {}

    /// True while the connection takes new calls (no hop to the event loop: an atomic flag the handler keeps).
    var isUsable: Bool { self.usability.isUsable }

    /// Starts a call and returns its response messages, and what to call as they are consumed.
    func call(
        header: CallHeader,
        request: ByteBuffer,
        timeout: Duration?
    ) -> (AsyncThrowingStream<ByteBuffer, any Error>, @Sendable (Int) -> Void) {
        let (messages, continuation) = AsyncThrowingStream.makeStream(of: ByteBuffer.self)
        let handler = self.handler
        let eventLoop = self.channel.eventLoop
        let token = self.tokens.add(1, ordering: .relaxed).newValue
        continuation.onTermination = { termination in
            if case .cancelled = termination {
                eventLoop.execute {
                    handler.value.cancelCall(token, error: RPCError(.cancelled, "the call was cancelled"))
                }
            }
        }
        let amount = timeout.map(TimeAmount.init)
        eventLoop.execute {
            handler.value.startCall(
                token: token,
                header: header,
                request: request,
                continuation: continuation,
                timeout: amount
            )
        }
        let consumed: @Sendable (Int) -> Void = { bytes in
            eventLoop.execute { handler.value.consumed(token, bytes: bytes) }
        }
        return (messages, consumed)
    }

    func close() async {
        let handler = self.handler
        self.channel.eventLoop.execute { handler.value.closeNow() }
        try? await self.channel.closeFuture.get()
    }
}

/// A chatd server's address.
public struct Endpoint: Sendable, Hashable, CustomStringConvertible {
    /// A name or an address.
    public var host: String
    public var port: Int
    /// The name to verify in the server's certificate; nil for `host`.
    public var serverName: String?

    /// Creates an endpoint.
    public init(host: String, port: Int, serverName: String? = nil) {
        self.host = host
        self.port = port
        self.serverName = serverName
    }

    /// Parses `host:port` (`[v6]:port` for an IPv6 address); nil when it is not one.
    public init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (1...65535).contains(port)
        else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        self.init(host: host, port: port)
    }

    public var description: String {
        self.host.contains(":") ? "[\(self.host)]:\(self.port)" : "\(self.host):\(self.port)"
    }
}

/// How the client connects again: each new connection goes to the next endpoint (round robin, from a random
/// start, so that many clients spread over the instances); one that fails goes on to the next (failover); a pass
/// over every endpoint that fails is followed by a wait (exponential backoff with full jitter) and another pass.
public struct ReconnectPolicy: Sendable, Hashable {
    /// Passes over the endpoints before a call fails UNAVAILABLE (not processed).
    public var passes: Int
    /// The wait after the first failed pass, growing twofold up to `maxBackoff`.
    public var initialBackoff: Duration
    public var maxBackoff: Duration

    /// Creates a policy.
    public init(passes: Int = 3, initialBackoff: Duration = .milliseconds(100), maxBackoff: Duration = .seconds(2)) {
        precondition(passes >= 1, "passes: at least 1")
        self.passes = passes
        self.initialBackoff = initialBackoff
        self.maxBackoff = maxBackoff
    }
}

/// The Swift client of chatd: one connection at a time (to one of several endpoints: round robin, failover,
/// reconnects with backoff) that multiplexes concurrent calls; typed stubs for every method
/// (`ChatClient+Stubs.swift`); deadlines; cancellation; retries under a budget (``RetryPolicy``, ``RetryBudget``);
/// idempotency keys for every mutation; streams that resume by themselves (``ResumingStream``).
public final class ChatClient: Sendable {
    /// The servers, tried in turn.
    public let endpoints: [Endpoint]
    private let tls: TLSContext
    private let group: any EventLoopGroup
    private let defaultAuthorization: String?
    /// How failed unary calls are sent again.
    public let retryPolicy: RetryPolicy
    /// How the client connects again.
    public let reconnectPolicy: ReconnectPolicy
    private let decider: RetryDecider
    private let current = Mutex<Task<ChatConnection, any Error>?>(nil)
    private let state: Mutex<State>
    private let counters = Counters()

    struct State {
        var nextEndpoint: Int
        var connected: Endpoint?
    }

    final class Counters: Sendable {
        let retries = Atomic<UInt64>(0)
        let resumes = Atomic<UInt64>(0)
        let connections = Atomic<UInt64>(0)
    }

    /// Creates a client of one server; it connects on the first call.
    ///
    /// - Parameters:
    ///   - host: the server's address.
    ///   - port: the server's port.
    ///   - tls: a client TLS context (trust roots, optional client certificate).
    ///   - serverName: the name to verify in the server's certificate; defaults to `host`.
    ///   - authorization: the default `Bearer <JWT>` for every call.
    ///   - retry: how failed unary calls are sent again.
    ///   - budget: the retry budget the client's calls share.
    ///   - group: the event loops to use; nil for SwiftNIO's shared ones.
    public convenience init(
        host: String,
        port: Int,
        tls: TLSContext,
        serverName: String? = nil,
        authorization: String? = nil,
        retry: RetryPolicy = RetryPolicy(),
        budget: RetryBudget = RetryBudget(),
        group: (any EventLoopGroup)? = nil
    ) {
        self.init(
            endpoints: [Endpoint(host: host, port: port, serverName: serverName)],
            tls: tls,
            authorization: authorization,
            retry: retry,
            budget: budget,
            group: group
        )
    }

    /// Creates a client of several servers (instances of one deployment); it connects on the first call.
    ///
    /// - Parameters:
    ///   - endpoints: the servers, at least one.
    ///   - tls: a client TLS context (trust roots, optional client certificate).
    ///   - authorization: the default `Bearer <JWT>` for every call.
    ///   - retry: how failed unary calls are sent again.
    ///   - budget: the retry budget the client's calls share.
    ///   - reconnect: how the client connects again.
    ///   - group: the event loops to use; nil for SwiftNIO's shared ones.
    public init(
        endpoints: [Endpoint],
        tls: TLSContext,
        authorization: String? = nil,
        retry: RetryPolicy = RetryPolicy(),
        budget: RetryBudget = RetryBudget(),
        reconnect: ReconnectPolicy = ReconnectPolicy(),
        group: (any EventLoopGroup)? = nil
    ) {
        precondition(!endpoints.isEmpty, "endpoints: at least one")
        self.endpoints = endpoints
        self.tls = tls
        self.defaultAuthorization = authorization
        self.group = group ?? MultiThreadedEventLoopGroup.singleton
        self.retryPolicy = retry
        self.reconnectPolicy = reconnect
        self.decider = RetryDecider(policy: retry, budget: budget)
        self.state = Mutex(State(nextEndpoint: Int.random(in: 0..<endpoints.count), connected: nil))
    }

    /// The endpoint of the newest connection, if any (nil after `close`).
    public var connectedEndpoint: Endpoint? { self.state.withLock { $0.connected } }
    /// Unary attempts made again, since the client was created.
    public var retries: UInt64 { self.counters.retries.load(ordering: .relaxed) }
    /// Streams resumed by ``ResumingStream``.
    public var resumes: UInt64 { self.counters.resumes.load(ordering: .relaxed) }
    /// Connections made.
    public var connections: UInt64 { self.counters.connections.load(ordering: .relaxed) }

    func countResume() { self.counters.resumes.add(1, ordering: .relaxed) }

    private func connection() async throws -> ChatConnection {
        // A connection the server closes before any call went out on it (it went idle or drained while this
        // machine was slow) is replaced; a few times at most.
        var attempts = 0
        while true {
            do {
                return try await self.usableConnection()
            } catch is ChatConnection.ClosedBeforeUse {
                attempts += 1
                guard attempts < 3 else {
                    throw RPCError(
                        .unavailable,
                        "\(self.endpoints.map(\.description).joined(separator: ", ")) closed the connection before its first call",
                        notProcessed: true
                    )
                }
            }
        }
    }

    private func usableConnection() async throws -> ChatConnection {
        let existing = self.current.withLock { $0 }
        if let existing, let connection = try? await existing.value, connection.isUsable {
            return connection
        }
        let fresh = self.current.withLock { current -> Task<ChatConnection, any Error> in
            if let current, current != existing { return current }
            let task = Task { try await self.connectAny() }
            current = task
            return task
        }
        do {
            return try await fresh.value
        } catch {
            self.current.withLock { if $0 == fresh { $0 = nil } }
            throw error
        }
    }

    /// A new connection: the next endpoint in turn, the others after it when it fails, passes with backoff.
    private func connectAny() async throws -> ChatConnection {
        var failures: [String] = []
        for pass in 0..<self.reconnectPolicy.passes {
            if pass > 0 {
                var ceiling = self.reconnectPolicy.initialBackoff
                for _ in 1..<pass { ceiling = min(self.reconnectPolicy.maxBackoff, ceiling * 2) }
                try await Task.sleep(for: ceiling * Double.random(in: 0.5...1))
            }
            let start = self.state.withLock { state -> Int in
                defer { state.nextEndpoint = (state.nextEndpoint + 1) % self.endpoints.count }
                return state.nextEndpoint
            }
            for offset in 0..<self.endpoints.count {
                let endpoint = self.endpoints[(start + offset) % self.endpoints.count]
                do {
                    let connection = try await ChatConnection.connect(
                        host: endpoint.host,
                        port: endpoint.port,
                        tls: self.tls,
                        serverName: endpoint.serverName,
                        group: self.group
                    )
                    self.counters.connections.add(1, ordering: .relaxed)
                    self.state.withLock { $0.connected = endpoint }
                    return connection
                } catch let error as ChatConnection.ClosedBeforeUse {
                    throw error
                } catch {
                    failures.append("\(endpoint): \(error)")
                }
            }
        }
        throw RPCError(
            .unavailable,
            "cannot connect: \(failures.suffix(self.endpoints.count).joined(separator: "; "))",
            notProcessed: true
        )
    }

    private func header(_ path: String, _ options: CallOptions, attempt: UInt32) -> CallHeader {
        var header = CallHeader(method: path)
        if let timeout = options.timeout {
            let micros = timeout.components.seconds * 1_000_000 + timeout.components.attoseconds / 1_000_000_000_000
            header.timeoutUs = UInt64(max(1, micros))
        }
        header.authorization = options.authorization ?? self.defaultAuthorization ?? ""
        header.idempotencyKey = options.idempotencyKey
        header.attempt = attempt
        header.metadata = options.metadata
        header.trace = options.trace
        return header
    }

    private func open<Request: ProtoMessage, Response: ProtoMessage>(
        _ method: ChatMethod<Request, Response>,
        _ request: Request,
        options: CallOptions,
        attempt: UInt32,
        returnsCredit: Bool = true
    ) async throws -> ResponseStream<Response> {
        var body = ByteBuffer()
        try body.writeEnvelope(request)
        let connection = try await self.connection()
        let (messages, consumed) = connection.call(
            header: self.header(method.path, options, attempt: attempt),
            request: body,
            timeout: options.timeout
        )
        // A unary call ends with its one response: returning its credit would only cost a hop.
        let noCredit: @Sendable (Int) -> Void = { _ in }
        return ResponseStream(messages: messages, consumed: returnsCredit ? consumed : noCredit)
    }

    /// Calls a unary method. A failed call is sent again when that can help and cannot do harm (``RetryPolicy``),
    /// within its deadline and the client's ``RetryBudget``. A mutation without an idempotency key gets one (the
    /// same on every attempt), so that its retries have one effect.
    ///
    /// - Throws: `RPCError` with the call's status.
    public func unary<Request: ProtoMessage, Response: ProtoMessage>(
        _ method: ChatMethod<Request, Response>,
        _ request: Request,
        options: CallOptions = CallOptions()
    ) async throws -> Response {
        var options = options
        if !method.idempotent && options.idempotencyKey.isEmpty && options.automaticIdempotencyKey {
            var random = SystemRandomNumberGenerator()
            options.idempotencyKey = (0..<16).map { _ in UInt8.random(in: 0...255, using: &random) }
        }
        let safeToRepeat = method.idempotent || !options.idempotencyKey.isEmpty
        let deadline = options.timeout.map { ContinuousClock.now + $0 }
        var attempt: UInt32 = 0
        while true {
            var attemptOptions = options
            if let deadline { attemptOptions.timeout = deadline - ContinuousClock.now }
            do {
                let response = try await self.unaryAttempt(method, request, options: attemptOptions, attempt: attempt)
                self.decider.succeeded()
                return response
            } catch let error as RPCError {
                guard
                    let delay = self.decider.delay(
                        after: error,
                        retry: Int(attempt) + 1,
                        safeToRepeat: safeToRepeat,
                        random: { Double.random(in: 0...1) }
                    )
                else { throw error }
                if let deadline, ContinuousClock.now + delay >= deadline { throw error }
                try await Task.sleep(for: delay)
                self.counters.retries.add(1, ordering: .relaxed)
                attempt += 1
            }
        }
    }

    private func unaryAttempt<Request: ProtoMessage, Response: ProtoMessage>(
        _ method: ChatMethod<Request, Response>,
        _ request: Request,
        options: CallOptions,
        attempt: UInt32
    ) async throws -> Response {
        if let timeout = options.timeout, timeout <= .zero {
            throw RPCError(.deadlineExceeded, "the deadline passed")
        }
        let stream = try await self.open(method, request, options: options, attempt: attempt, returnsCredit: false)
        var response: Response?
        for try await message in stream {
            guard response == nil else {
                throw RPCError(.internal, "the server sent more than one response to a unary call")
            }
            response = message
        }
        guard let response else { throw RPCError(.internal, "the server sent no response to a unary call") }
        return response
    }

    /// Calls a server-streaming method.
    ///
    /// - Returns: the responses; the call's status ends the sequence (an error status is thrown from it).
    public func serverStream<Request: ProtoMessage, Response: ProtoMessage>(
        _ method: ChatMethod<Request, Response>,
        _ request: Request,
        options: CallOptions = CallOptions()
    ) async throws -> ResponseStream<Response> {
        try await self.open(method, request, options: options, attempt: 0)
    }

    /// Closes the connection; calls still open end with CANCELLED.
    public func close() async {
        let task = self.current.withLock { current -> Task<ChatConnection, any Error>? in
            defer { current = nil }
            return current
        }
        self.state.withLock { $0.connected = nil }
        if let connection = try? await task?.value {
            await connection.close()
        }
    }
}
