/// An error from the database layer. `description` is generic, so no SQL or server detail reaches a caller by
/// accident; `debugDescription` has the detail for logs.
public struct StorageError: Error, Hashable, CustomStringConvertible, CustomDebugStringConvertible {
    /// The kind of failure.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable {
            case connectionFailed
            case queryFailed
            case unexpectedResult
        }

        private let base: Base

        /// The connection could not be opened or was lost.
        public static let connectionFailed = Code(base: .connectionFailed)
        /// The server rejected the statement; `sqlState` says why.
        public static let queryFailed = Code(base: .queryFailed)
        /// The result did not have the expected shape (a column missing, a value of the wrong type).
        public static let unexpectedResult = Code(base: .unexpectedResult)

        public var description: String {
            switch self.base {
            case .connectionFailed: "connection failed"
            case .queryFailed: "query failed"
            case .unexpectedResult: "unexpected result"
            }
        }
    }

    /// The kind of failure.
    public let code: Code
    /// The five-character SQLSTATE, when the server sent one (e.g. `42501` for a row-level security violation).
    public let sqlState: String?
    /// The server's or libpq's message. Logged at debug only; never sent to callers.
    public let detail: String

    /// Creates an error.
    public init(code: Code, sqlState: String? = nil, detail: String) {
        self.code = code
        self.sqlState = sqlState
        self.detail = detail
    }

    public var description: String {
        if let sqlState = self.sqlState {
            return "storage: \(self.code) (SQLSTATE \(sqlState))"
        }
        return "storage: \(self.code)"
    }

    public var debugDescription: String {
        "\(self.description): \(self.detail)"
    }
}
