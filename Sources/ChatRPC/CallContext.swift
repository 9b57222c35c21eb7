public import ChatDomain
public import ChatProto
public import Logging

/// The log metadata keys chatd writes, defined once: every line inside a call carries `call.id` and `rpc.method`,
/// `trace.id` when the call is part of a trace, and `tenant.id` once the caller is authenticated.
public enum LogKey {
    /// The server's number for the call (also in the message of INTERNAL errors).
    public static let callID = "call.id"
    /// `/chat.v1.Service/Method`.
    public static let method = "rpc.method"
    /// The W3C trace id (32 hex digits): the caller's, or the one the call's server span started.
    public static let traceID = "trace.id"
    /// The tenant the caller acts for.
    public static let tenant = "tenant.id"
    /// The service principal's name, where a line is about one.
    public static let service = "service"
    /// An error's description (never content: errors of ours carry none).
    public static let error = "error"
}

/// What a handler knows about its call: typed fields, as hummingbird's request context has, set by the server
/// (method, call id, header, peer, deadline) and by the authentication interceptor (the principal).
public struct CallContext: Sendable {
    /// `/chat.v1.Service/Method`.
    public let method: String
    /// Unique per server process: for logs and for the message of INTERNAL errors.
    public let callID: UInt64
    /// The call header as the client sent it (authorization, idempotency key, metadata, trace).
    public let header: CallHeader
    /// The common name of the client's verified certificate (mTLS), when it presented one.
    public let peerIdentity: String?
    /// When the call must be done; nil for none.
    public let deadline: ContinuousClock.Instant?
    /// The caller's trace context, checked; nil when the header has none.
    public let trace: CallTrace?
    /// The trace id in the call's log lines: the caller's, or the one a new trace's server span began (written
    /// out only when a line is logged: most calls log none).
    public var traceID: String? {
        get { self.newTraceID ?? self.trace?.traceIDHex }
        set { self.newTraceID = newValue }
    }
    /// The trace id of a trace the server span began (the caller sent none).
    private var newTraceID: String?
    /// Who is calling, once the authentication interceptor has verified it; nil for public methods.
    public var principal: Principal?
    /// The tenant the caller acts for, once authenticated.
    public var tenantID: String? { self.principal?.tenantID }
    /// The call's logger, with `call.id`, `rpc.method` and (once authenticated) `tenant.id` set. Built when asked
    /// for: a call that logs nothing allocates no metadata (a long-lived stream would otherwise hold it for its
    /// whole life).
    public var logger: Logger {
        get {
            var logger = self.baseLogger
            logger[metadataKey: LogKey.callID] = .stringConvertible(self.callID)
            logger[metadataKey: LogKey.method] = .string(self.method)
            if let traceID = self.traceID { logger[metadataKey: LogKey.traceID] = .string(traceID) }
            if let tenantID = self.tenantID { logger[metadataKey: LogKey.tenant] = .string(tenantID) }
            return logger
        }
        set { self.baseLogger = newValue }
    }
    private var baseLogger: Logger

    /// Creates a context.
    public init(
        method: String,
        callID: UInt64,
        header: CallHeader,
        peerIdentity: String?,
        deadline: ContinuousClock.Instant?,
        trace: CallTrace? = nil,
        logger: Logger,
        principal: Principal? = nil
    ) {
        self.method = method
        self.callID = callID
        self.header = header
        self.peerIdentity = peerIdentity
        self.deadline = deadline
        self.trace = trace
        self.baseLogger = logger
        self.principal = principal
    }
}

/// Wraps every call: authentication, authorization, logging and metrics plug in here.
public protocol ServerInterceptor: Sendable {
    /// Runs before the handler; calls `next` to go on, possibly with a changed context, or throws to refuse.
    func intercept(
        _ context: CallContext,
        next: @Sendable (CallContext) async throws -> Void
    ) async throws
}
