import ChatStoreTestSupport
import Testing

@testable import ChatStore

@Suite("libpq through the C module, against a real PostgreSQL")
struct PGConnectionTests {
    @Test("connect, query with bound parameters, read typed results")
    func smoke() throws {
        let connection = try PGConnection(conninfo: try TestDatabase.conninfo)
        defer { connection.close() }
        #expect(connection.serverVersion >= 150_000)

        let result = try connection.queryText(
            "SELECT $1::int8 + 1 AS n, $2::text AS t, $3::text IS NULL AS null_param, true AS yes",
            ["41", "Grüße; DROP TABLE x", nil]
        )
        #expect(result.rowCount == 1)
        #expect(try result.int64(row: 0, column: result.column(named: "n")) == 42)
        // The parameter is bound, never spliced into the SQL: it comes back verbatim.
        #expect(try result.string(row: 0, column: result.column(named: "t")) == "Grüße; DROP TABLE x")
        #expect(try result.bool(row: 0, column: result.column(named: "null_param")) == true)
        #expect(try result.bool(row: 0, column: 3) == true)
    }

    @Test("a server error carries its SQLSTATE")
    func sqlState() throws {
        let connection = try PGConnection(conninfo: try TestDatabase.conninfo)
        #expect {
            try connection.query("SELECT 1/0")
        } throws: { error in
            let error = error as! StorageError
            return error.code == .queryFailed && error.sqlState == "22012"
                && !error.description.contains("division")  // details stay out of the description
        }
        // The connection is still usable after the error.
        #expect(try connection.query("SELECT 1").rowCount == 1)
    }

    @Test("a wrong address fails with connectionFailed")
    func connectionFailure() {
        #expect {
            try PGConnection(conninfo: "host=/nonexistent-socket-dir port=1 dbname=x connect_timeout=2")
        } throws: { error in
            (error as! StorageError).code == .connectionFailed
        }
    }

    @Test("reading a missing column or row is an error, not a crash")
    func outOfRange() throws {
        let connection = try PGConnection(conninfo: try TestDatabase.conninfo)
        let result = try connection.query("SELECT 1 AS one")
        #expect(throws: StorageError.self) { try result.column(named: "two") }
        #expect(throws: StorageError.self) { try result.string(row: 1, column: 0) }
    }
}

@Suite("Reading integers from result text")
struct ResultIntegerTests {
    @Test("decimal integers as PostgreSQL prints them, to the limits; anything else is refused")
    func parse() {
        func parse(_ text: String) -> Int64? {
            Array(text.utf8).withUnsafeBufferPointer { PGResult.parseInt64($0) }
        }
        #expect(parse("0") == 0 && parse("42") == 42 && parse("-7") == -7)
        #expect(parse("9223372036854775807") == .max && parse("-9223372036854775808") == .min)
        for junk in ["", "-", "9223372036854775808", "-9223372036854775809", "1a", " 1", "+1", "1.0"] {
            #expect(parse(junk) == nil, "\(junk)")
        }
    }
}
