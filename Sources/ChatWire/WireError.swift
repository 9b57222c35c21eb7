/// A violation of the protocol by the peer, with the code the connection or stream ends with.
public struct WireError: Error, Hashable, CustomStringConvertible {
    /// Whether the whole connection ends or just one stream.
    public enum Scope: Hashable, Sendable {
        /// GOAWAY and close: the framing can no longer be trusted.
        case connection
        /// The stream ends; the connection goes on.
        case stream(StreamID)
    }

    /// The code sent in GOAWAY or CANCEL.
    public let code: ErrorCode
    /// What ends.
    public let scope: Scope
    /// What was wrong, for the GOAWAY debug text and logs; never secret.
    public let message: String

    /// Creates an error.
    public init(_ code: ErrorCode, scope: Scope = .connection, _ message: String) {
        self.code = code
        self.scope = scope
        self.message = message
    }

    public var description: String {
        switch self.scope {
        case .connection: "connection error \(self.code): \(self.message)"
        case .stream(let id): "stream \(id) error \(self.code): \(self.message)"
        }
    }
}
