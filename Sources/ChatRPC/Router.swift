public import ChatProto
internal import ChatWire
internal import NIOCore

/// Sends the responses of a server-streaming call. `write` suspends while the stream or its connection holds more
/// than chatd's outbound budget (the client is not reading): backpressure reaches the handler.
public struct ResponseWriter<Response: ProtoMessage>: Sendable {
    let sink: any ResponseSink

    /// Sends one response, waiting at most the server's stall limit for the client to make room.
    ///
    /// - Throws: `ResponseStalled` after the server's stall limit without room (the call then ends
    ///   RESOURCE_EXHAUSTED); `CancellationError` when the call was cancelled or the connection closed.
    public func write(_ response: Response) async throws {
        var buffer = ByteBuffer()
        try buffer.writeEnvelope(response)
        try await self.sink.send(buffer, messages: 1, stallLimit: nil)
    }

    /// Sends one response, waiting at most `stallLimit` for the client to make room for it: a client that reads
    /// too slowly is told so instead of holding the stream (and its buffers) forever.
    ///
    /// - Throws: `ResponseStalled` when the client made no room in time; `CancellationError` as `write(_:)`.
    public func write(_ response: Response, stallLimit: Duration) async throws {
        var buffer = ByteBuffer()
        try buffer.writeEnvelope(response)
        try await self.sink.send(buffer, messages: 1, stallLimit: stallLimit)
    }
}

extension ResponseWriter {
    /// Sends several responses at once: encoded into one buffer and queued in one hop to the connection's event loop
    /// (a hop per response was what limited a replay). They are queued together, so the stream may buffer its
    /// budget plus this batch; then it waits, as `write(_:stallLimit:)` does, at most `stallLimit` for room for more.
    ///
    /// - Throws: `ResponseStalled` (its `queued` says whether the batch was queued); `CancellationError` (it was
    ///   not).
    public func write(contentsOf responses: [Response], stallLimit: Duration) async throws {
        guard !responses.isEmpty else { return }
        var buffer = ByteBuffer()
        for response in responses { try buffer.writeEnvelope(response) }
        try await self.sink.send(buffer, messages: responses.count, stallLimit: stallLimit)
    }
}

/// A stream's client did not read its responses for the whole stall limit.
public struct ResponseStalled: Error, Hashable, Sendable, ChatStatusConvertible {
    /// True when the envelopes of the write that stalled were queued (they are sent before the status); false when
    /// the connection's budget was full and they were not.
    public var queued: Bool
    /// How long the write waited.
    public var limit: Duration

    public init(queued: Bool, limit: Duration) {
        self.queued = queued
        self.limit = limit
    }

    /// RESOURCE_EXHAUSTED: the client did not read for the whole limit.
    public var rpcError: RPCError {
        RPCError(.resourceExhausted, "the client did not read the responses for \(self.limit)")
    }
}

/// Where a call's encoded response envelopes go.
protocol ResponseSink: Sendable {
    /// Queues the envelopes; suspends until there is room for more, failing with `ResponseStalled` after
    /// `stallLimit` (the server's default when nil) without room.
    func send(_ envelopes: ByteBuffer, messages: Int, stallLimit: Duration?) async throws
}

/// A method's handler, untyped: decodes the request, runs the typed handler, encodes the responses.
struct MethodHandler: Sendable {
    let info: ChatMethodInfo
    let run: @Sendable (ByteBuffer, CallContext, any ResponseSink) async throws -> Void
}

/// The methods a server serves, by path.
public struct Router: Sendable {
    var handlers: [String: MethodHandler] = [:]

    /// Creates an empty router.
    public init() {}

    /// Every registered method, in path order.
    public var methods: [ChatMethodInfo] {
        self.handlers.values.map(\.info).sorted { $0.path < $1.path }
    }

    /// Registers a unary method.
    public mutating func register<Request, Response>(
        _ method: ChatMethod<Request, Response>,
        _ handler: @escaping @Sendable (Request, CallContext) async throws -> Response
    ) {
        precondition(method.kind == .unary, "\(method.path) is not unary")
        self.handlers[method.path] = MethodHandler(info: method.info) { bytes, context, sink in
            let request = try bytes.withUnsafeReadableBytes { try Request(serializedBytes: $0) }
            let response = try await handler(request, context)
            var buffer = ByteBuffer()
            try buffer.writeEnvelope(response)
            try await sink.send(buffer, messages: 1, stallLimit: nil)
        }
    }

    /// Registers a server-streaming method.
    public mutating func register<Request, Response>(
        _ method: ChatMethod<Request, Response>,
        _ handler: @escaping @Sendable (Request, CallContext, ResponseWriter<Response>) async throws -> Void
    ) {
        precondition(method.kind == .serverStreaming, "\(method.path) is not server-streaming")
        self.handlers[method.path] = MethodHandler(info: method.info) { bytes, context, sink in
            let request = try bytes.withUnsafeReadableBytes { try Request(serializedBytes: $0) }
            try await handler(request, context, ResponseWriter(sink: sink))
        }
    }
}
