internal import ChatProto
internal import Logging
internal import NIOCore
internal import Synchronization
internal import Tracing

/// Runs calls: the interceptor chain, composed once per server, then the method's handler; and maps whatever a
/// handler throws to the status the caller sees. Transport-free: the connection handler gives it a request and a
/// sink, and gets a status back.
struct CallExecutor: Sendable {
    typealias Body = @Sendable (CallContext) async throws -> Void
    /// The interceptors wrapped around a body, outermost first.
    private let chain: @Sendable (CallContext, @escaping Body) async throws -> Void
    /// Makes a server span per call; nil: calls are not traced.
    private let tracing: CallTracing?

    init(interceptors: [any ServerInterceptor], tracing: CallTracing? = nil) {
        self.tracing = tracing
        var chain: @Sendable (CallContext, @escaping Body) async throws -> Void = { context, body in
            try await body(context)
        }
        for interceptor in interceptors.reversed() {
            let inner = chain
            chain = { context, body in
                try await interceptor.intercept(context) { context in try await inner(context, body) }
            }
        }
        self.chain = chain
    }

    /// Runs the call to its end and returns its status (never throws). When an interceptor refused the call (rate
    /// limit, authentication, authorization, ...) the handler never ran, and the status says so: `not_processed`,
    /// whatever the interceptor threw.
    func run(
        _ method: MethodHandler,
        request: ByteBuffer,
        context: CallContext,
        sink: any ResponseSink
    ) async -> CallStatus {
        guard let tracing = self.tracing else {
            return await self.runCall(method, request: request, context: context, sink: sink)
        }
        // The server span: a child of the caller's span, the parent of the call's database round trips (the pool
        // reads it from the task's context), and the trace id of the call's log lines.
        let path = context.method.dropFirst()
        let span = tracing.tracer.startSpan(
            String(path),
            context: tracing.parentContext(context.trace),
            ofKind: .server
        )
        span.attributes["rpc.system"] = "chat"
        if let slash = path.firstIndex(of: "/") {
            span.attributes["rpc.service"] = String(path[..<slash])
            span.attributes["rpc.method"] = String(path[path.index(after: slash)...])
        }
        var context = context
        // A child keeps its parent's trace id: only a new trace has one to read out.
        if context.trace == nil { context.traceID = tracing.traceID(span.context) }
        let spanContext = span.context
        let status = await ServiceContext.withValue(spanContext) { [context] in
            await self.runCall(method, request: request, context: context, sink: sink)
        }
        span.attributes["rpc.grpc.status_code"] = Int(status.code.rawValue)
        if status.code != .ok {
            span.attributes["error.type"] = status.code.name ?? "\(status.code.rawValue)"
            span.setStatus(SpanStatus(code: .error))
        }
        span.end()
        return status
    }

    private func runCall(
        _ method: MethodHandler,
        request: ByteBuffer,
        context: CallContext,
        sink: any ResponseSink
    ) async -> CallStatus {
        let run = method.run
        let started = HandlerStarted()
        do {
            try await self.chain(context) { context in
                started.mark()
                try await run(request, context, sink)
            }
            return CallStatus(code: .ok)
        } catch {
            var status = Self.status(for: error, callID: context.callID, logger: context.logger)
            if !started.value { status.notProcessed = true }
            return status
        }
    }

    /// The status for an error a handler or interceptor threw: its own for status errors; INTERNAL with a generic
    /// message and the call id, the detail in the log only, for anything else.
    static func status(for error: any Error, callID: UInt64, logger: Logger) -> CallStatus {
        if let convertible = error as? any ChatStatusConvertible {
            let status = convertible.rpcError
            if status.code == .internal {
                // The caller sees a generic message; the detail (e.g. the database's) goes to the log only.
                logger.error("handler failed", metadata: ["error": "\(String(reflecting: error))"])
            }
            return status.callStatus
        }
        if error is CancellationError {
            return RPCError(.cancelled, "the call was cancelled").callStatus
        }
        logger.error("handler failed", metadata: ["error": "\(String(reflecting: error))"])
        return RPCError(.internal, "internal error (call \(callID))").callStatus
    }
}

/// Whether a call's handler began: set once, read after the chain returned.
private final class HandlerStarted: Sendable {
    private let flag = Atomic<Bool>(false)

    func mark() { self.flag.store(true, ordering: .releasing) }

    var value: Bool { self.flag.load(ordering: .acquiring) }
}
