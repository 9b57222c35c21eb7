public import ChatProto

/// The one error a caller sees: a status code, a message that says what was wrong, and typed details.
public struct RPCError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The status code.
    public var code: StatusCode
    /// What was wrong, for the caller; never internals (SQL, stack traces, tokens).
    public var message: String
    /// Typed details: field violations, retry info, resume info, ...
    public var details: [StatusDetail]
    /// True when the server never started the handler: always safe to retry.
    public var notProcessed: Bool

    /// Creates an error.
    public init(_ code: StatusCode, _ message: String, details: [StatusDetail] = [], notProcessed: Bool = false) {
        self.code = code
        self.message = message
        self.details = details
        self.notProcessed = notProcessed
    }

    public var description: String { "\(self.code): \(self.message)" }

    /// The status sent in TRAILERS.
    public var callStatus: CallStatus {
        CallStatus(
            code: self.code,
            message: String(self.message.utf8Prefix(1024)),
            details: self.details,
            notProcessed: self.notProcessed
        )
    }

    /// The error a client reports for a received status.
    public init(status: CallStatus) {
        self.init(status.code, status.message, details: status.details, notProcessed: status.notProcessed)
    }

    /// INVALID_ARGUMENT naming the field and the limit.
    public static func invalidArgument(field: String, _ description: String) -> RPCError {
        RPCError(
            .invalidArgument,
            "\(field): \(description)",
            details: [StatusDetail(detail: .fieldViolation(FieldViolation(field: field, description: description)))]
        )
    }
}

/// An error that knows which status it is.
public protocol ChatStatusConvertible: Error {
    /// The status a caller sees.
    var rpcError: RPCError { get }
}

extension RPCError: ChatStatusConvertible {
    public var rpcError: RPCError { self }
}

extension ProtoError: ChatStatusConvertible {
    /// A request that cannot be decoded is the caller's error, named precisely.
    public var rpcError: RPCError {
        if let field = self.field {
            return .invalidArgument(field: field, "\(self.code)")
        }
        return RPCError(.invalidArgument, "the request is not a valid \(self.messageType): \(self.code)")
    }
}
