internal import CLibPQ
internal import Glibc

/// One libpq connection. Every call blocks the calling thread until the server answers, so a connection is only
/// ever used from a thread that may block (never an event loop or the cooperative pool); the pool in this module
/// gives each connection such a thread.
public final class PGConnection {
    private var handle: OpaquePointer?

    /// Opens a connection.
    ///
    /// - Parameter conninfo: a libpq connection string (`host=/path port=5432 dbname=chat user=chat_app`) or URI.
    /// - Throws: `StorageError` with `.connectionFailed` when the server cannot be reached or refuses.
    public init(conninfo: String) throws(StorageError) {
        guard let handle = PQconnectdb(conninfo) else {
            throw StorageError(code: .connectionFailed, detail: "out of memory")
        }
        guard PQstatus(handle) == CONNECTION_OK else {
            let message = String(cString: PQerrorMessage(handle))
            PQfinish(handle)
            throw StorageError(code: .connectionFailed, detail: message)
        }
        self.handle = handle
    }

    deinit {
        self.close()
    }

    /// Closes the connection; further calls fail with `.connectionFailed`.
    public func close() {
        if let handle = self.handle {
            PQfinish(handle)
            self.handle = nil
        }
    }

    /// The server's version as an integer, e.g. 150018 for 15.18.
    public var serverVersion: Int {
        guard let handle = self.handle else { return 0 }
        return Int(PQserverVersion(handle))
    }

    /// Runs one statement with bound parameters (never spliced into the SQL) and returns its result.
    ///
    /// - Parameters:
    ///   - sql: one statement, with `$1`, `$2`, ... placeholders.
    ///   - parameters: the values, sent as text; nil is SQL NULL.
    /// - Throws: `StorageError` with the SQLSTATE when the server rejects the statement.
    public func query(_ sql: String, _ parameters: [String?] = []) throws(StorageError) -> PGResult {
        guard let handle = self.handle else {
            throw StorageError(code: .connectionFailed, detail: "connection closed")
        }
        let result = withCStrings(parameters) { values in
            PQexecParams(handle, sql, Int32(parameters.count), nil, values, nil, nil, 0)
        }
        guard let result else {
            throw StorageError(code: .connectionFailed, detail: String(cString: PQerrorMessage(handle)))
        }
        switch PQresultStatus(result) {
        case PGRES_TUPLES_OK, PGRES_COMMAND_OK:
            return PGResult(result)
        default:
            let state = chat_PQresultSQLState(result).map { String(cString: $0) }
            let message =
                chat_PQresultPrimaryMessage(result).map { String(cString: $0) }
                ?? String(cString: PQresultErrorMessage(result))
            PQclear(result)
            let code: StorageError.Code = PQstatus(handle) == CONNECTION_OK ? .queryFailed : .connectionFailed
            throw StorageError(code: code, sqlState: state, detail: message)
        }
    }
}

/// Passes an array of optional strings to C as `const char *const *`, valid for the duration of `body`.
private func withCStrings<R>(_ strings: [String?], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R) -> R {
    var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { $0.flatMap { strdup($0) } }
    defer { pointers.forEach { free($0) } }
    return pointers.withUnsafeMutableBufferPointer { buffer in
        buffer.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: max(buffer.count, 1)) {
            body(strings.isEmpty ? nil : UnsafePointer($0))
        }
    }
}

/// The rows of a statement's result, read by row and column with typed accessors.
public final class PGResult {
    private let result: OpaquePointer

    init(_ result: OpaquePointer) {
        self.result = result
    }

    deinit {
        PQclear(self.result)
    }

    /// The number of rows.
    public var rowCount: Int { Int(PQntuples(self.result)) }

    /// The number of columns.
    public var columnCount: Int { Int(PQnfields(self.result)) }

    /// The number of rows the statement changed (INSERT, UPDATE, DELETE); 0 for other statements.
    public var affectedRows: Int { Int(String(cString: PQcmdTuples(self.result))) ?? 0 }

    /// The index of the column named `name`.
    public func column(named name: String) throws(StorageError) -> Int {
        let index = Int(PQfnumber(self.result, name))
        guard index >= 0 else {
            throw StorageError(code: .unexpectedResult, detail: "no column \(name)")
        }
        return index
    }

    /// True when the value is SQL NULL.
    public func isNull(row: Int, column: Int) -> Bool {
        PQgetisnull(self.result, Int32(row), Int32(column)) == 1
    }

    /// The value as text; nil when NULL.
    public func string(row: Int, column: Int) throws(StorageError) -> String? {
        try self.check(row: row, column: column)
        if self.isNull(row: row, column: column) { return nil }
        return String(cString: PQgetvalue(self.result, Int32(row), Int32(column)))
    }

    /// The value as a 64-bit integer; nil when NULL.
    public func int64(row: Int, column: Int) throws(StorageError) -> Int64? {
        guard let text = try self.string(row: row, column: column) else { return nil }
        guard let value = Int64(text) else {
            throw StorageError(code: .unexpectedResult, detail: "column \(column) is not an integer")
        }
        return value
    }

    /// The value as a Boolean; nil when NULL.
    public func bool(row: Int, column: Int) throws(StorageError) -> Bool? {
        guard let text = try self.string(row: row, column: column) else { return nil }
        switch text {
        case "t": return true
        case "f": return false
        default: throw StorageError(code: .unexpectedResult, detail: "column \(column) is not a boolean")
        }
    }

    private func check(row: Int, column: Int) throws(StorageError) {
        guard row >= 0, row < self.rowCount, column >= 0, column < self.columnCount else {
            throw StorageError(code: .unexpectedResult, detail: "no value at row \(row), column \(column)")
        }
    }
}
