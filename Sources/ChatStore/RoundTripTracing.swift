public import Tracing

/// The span context database round trips are traced under: the tracer and the context of the call's span, taken
/// by `PGPool.withConnection` from the caller's task and handed to the connection for the length of one job (the
/// job runs on a pool thread, where the task's context is not).
struct RoundTripTrace {
    let tracer: any Tracer
    let context: ServiceContext

    /// Runs one round trip (a statement or a pipeline of them) inside a client span named for PostgreSQL, with the
    /// parameterized SQL (values are bound, never in the text) and, when it fails, the SQLSTATE.
    func traced<Value>(
        _ statements: [SQL],
        _ body: () throws(StorageError) -> Value
    ) throws(StorageError) -> Value {
        let span = self.tracer.startSpan(
            statements.count == 1 ? "postgresql query" : "postgresql pipeline",
            context: self.context,
            ofKind: .client
        )
        span.attributes["db.system.name"] = "postgresql"
        span.attributes["db.query.summary"] = statements.map(\.operationName).joined(separator: "; ")
        span.attributes["db.query.text"] = statements.map(\.text).joined(separator: ";\n")
        if statements.count > 1 { span.attributes["db.operation.batch.size"] = statements.count }
        do {
            let value = try body()
            span.end()
            return value
        } catch {
            if let state = error.sqlState { span.attributes["db.response.status_code"] = state }
            span.attributes["error.type"] = "\(error.code)"
            span.setStatus(SpanStatus(code: .error))
            span.end()
            throw error
        }
    }
}

extension SQL {
    /// The statement's first keyword (`SELECT`, `INSERT`, `BEGIN`, ...), for span summaries.
    var operationName: String {
        let word = self.text.drop(while: { $0 == " " || $0 == "\n" }).prefix(while: { $0.isLetter })
        return word.isEmpty ? "SQL" : word.uppercased()
    }
}
