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

    /// Creates a method descriptor.
    public init(path: String, kind: ChatMethodKind) {
        self.path = path
        self.kind = kind
    }

    /// The untyped description, for routing and the method listing.
    public var info: ChatMethodInfo {
        ChatMethodInfo(
            path: self.path,
            kind: self.kind,
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
    /// The request's full proto name.
    public let requestType: String
    /// The response's full proto name.
    public let responseType: String
}
