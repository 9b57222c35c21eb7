/// Whether a method answers once or streams.
public enum ChatMethodKind: Hashable, Sendable {
    /// One request, one response.
    case unary
    /// One request, a stream of responses.
    case serverStreaming
}

/// A method of the contract, typed by its request and response.
public struct ChatMethod<Request: ProtoMessage, Response: ProtoMessage>: Sendable {
    /// `/chat.v1.Service/Method`.
    public let path: String
    /// Unary or server-streaming.
    public let kind: ChatMethodKind
    /// Safe to retry as it is (the contract marks it NO_SIDE_EFFECTS or IDEMPOTENT); false for a mutation, which a
    /// retry repeats unless it carries the first attempt's idempotency key.
    public let idempotent: Bool

    /// Creates a method descriptor (a mutation unless `idempotent`).
    public init(path: String, kind: ChatMethodKind, idempotent: Bool = false) {
        self.path = path
        self.kind = kind
        self.idempotent = idempotent
    }

    /// The untyped description, for routing and the method listing.
    public var info: ChatMethodInfo {
        ChatMethodInfo(
            path: self.path,
            kind: self.kind,
            idempotent: self.idempotent,
            requestType: Request.protoName,
            responseType: Response.protoName
        )
    }
}

/// A method of the contract, untyped.
public struct ChatMethodInfo: Hashable, Sendable {
    /// `/chat.v1.Service/Method`.
    public let path: String
    /// Unary or server-streaming.
    public let kind: ChatMethodKind
    /// Safe to retry without an idempotency key (`ChatMethod.idempotent`).
    public let idempotent: Bool
    /// The request's full proto name.
    public let requestType: String
    /// The response's full proto name.
    public let responseType: String
}
