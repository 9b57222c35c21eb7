internal import CLibPQ
internal import Glibc

/// One libpq connection. Every call blocks the calling thread until the server answers, so a connection is only
/// ever used from a thread that may block (never an event loop or the cooperative pool): `PGPool` gives each
/// connection a thread of its own.
public final class PGConnection {
    private var handle: OpaquePointer?
    private let conninfo: String
    /// Prepared statements of this session, by SQL text.
    private var prepared: [String: String] = [:]
    /// For cancelling the running statement from another thread (`PQcancel` is thread-safe).
    private var cancelHandle: OpaquePointer?
    /// True when this side closed the connection because its protocol state was unknown (a pipeline broken mid-way):
    /// the server is fine, only this connection is gone.
    public private(set) var wasDiscarded = false
    /// The statement timeout (milliseconds) that transactions on this connection install for the call running now,
    /// set by the pool before each job from the call's deadline; nil for none.
    public internal(set) var statementTimeoutMilliseconds: Int?
    /// The call span this job's round trips are traced under, set by the pool for one job; nil: not traced.
    var roundTripTrace: RoundTripTrace?

    /// Opens a connection.
    ///
    /// - Parameter conninfo: a libpq connection string (`host=/path port=5432 dbname=chat user=chat_app`) or URI.
    /// - Throws: `StorageError` with `.connectionFailed` when the server cannot be reached or refuses.
    /// - Parameter preparesStatements: whether pipelines prepare each statement once, by name, and execute it by
    ///   name after that. Off for a pooler in transaction mode (pgbouncer before 1.21), where the next transaction
    ///   may run on another server connection that never saw the name: every statement is then sent with its text
    ///   (an unnamed statement), as `query` always does.
    public init(conninfo: String, preparesStatements: Bool = true) throws(StorageError) {
        self.conninfo = conninfo
        self.preparesStatements = preparesStatements
        try self.connect()
    }

    /// See `init(conninfo:preparesStatements:)`.
    let preparesStatements: Bool

    deinit {
        self.close()
    }

    private func connect() throws(StorageError) {
        let parameters = try connectionParameters(self.conninfo)
        // Both arrays end in NULL, as PQconnectdbParams requires.
        let handle = withCStrings(parameters.map(\.0) + [nil]) { keywords in
            withCStrings(parameters.map(\.1) + [nil]) { values in
                PQconnectdbParams(keywords, values, 0)
            }
        }
        guard let handle else {
            throw StorageError(code: .connectionFailed, detail: "out of memory")
        }
        guard PQstatus(handle) == CONNECTION_OK else {
            let message = String(cString: PQerrorMessage(handle))
            PQfinish(handle)
            throw StorageError(code: .connectionFailed, detail: message)
        }
        // Notices (e.g. "already exists, skipping") are not errors; libpq would print them to stderr.
        PQsetNoticeProcessor(handle, { _, _ in }, nil)
        self.handle = handle
        self.cancelHandle = PQgetCancel(handle)
        self.prepared = [:]
        self.wasDiscarded = false
    }

    /// Closes the connection; further calls fail with `.connectionFailed` until `reconnect()`.
    public func close() {
        if let cancel = self.cancelHandle {
            PQfreeCancel(cancel)
            self.cancelHandle = nil
        }
        if let handle = self.handle {
            PQfinish(handle)
            self.handle = nil
        }
        self.prepared = [:]
    }

    /// Closes a connection whose protocol state is unknown, so that it is never used again. A connection the server
    /// dropped counts as lost (the pool then reopens every connection), not as discarded.
    func discard() {
        let lost = self.handle.map { PQstatus($0) != CONNECTION_OK } ?? true
        self.close()
        self.wasDiscarded = !lost
    }

    /// Asks the server to cancel the statement running on this connection, if any. Blocks while it connects to send
    /// the request; call it from a thread that may block, not the one running the statement.
    func cancelRunningStatement() {
        guard let cancel = self.cancelHandle else { return }
        var buffer = [CChar](repeating: 0, count: 256)
        _ = PQcancel(cancel, &buffer, Int32(buffer.count))
    }

    /// Closes the connection and opens a new one (after the server restarted, say).
    public func reconnect() throws(StorageError) {
        self.close()
        try self.connect()
    }

    /// False once the connection is known to be lost.
    public var isHealthy: Bool {
        guard let handle = self.handle else { return false }
        return PQstatus(handle) == CONNECTION_OK
    }

    /// The server's version as an integer, e.g. 150018 for 15.18.
    public var serverVersion: Int {
        guard let handle = self.handle else { return 0 }
        return Int(PQserverVersion(handle))
    }

