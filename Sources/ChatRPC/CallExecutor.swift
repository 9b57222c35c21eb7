public import ChatProto
internal import Logging
public import NIOCore

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

    /// Runs the call to its end and returns its status (never throws).
    func run(
        _ method: MethodHandler,
        request: ByteBuffer,
        context: CallContext,
        sink: any ResponseSink
    ) async -> CallStatus {
        let run = method.run
        do {
            try await self.chain(context) { context in try await run(request, context, sink) }
            return CallStatus(code: .ok)
        } catch {
            return Self.status(for: error, callID: context.callID, logger: context.logger)
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

extension CallStatus {
    /// The TRAILERS payload for this status, never larger than `maxBytes` (the peer's MAX_HEADER_SIZE): details and
    /// trailing metadata are dropped first, then the message is shortened; the code is always kept. A status that
    /// cannot be encoded at all (a NUL byte in a string) becomes INTERNAL, never an empty payload (which decodes as
    /// OK).
    public func trailersPayload(maxBytes: Int) -> ByteBuffer {
        let fallback = CallStatus(code: .internal, message: "the server could not encode the call's status")
        switch Self.encode(self, maxBytes: maxBytes) {
        case .encoded(let payload): return payload
        case .unencodable: return Self.encode(fallback, maxBytes: .max).payload!
        case .tooLarge: break
        }
        var bare = CallStatus(code: self.code, message: self.message, notProcessed: self.notProcessed)
        // Shorten the message (on a character boundary) until it fits.
        var limit = min(bare.message.utf8.count, maxBytes)
        while true {
            if let payload = Self.encode(bare, maxBytes: maxBytes).payload { return payload }
            guard limit > 0 else { break }
            limit /= 2
            bare.message = String(bare.message.utf8Prefix(limit))
        }
        return Self.encode(fallback, maxBytes: maxBytes).payload ?? Self.encode(
            CallStatus(code: .internal),
            maxBytes: .max
        ).payload!
    }

    private enum Encoding {
        case encoded(ByteBuffer)
        case tooLarge
        case unencodable

        var payload: ByteBuffer? {
            if case .encoded(let payload) = self { return payload }
            return nil
        }
    }

    private static func encode(_ status: CallStatus, maxBytes: Int) -> Encoding {
        guard let packed = try? status.packed() else { return .unencodable }
        guard packed.size <= maxBytes else { return .tooLarge }
        var payload = ByteBuffer()
        payload.writeWithUnsafeMutableBytes(minimumWritableBytes: packed.size) { packed.write(to: $0) }
        return .encoded(payload)
    }
}

extension String {
    /// The longest prefix of at most `maxBytes` UTF-8 bytes that ends on a character boundary.
    func utf8Prefix(_ maxBytes: Int) -> Substring {
        guard self.utf8.count > maxBytes else { return self[...] }
        var end = self.utf8.index(self.utf8.startIndex, offsetBy: max(0, maxBytes))
        while String.Index(end, within: self) == nil { end = self.utf8.index(before: end) }
        return self[..<end]
    }
}
