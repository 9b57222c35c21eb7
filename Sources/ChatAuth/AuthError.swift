internal import ChatProto
public import ChatRPC

/// Why a caller could not be authenticated or authorized. Messages never contain the token or any part of it.
public struct AuthError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The kind of failure.
    public enum Kind: Hashable, Sendable {
        /// No usable credentials: malformed, unsigned, badly signed, expired or not for us (UNAUTHENTICATED).
        case unauthenticated
        /// Authenticated, but not allowed (PERMISSION_DENIED).
        case permissionDenied
        /// The key set or a key could not be loaded.
        case configuration
    }

    /// The kind of failure.
    public let kind: Kind
    /// What was wrong, for the caller.
    public let message: String

    /// Creates an error.
    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { "\(self.kind): \(self.message)" }
}

extension AuthError: ChatStatusConvertible {
    public var rpcError: RPCError {
        switch self.kind {
        case .unauthenticated: RPCError(.unauthenticated, self.message)
        case .permissionDenied: RPCError(.permissionDenied, self.message)
        case .configuration: RPCError(.internal, "authentication is misconfigured")
        }
    }
}