    // MARK: - One statement

    /// Runs one statement and returns its result. Values interpolated into `sql` are bound parameters, never SQL
    /// text; this is the only way to run a statement with values.
    ///
    /// - Throws: `StorageError` with the SQLSTATE when the server rejects the statement.
    @discardableResult
    public func query(_ sql: SQL) throws(StorageError) -> PGResult {
        guard let trace = self.roundTripTrace else { return try self.sendQuery(sql) }
        return try trace.traced([sql]) { () throws(StorageError) in try self.sendQuery(sql) }
    }

    private func sendQuery(_ sql: SQL) throws(StorageError) -> PGResult {
        let handle = try self.liveHandle()
        let result = withCStrings(sql.binds) { values in
            PQexecParams(handle, sql.text, Int32(sql.binds.count), nil, values, nil, nil, 0)
        }
        return try self.check(result)
    }

    /// Runs a script of several statements without parameters (migrations), in the simple query protocol.
    func execute(script: String) throws(StorageError) {
        let handle = try self.liveHandle()
        _ = try self.check(PQexec(handle, script))
    }

    // MARK: - Pipelines

    /// Sends every statement in one pipeline ending in one Sync, and reads every result: one round trip.
    ///
    /// Without an explicit `BEGIN` the statements form one implicit transaction that commits at the Sync; if one
    /// fails, the server skips the rest and rolls the whole pipeline back. Statements are prepared once per
    /// connection and executed by name after that.
    ///
    /// - Parameter statements: the statements, in order.
    /// - Returns: one result per statement.
    /// - Throws: the first statement's error (with its SQLSTATE) when one fails.
    @discardableResult
    public func pipeline(_ statements: [SQL]) throws(StorageError) -> [PGResult] {
        guard let trace = self.roundTripTrace else { return try self.sendPipeline(statements) }
        return try trace.traced(statements) { () throws(StorageError) in try self.sendPipeline(statements) }
    }

    private func sendPipeline(_ statements: [SQL]) throws(StorageError) -> [PGResult] {
        let handle = try self.liveHandle()
        guard PQenterPipelineMode(handle) == 1 else {
            throw self.connectionError(handle, "cannot enter pipeline mode")
        }
        // Every result up to the Sync read, or the connection is discarded: a pipeline that broke part-way (a send
        // failed, the server closed early) leaves results unread, and the next user would read them as its own.
        var complete = false
        defer {
            if !complete || PQexitPipelineMode(handle) != 1 { self.discard() }
        }

        enum Item {
            case prepare(sql: String, name: String)
            case execute
        }
        var items: [Item] = []
        items.reserveCapacity(statements.count + 2)
        var newlyPrepared: [String: String] = [:]
        for statement in statements where !self.preparesStatements {
            let sent = withCStrings(statement.binds) { values in
                PQsendQueryParams(handle, statement.text, Int32(statement.binds.count), nil, values, nil, nil, 0)
            }
            guard sent == 1 else { throw self.connectionError(handle, "cannot send a statement") }
            items.append(.execute)
        }
        for statement in statements where self.preparesStatements {
            let name: String
            if let known = self.prepared[statement.text] ?? newlyPrepared[statement.text] {
                name = known
            } else {
                name = "s\(self.prepared.count + newlyPrepared.count + 1)"
                guard PQsendPrepare(handle, name, statement.text, Int32(statement.binds.count), nil) == 1 else {
                    throw self.connectionError(handle, "cannot send a statement")
                }
                newlyPrepared[statement.text] = name
                items.append(.prepare(sql: statement.text, name: name))
            }
            let sent = withCStrings(statement.binds) { values in
                PQsendQueryPrepared(handle, name, Int32(statement.binds.count), values, nil, nil, 0)
            }
            guard sent == 1 else { throw self.connectionError(handle, "cannot send a statement") }
            items.append(.execute)
        }
        guard PQpipelineSync(handle) == 1 else {
            throw self.connectionError(handle, "cannot send the pipeline")
        }

        var results: [PGResult] = []
        results.reserveCapacity(statements.count)
        var firstError: StorageError?
        for item in items {
            // Each command yields one result, then NULL.
            guard let result = PQgetResult(handle) else {
                throw self.connectionError(handle, "the server closed the pipeline early")
            }
            while let extra = PQgetResult(handle) { PQclear(extra) }
            let status = PQresultStatus(result)
            switch (item, status) {
            case (.prepare(let sql, let name), PGRES_COMMAND_OK):
                self.prepared[sql] = name
                PQclear(result)
            case (.execute, PGRES_TUPLES_OK), (.execute, PGRES_COMMAND_OK):
                results.append(PGResult(result))
            case (_, PGRES_PIPELINE_ABORTED):
                PQclear(result)
            default:
                let error = self.resultError(handle, result)
                PQclear(result)
                if firstError == nil { firstError = error }
            }
        }
        guard let sync = PQgetResult(handle) else {
            throw self.connectionError(handle, "the server closed the pipeline early")
        }
        let syncStatus = PQresultStatus(sync)
        PQclear(sync)
        guard syncStatus == PGRES_PIPELINE_SYNC else {
            throw self.connectionError(handle, "the pipeline did not end in a sync")
        }
        // A protocol violation (08P01) leaves the session's state unknown: the connection is not reused.
        complete = firstError?.sqlState != protocolViolationState
        if let firstError { throw firstError }
        return results
    }

