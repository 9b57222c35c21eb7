import ChatStoreTestSupport
import Testing

@testable import ChatStore

@Suite("SQL binding and pipelines")
struct PipelineTests {
    @Test("interpolated values become binds, never text")
    func interpolation() {
        let name = "x'; DROP TABLE chat.threads; --"
        let limit = 5
        let statement: SQL = "SELECT * FROM t WHERE name = \(name) AND n < \(limit) AND flag = \(true)"
        #expect(statement.text == "SELECT * FROM t WHERE name = $1 AND n < $2 AND flag = $3")
        #expect(statement.binds == [name, "5", "t"])
        let none: String? = nil
        let withNull: SQL = "SELECT \(none)"
        #expect(withNull.binds == [nil])
    }

    @Test("arrays bind as PostgreSQL array literals, quoting every element")
    func arrays() throws {
        #expect(["a", "b\"c", "d\\e", "f,g"].sqlText == #"{"a","b\"c","d\\e","f,g"}"#)
        #expect([String]().sqlText == "{}")
        let connection = try PGConnection(conninfo: try TestDatabase.conninfo)
        let values = ["a", "b\"c", "d\\e", "f,g", "{h}", "ü"]
        let statement: SQL = "SELECT array_length(\(values)::text[], 1) AS n, (\(values)::text[])[2] AS second"
        let result = try connection.query(statement)
        #expect(try result.int64(row: 0, column: 0) == 6)
        #expect(try result.string(row: 0, column: 1) == "b\"c")
    }

    @Test("a pipeline is one implicit transaction: a failure rolls back the statements before it")
    func pipelineIsAtomic() throws {
        let connection = try PGConnection(conninfo: try TestDatabase.conninfo)
        try connection.query("CREATE TEMP TABLE pipeline_probe (n int PRIMARY KEY)")
        #expect {
            try connection.pipeline([
                "INSERT INTO pipeline_probe VALUES (1)",
                "INSERT INTO pipeline_probe VALUES (1)",
                "INSERT INTO pipeline_probe VALUES (2)",
            ])
        } throws: { error in
            (error as! StorageError).sqlState == "23505"
        }
        #expect(try connection.query("SELECT count(*) FROM pipeline_probe").int64(row: 0, column: 0) == 0)
        // The connection is usable afterwards, in and out of pipelines, and prepared statements are reused.
        let results = try connection.pipeline([
            "INSERT INTO pipeline_probe VALUES (1)",
            "INSERT INTO pipeline_probe VALUES (2)",
            "SELECT count(*) FROM pipeline_probe",
        ])
        #expect(try results[2].int64(row: 0, column: 0) == 2)
        let again = try connection.pipeline(["SELECT count(*) FROM pipeline_probe"])
        #expect(try again[0].int64(row: 0, column: 0) == 2)
    }

    @Test("a transaction-local setting ends with the pipeline")
    func settingEndsWithPipeline() throws {
        let connection = try PGConnection(conninfo: try TestDatabase.conninfo)
        let results = try connection.pipeline([
            "SELECT set_config('app.tenant_id', 'x', true)",
            "SELECT current_setting('app.tenant_id', true)",
        ])
        #expect(try results[1].string(row: 0, column: 0) == "x")
        let after = try connection.query("SELECT current_setting('app.tenant_id', true)")
        #expect(try after.string(row: 0, column: 0) ?? "" == "")
    }
}
