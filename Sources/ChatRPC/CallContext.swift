public import ChatProto
public import Logging

/// What a handler knows about its call.
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
    /// The call's logger, with `call.id` and `rpc.method` set. Built when asked for: a call that logs nothing
    /// allocates no metadata (a long-lived stream would otherwise hold it for its whole life).
    public var logger: Logger {
        get {
            var logger = self.baseLogger
            logger[metadataKey: "call.id"] = .stringConvertible(self.callID)
            logger[metadataKey: "rpc.method"] = .string(self.method)
            if let tenantID = self.tenantID { logger[metadataKey: "tenant.id"] = .string(tenantID) }
            return logger
        }
        set { self.baseLogger = newValue }
    }
    private var baseLogger: Logger
    /// The tenant the caller acts for, once authenticated (for the logger's `tenant.id`).
    public var tenantID: String?
    /// Values interceptors attach for handlers (the authenticated principal, for one).
    public var attributes: [String: any Sendable]

    /// Creates a context.
    public init(
        method: String,
        callID: UInt64,
        header: CallHeader,
        peerIdentity: String?,
        deadline: ContinuousClock.Instant?,
        logger: Logger,
        attributes: [String: any Sendable] = [:]
    ) {
        self.method = method
        self.callID = callID
        self.header = header
        self.peerIdentity = peerIdentity
        self.deadline = deadline
        self.baseLogger = logger
        self.attributes = attributes
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