    // MARK: - LISTEN support

    /// The connection's socket, for waiting on notifications.
    var socket: Int32 {
        guard let handle = self.handle else { return -1 }
        return PQsocket(handle)
    }

    /// Reads what arrived on the socket and returns the notifications received, without blocking.
    func consumeNotifications() throws(StorageError) -> [(channel: String, payload: String)] {
        let handle = try self.liveHandle()
        guard PQconsumeInput(handle) == 1 else {
            throw self.connectionError(handle, "lost the connection")
        }
        var notifications: [(channel: String, payload: String)] = []
        while let notify = PQnotifies(handle) {
            notifications.append(
                (String(cString: notify.pointee.relname), String(cString: notify.pointee.extra))
            )
            PQfreemem(notify)
        }
        return notifications
    }

    // MARK: - Errors

    private func liveHandle() throws(StorageError) -> OpaquePointer {
        guard let handle = self.handle else {
            throw StorageError(code: .connectionFailed, detail: "connection closed")
        }
        return handle
    }

    private func check(_ result: OpaquePointer?) throws(StorageError) -> PGResult {
        let handle = try self.liveHandle()
        guard let result else {
            throw self.connectionError(handle, "no result")
        }
        switch PQresultStatus(result) {
        case PGRES_TUPLES_OK, PGRES_COMMAND_OK:
            return PGResult(result)
        default:
            let error = self.resultError(handle, result)
            PQclear(result)
            if error.sqlState == protocolViolationState { self.discard() }
            throw error
        }
    }

    private func resultError(_ handle: OpaquePointer, _ result: OpaquePointer) -> StorageError {
        let state = chat_PQresultSQLState(result).map { String(cString: $0) }
        let message =
            chat_PQresultPrimaryMessage(result).map { String(cString: $0) }
            ?? String(cString: PQresultErrorMessage(result))
        let lost = PQstatus(handle) != CONNECTION_OK || state.map(connectionLostStates.contains) == true
        return StorageError(code: lost ? .connectionFailed : .queryFailed, sqlState: state, detail: message)
    }

    private func connectionError(_ handle: OpaquePointer, _ context: String) -> StorageError {
        StorageError(code: .connectionFailed, detail: "\(context): \(String(cString: PQerrorMessage(handle)))")
    }
}

/// SQLSTATE 08P01, a protocol violation on a live connection: it is closed rather than reused.
private let protocolViolationState = "08P01"

/// SQLSTATEs that mean the session is gone: administrator shutdown, crash shutdown, cannot connect now, and the
/// connection failures of class 08 (but not 08P01, a protocol violation on a live connection).
private let connectionLostStates: Set<String> = ["57P01", "57P02", "57P03", "08000", "08001", "08003", "08006"]

/// The connection parameters: the caller's (a key=value string or a URI), plus chatd's defaults for what it does not
/// set: a connect timeout, TCP keepalives and a TCP user timeout, so that a dead server or network is noticed in
/// seconds, not at the kernel's default of about two hours. (Both are ignored on Unix-domain sockets.)
func connectionParameters(_ conninfo: String) throws(StorageError) -> [(String, String?)] {
    var error: UnsafeMutablePointer<CChar>?
    guard let options = PQconninfoParse(conninfo, &error) else {
        let message = error.map { String(cString: $0) } ?? "out of memory"
        if let error { PQfreemem(error) }
        throw StorageError(code: .connectionFailed, detail: "bad connection string: \(message)")
    }
    defer { PQconninfoFree(options) }
    var parameters: [(String, String?)] = []
    var option = options
    while let keyword = option.pointee.keyword {
        if let value = option.pointee.val {
            parameters.append((String(cString: keyword), String(cString: value)))
        }
        option += 1
    }
    for (keyword, value) in PGConnection.defaultParameters where !parameters.contains(where: { $0.0 == keyword }) {
        parameters.append((keyword, value))
    }
    return parameters
}

