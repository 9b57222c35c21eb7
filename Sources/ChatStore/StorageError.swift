/// An error from the database layer. `description` is generic, so no SQL or server detail reaches a caller by
/// accident; `debugDescription` has the detail for logs.
public struct StorageError: Error, Hashable, CustomStringConvertible, CustomDebugStringConvertible {
    /// The kind of failure.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable {
            case connectionFailed
            case queryFailed
            case unexpectedResult
            case migrationFailed
            case notFound
            case conflict
            case permissionDenied
            case failedPrecondition
            case overloaded
            case admissionTimeout
            case timedOut
        }

        private let base: Base

        /// The connection could not be opened or was lost.
        public static let connectionFailed = Code(base: .connectionFailed)
        /// The server rejected the statement; `sqlState` says why.
        public static let queryFailed = Code(base: .queryFailed)
        /// The result did not have the expected shape (a column missing, a value of the wrong type).
        public static let unexpectedResult = Code(base: .unexpectedResult)
        /// A migration failed and was rolled back, or an applied migration was edited.
        public static let migrationFailed = Code(base: .migrationFailed)
        /// The row does not exist or is outside the caller's tenant or learner scope (the two look the same).
        public static let notFound = Code(base: .notFound)
        /// The write conflicts with an existing row (an idempotency key reused with a different request).
        public static let conflict = Code(base: .conflict)
        /// A row-level security policy refused the write (SQLSTATE 42501).
        public static let permissionDenied = Code(base: .permissionDenied)
        /// The row is not in a state that allows the change (a deleted message cannot be edited).
        public static let failedPrecondition = Code(base: .failedPrecondition)

        /// The pool's queue is full: chatd sheds load.
        public static let overloaded = Code(base: .overloaded)
        /// No connection became free before the call's deadline (or the pool's queue timeout).
        public static let admissionTimeout = Code(base: .admissionTimeout)
        /// A statement ran past the call's deadline or chatd's statement limit and was cancelled (SQLSTATE 57014).
        public static let timedOut = Code(base: .timedOut)

        /// The `code` label of `chat_db_errors_total`.
        public var metricLabel: String {
            switch self.base {
            case .overloaded: "overloaded"
            case .admissionTimeout: "admission_timeout"
            case .timedOut: "timed_out"
            case .connectionFailed: "connection_failed"
            case .queryFailed: "query_failed"
            case .unexpectedResult: "unexpected_result"
            case .migrationFailed: "migration_failed"
            case .notFound: "not_found"
            case .conflict: "conflict"
            case .permissionDenied: "permission_denied"
            case .failedPrecondition: "failed_precondition"
            }
        }

        /// Failures of the database path itself (no connection, shed load, out of time), as opposed to answers
        /// about the data (not found, a conflict) that the repositories give.
        var isPathFailure: Bool {
            switch self.base {
            case .overloaded, .admissionTimeout, .timedOut, .connectionFailed: true
            default: false
            }
        }

        public var description: String {
            switch self.base {
            case .overloaded: "overloaded"
            case .admissionTimeout: "no connection in time"
            case .timedOut: "statement timed out"
            case .connectionFailed: "connection failed"
            case .queryFailed: "query failed"
            case .unexpectedResult: "unexpected result"
            case .migrationFailed: "migration failed"
            case .notFound: "not found"
            case .conflict: "conflict"
            case .permissionDenied: "permission denied"
            case .failedPrecondition: "failed precondition"
            }
        }
    }

    /// The kind of failure.
    public let code: Code
    /// The five-character SQLSTATE, when the server sent one (e.g. `42501` for a row-level security violation). Set
    /// exactly when `detail` is the server's text: a caller is then shown a message of ours, never `detail`.
    public let sqlState: String?
    /// The server's or libpq's message, or (without a SQLSTATE) the repository's own words naming the resource or
    /// the rule. The server's text is logged only; never sent to callers.
    public let detail: String

    /// True when the call this error ends had no effect on the database: none of its work had started (the pool
    /// refused or expired it in the queue). The caller's status then says `not_processed`.
    public var hadNoEffect = false

    /// Creates an error.
    public init(code: Code, sqlState: String? = nil, detail: String) {
        self.code = sqlState == "57014" ? .timedOut : code
        self.sqlState = sqlState
        self.detail = detail
    }

    /// True when the same call may succeed if tried again: the connection was lost (the server restarted), or the
    /// server aborted the transaction for a serialization failure or a deadlock.
    public var isRetryable: Bool {
        self.code == .connectionFailed || self.code == .admissionTimeout || self.sqlState == "40001"
            || self.sqlState == "40P01"
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
