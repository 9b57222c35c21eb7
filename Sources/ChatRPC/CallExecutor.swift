internal import ChatProto
internal import Logging
internal import NIOCore
internal import Synchronization

/// Runs calls: the interceptor chain, composed once per server, then the method's handler; and maps whatever a
/// handler throws to the status the caller sees. Transport-free: the connection handler gives it a request and a
/// sink, and gets a status back.
struct CallExecutor: Sendable {
    typealias Body = @Sendable (CallContext) async throws -> Void
    /// The interceptors wrapped around a body, outermost first.
    private let chain: @Sendable (CallContext, @escaping Body) async throws -> Void

    init(interceptors: [any ServerInterceptor]) {
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