extension PGConnection {
    /// What chatd sets when the connection string does not: a 5 s connect timeout; keepalives after 30 s idle,
    /// every 10 s, 3 unanswered = dead; unacknowledged data for 30 s = dead.
    public static let defaultParameters: [(String, String)] = [
        ("connect_timeout", "5"), ("keepalives", "1"), ("keepalives_idle", "30"), ("keepalives_interval", "10"),
        ("keepalives_count", "3"), ("tcp_user_timeout", "30000"),
    ]
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

    /// Column indices by name, read from the result once (PQfnumber converts and compares every name on every
    /// call: it was a tenth of the server's CPU when decoding pages of messages).
    private lazy var columns: [String: Int] = {
        var columns: [String: Int] = [:]
        let count = self.columnCount
        columns.reserveCapacity(count)
        for index in 0..<count {
            columns[String(cString: PQfname(self.result, Int32(index)))] = index
        }
        return columns
    }()

    /// The index of the column named `name`.
    public func column(named name: String) throws(StorageError) -> Int {
        guard let index = self.columns[name] else {
            throw StorageError(code: .unexpectedResult, detail: "no column \(name)")
        }
        return index
    }

    /// True when the value is SQL NULL.
    public func isNull(row: Int, column: Int) -> Bool {
        PQgetisnull(self.result, Int32(row), Int32(column)) == 1
    }

    /// The value's bytes (text format), valid while the result lives; nil when NULL.
    private func bytes(row: Int, column: Int) throws(StorageError) -> UnsafeBufferPointer<UInt8>? {
        try self.check(row: row, column: column)
        if self.isNull(row: row, column: column) { return nil }
        let length = Int(PQgetlength(self.result, Int32(row), Int32(column)))
        guard let start = PQgetvalue(self.result, Int32(row), Int32(column)) else { return nil }
        return UnsafeBufferPointer(
            start: UnsafeRawPointer(start).assumingMemoryBound(to: UInt8.self),
            count: length
        )
    }

    /// The value as text; nil when NULL.
    public func string(row: Int, column: Int) throws(StorageError) -> String? {
        guard let bytes = try self.bytes(row: row, column: column) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The value as a 64-bit integer; nil when NULL.
    public func int64(row: Int, column: Int) throws(StorageError) -> Int64? {
        guard let bytes = try self.bytes(row: row, column: column) else { return nil }
        guard let value = Self.parseInt64(bytes) else {
            throw StorageError(code: .unexpectedResult, detail: "column \(column) is not an integer")
        }
        return value
    }

    /// A decimal integer as PostgreSQL prints it (an optional minus sign, digits), without making a String.
    static func parseInt64(_ bytes: UnsafeBufferPointer<UInt8>) -> Int64? {
        var index = 0
        var negative = false
        if bytes.first == UInt8(ascii: "-") {
            negative = true
            index = 1
        }
        guard index < bytes.count else { return nil }
        var value: Int64 = 0
        while index < bytes.count {
            let digit = bytes[index] &- UInt8(ascii: "0")
            guard digit < 10 else { return nil }
            let (shifted, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (next, overflow2) =
                negative
                ? shifted.subtractingReportingOverflow(Int64(digit)) : shifted.addingReportingOverflow(Int64(digit))
            guard !overflow1, !overflow2 else { return nil }
            value = next
            index += 1
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

    /// The value of a NOT NULL text column.
    public func requiredString(row: Int, column: String) throws(StorageError) -> String {
        guard let value = try self.string(row: row, column: self.column(named: column)) else {
            throw StorageError(code: .unexpectedResult, detail: "column \(column) is NULL")
        }
        return value
    }

    /// The value of a NOT NULL integer column.
    public func requiredInt64(row: Int, column: String) throws(StorageError) -> Int64 {
        guard let value = try self.int64(row: row, column: self.column(named: column)) else {
            throw StorageError(code: .unexpectedResult, detail: "column \(column) is NULL")
        }
        return value
    }

    /// The value of a nullable integer column.
    public func optionalInt64(row: Int, column: String) throws(StorageError) -> Int64? {
        try self.int64(row: row, column: self.column(named: column))
    }

    /// The value of a nullable text column.
    public func optionalString(row: Int, column: String) throws(StorageError) -> String? {
        try self.string(row: row, column: self.column(named: column))
    }

    private func check(row: Int, column: Int) throws(StorageError) {
        guard row >= 0, row < self.rowCount, column >= 0, column < self.columnCount else {
            throw StorageError(code: .unexpectedResult, detail: "no value at row \(row), column \(column)")
        }
    }
}
