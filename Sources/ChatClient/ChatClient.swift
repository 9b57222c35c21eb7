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
    /// Makes a mutation safe to retry (16 to 64 bytes).
    public var idempotencyKey: [UInt8]
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
        trace: TraceContext? = nil
    ) {
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

/// The Swift client of chatd: one connection (re-established when lost) that multiplexes concurrent calls, typed
/// stubs for every method (`ChatClient+Stubs.swift`), deadlines, cancellation, and up to two transparent retries of unary calls
/// the server did not process.
public final class ChatClient: Sendable {
    private let host: String
    private let port: Int
    private let tls: TLSContext
    private let serverName: String?
    private let group: any EventLoopGroup
    private let defaultAuthorization: String?
    private let current = Mutex<Task<ChatConnection, any Error>?>(nil)

    /// Creates a client; it connects on the first call.
    ///
    /// - Parameters:
    ///   - host: the server's address.
    ///   - port: the server's port.
    ///   - tls: a client TLS context (trust roots, optional client certificate).
    ///   - serverName: the name to verify in the server's certificate; defaults to `host`.
    ///   - authorization: the default `Bearer <JWT>` for every call.
    ///   - group: the event loops to use.
    public init(
        host: String,
        port: Int,
        tls: TLSContext,
        serverName: String? = nil,
        authorization: String? = nil,
        group: any EventLoopGroup
    ) {
        self.host = host
        self.port = port
        self.tls = tls
        self.serverName = serverName
        self.defaultAuthorization = authorization
        self.group = group
    }

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
                        "\(self.host):\(self.port) closed the connection before its first call"
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
            let task = Task { [host, port, tls, serverName, group] in
                try await ChatConnection.connect(host: host, port: port, tls: tls, serverName: serverName, group: group)
            }
            current = task
            return task
        }
        do {
            return try await fresh.value
        } catch {
            self.current.withLock { if $0 == fresh { $0 = nil } }
            if error is ChatConnection.ClosedBeforeUse { throw error }
            throw RPCError(.unavailable, "cannot connect to \(self.host):\(self.port): \(error)")
        }
    }

    /// How often a unary call the server did not take (UNAVAILABLE, not processed) is sent again.
    static let maxUnprocessedRetries: UInt32 = 2

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

    /// Calls a unary method. A call the server did not process (refused, or caught by a GOAWAY) is retried once on a
    /// fresh connection.
    ///
    /// - Throws: `RPCError` with the call's status.
    public func unary<Request: ProtoMessage, Response: ProtoMessage>(
        _ method: ChatMethod<Request, Response>,
        _ request: Request,
        options: CallOptions = CallOptions()
    ) async throws -> Response {
        var attempt: UInt32 = 0
        while true {
            do {
                let stream = try await self.open(
                    method,
                    request,
                    options: options,
                    attempt: attempt,
                    returnsCredit: false
                )
                var response: Response?
                for try await message in stream {
                    guard response == nil else {
                        throw RPCError(.internal, "the server sent more than one response to a unary call")
                    }
                    response = message
                }
                guard let response else { throw RPCError(.internal, "the server sent no response to a unary call") }
                return response
            } catch let error as RPCError
                where error.notProcessed && error.code == .unavailable && attempt < Self.maxUnprocessedRetries
            {
                // The connection went away before the server took the call (it drained, or went idle while this
                // machine was slow): again on a fresh one, a few times at most. A refusal (rate limit, credentials,
                // a bad header) is not_processed too, but with another code: the same call would fail again.
                attempt += 1
                continue
            }
        }
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
        if let connection = try? await task?.value {
            await connection.close()
        }
    }
}
