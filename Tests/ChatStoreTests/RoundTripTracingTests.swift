import ChatStore
import ChatStoreTestSupport
import InMemoryTracing
import Logging
import Testing
import Tracing

@Suite("Tracing: a client span per database round trip of a traced call")
struct RoundTripTracingTests {
    @Test("inside a span: one child span per round trip, with the SQL and the SQLSTATE of a failure; outside: none")
    func spansPerRoundTrip() async throws {
        let database = try await TestDatabase.makeMigrated()
        let tracer = InMemoryTracer()
        let pool = PGPool(
            conninfo: database.app,
            configuration: .init(size: 1),
            logger: Logger(label: "test"),
            tracer: tracer
        )
        defer { pool.shutdown() }
        let tenant = Fixture.admin(Fixture.tenantA)

        // Untraced work (the sweeper's, the hub's): no spans at all.
        _ = try await pool.tenantBatch(tenant, ["SELECT 1"]) { $0.count }
        #expect(tracer.popFinishedSpans().isEmpty)

        let parent = tracer.startSpan("call", context: .topLevel, ofKind: .server)
        try await ServiceContext.withValue(parent.context) {
            // A transaction of two statements and its COMMIT: three round trips.
            try await pool.withTenantTransaction(tenant) { transaction in
                try transaction.query("SELECT count(*) FROM chat.threads")
                try transaction.query("SELECT 2")
            }
            // One pipeline: one round trip.
            _ = try await pool.tenantBatch(tenant, ["SELECT 1", "SELECT 2"]) { $0.count }
            // A statement the server rejects.
            await #expect(throws: StorageError.self) {
                try await pool.tenantBatch(tenant, ["SELECT * FROM chat.no_such_table"]) { $0.count }
            }
        }
        parent.end()
        let spans = tracer.popFinishedSpans().filter { $0.operationName != "call" }
        #expect(spans.count == 5, "\(spans.map(\.operationName))")
        for span in spans {
            #expect(span.kind == .client)
            #expect(span.parentSpanID == parent.context.inMemorySpanContext?.spanID)
            #expect(span.traceID == parent.context.inMemorySpanContext?.traceID)
            #expect(span.attributes["db.system.name"]?.toSpanAttribute() == "postgresql")
        }
        #expect(
            spans.map { $0.attributes["db.query.summary"]?.toSpanAttribute() }
                == ["BEGIN; SELECT; SELECT", "SELECT", "COMMIT", "SELECT; SELECT; SELECT", "SELECT; SELECT"]
        )
        #expect(spans[0].attributes["db.operation.batch.size"]?.toSpanAttribute() == 3)
        let failed = spans[4]
        #expect(failed.status?.code == .error)
        #expect(failed.attributes["db.response.status_code"]?.toSpanAttribute() == "42P01")
        // Values are bound, never in the text: the text is the statements' own.
        #expect(spans[1].attributes["db.query.text"]?.toSpanAttribute() == "SELECT 2")
    }
}
