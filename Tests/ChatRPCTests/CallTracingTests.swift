import ChatClient
import ChatProto
import ChatTestSupport
import InMemoryTracing
import Logging
import NIOCore
import Synchronization
import Testing
import Tracing

@testable import ChatRPC

private struct NoSink: ResponseSink {
    func send(_ envelopes: ByteBuffer, messages: Int, stallLimit: Duration?) async throws {}
}

private let callerTrace = TraceContext(
    traceId: Array(0x10...0x1F),
    spanId: [0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7],
    flags: 1
)

private func context(trace: TraceContext? = nil, logger: Logger = Logger(label: "tracing-test")) throws -> CallContext {
    let header = CallHeader(method: "/chat.v1.ThreadService/GetThread", trace: trace)
    return CallContext(
        method: header.method,
        callID: 3,
        header: header,
        peerIdentity: nil,
        deadline: nil,
        trace: try CallTrace(header),
        logger: logger
    )
}

private func method(_ body: @escaping @Sendable (CallContext) async throws -> Void) -> MethodHandler {
    let info = ChatMethod<Message, Message>(path: "/chat.v1.ThreadService/GetThread", kind: .unary).info
    return MethodHandler(info: info) { _, context, _ in try await body(context) }
}

@Suite("Tracing: the call header's trace context, server spans, trace ids in the logs")
struct CallTracingTests {
    @Test("a trace context is checked against the contract; a broken one names its field")
    func validation() throws {
        #expect(try CallTrace(CallHeader()) == nil)
        let trace = try #require(try CallTrace(CallHeader(trace: callerTrace)))
        #expect(trace.traceIDHex == "101112131415161718191a1b1c1d1e1f")
        #expect(trace.traceparent == "00-101112131415161718191a1b1c1d1e1f-a0a1a2a3a4a5a6a7-01")
        let broken: [(TraceContext, String)] = [
            (TraceContext(traceId: Array(repeating: 1, count: 15), spanId: callerTrace.spanId), "trace.trace_id"),
            (TraceContext(traceId: Array(repeating: 0, count: 16), spanId: callerTrace.spanId), "trace.trace_id"),
            (TraceContext(), "trace.trace_id"),
            (TraceContext(traceId: callerTrace.traceId, spanId: [1, 2, 3]), "trace.span_id"),
            (TraceContext(traceId: callerTrace.traceId, spanId: Array(repeating: 0, count: 8)), "trace.span_id"),
            (TraceContext(traceId: callerTrace.traceId, spanId: callerTrace.spanId, flags: 0x100), "trace.flags"),
        ]
        for (context, field) in broken {
            #expect(throws: RPCError.self) { try CallTrace(CallHeader(trace: context)) }
            do {
                _ = try CallTrace(CallHeader(trace: context))
            } catch {
                #expect(error.code == .invalidArgument && error.message.hasPrefix(field), "\(error)")
            }
        }
    }

    @Test("without a tracer: no span, and the call's log lines carry the caller's trace id")
    func untracedLogsTheCallersTraceID() async throws {
        let log = RecordingLog()
        let status = await CallExecutor(interceptors: []).run(
            method { context in
                #expect(ServiceContext.current == nil)
                context.logger.info("inside")
            },
            request: ByteBuffer(),
            context: try context(trace: callerTrace, logger: log.logger()),
            sink: NoSink()
        )
        #expect(status.code == .ok)
        let line = try #require(log.lines.first { $0.message == "inside" })
        #expect(line.metadata[LogKey.traceID] == "101112131415161718191a1b1c1d1e1f")
        let untraced = RecordingLog()
        _ = await CallExecutor(interceptors: []).run(
            method { context in context.logger.info("inside") },
            request: ByteBuffer(),
            context: try context(logger: untraced.logger()),
            sink: NoSink()
        )
        #expect(untraced.lines.first?.metadata[LogKey.traceID] == nil)
    }

    @Test("with a tracer: one server span per call, named for the method, its status, the handler inside it")
    func serverSpan() async throws {
        let tracer = InMemoryTracer()
        let tracing = CallTracing(tracer: tracer, traceID: { $0.inMemorySpanContext?.traceID })
        let executor = CallExecutor(interceptors: [], tracing: tracing)
        let log = RecordingLog()
        let insideSpan = Mutex<String?>(nil)
        let ok = await executor.run(
            method { context in
                insideSpan.withLock { $0 = ServiceContext.current?.inMemorySpanContext?.spanID }
                context.logger.info("inside")
            },
            request: ByteBuffer(),
            context: try context(logger: log.logger()),
            sink: NoSink()
        )
        #expect(ok.code == .ok)
        let span = try #require(tracer.popFinishedSpans().first)
        #expect(span.operationName == "chat.v1.ThreadService/GetThread")
        #expect(span.kind == .server)
        #expect(span.attributes["rpc.system"]?.toSpanAttribute() == "chat")
        #expect(span.attributes["rpc.service"]?.toSpanAttribute() == "chat.v1.ThreadService")
        #expect(span.attributes["rpc.method"]?.toSpanAttribute() == "GetThread")
        #expect(span.attributes["rpc.grpc.status_code"]?.toSpanAttribute() == 0)
        #expect(span.status == nil)
        #expect(insideSpan.withLock { $0 } == span.spanID, "the handler runs with the server span as its context")
        // The log line carries the span's trace id (the tracer's own: the in-memory tracer reads no traceparent).
        #expect(log.lines.first?.metadata[LogKey.traceID] == span.traceID)

        let failed = await executor.run(
            method { _ in throw RPCError(.notFound, "no such thread") },
            request: ByteBuffer(),
            context: try context(),
            sink: NoSink()
        )
        #expect(failed.code == .notFound)
        let failedSpan = try #require(tracer.popFinishedSpans().first)
        #expect(failedSpan.status?.code == .error)
        #expect(failedSpan.attributes["rpc.grpc.status_code"]?.toSpanAttribute() == 5)
        #expect(failedSpan.attributes["error.type"]?.toSpanAttribute() == "not_found")
    }

    @Test("the caller's span is handed to the tracer as a W3C traceparent")
    func parentHandedAsTraceparent() async throws {
        let tracer = InMemoryTracer(recordExtractions: true)
        let executor = CallExecutor(
            interceptors: [],
            tracing: CallTracing(tracer: tracer, traceID: { $0.inMemorySpanContext?.traceID })
        )
        _ = await executor.run(
            method { _ in },
            request: ByteBuffer(),
            context: try context(trace: callerTrace),
            sink: NoSink()
        )
        let extraction = try #require(tracer.performedContextExtractions.first)
        let carrier = try #require(extraction.carrier as? [String: String])
        #expect(carrier == ["traceparent": "00-101112131415161718191a1b1c1d1e1f-a0a1a2a3a4a5a6a7-01"])
    }
}

@Suite("Tracing over a real connection")
struct CallTracingWireTests {
    @Test("a broken trace context is INVALID_ARGUMENT, not processed; a good one is served inside a server span")
    func overTheWire() async throws {
        let tracer = InMemoryTracer()
        let server = try await TestServer(configure: {
            $0.tracing = CallTracing(tracer: tracer, traceID: { $0.inMemorySpanContext?.traceID })
        })
        let client = try server.makeClient()
        let broken = TraceContext(traceId: callerTrace.traceId, spanId: [0, 0, 0, 0, 0, 0, 0, 0], flags: 1)
        do {
            _ = try await client.unary(TestMethods.echo, Message(body: "x"), options: CallOptions(trace: broken))
            Issue.record("a broken trace context was served")
        } catch let error as RPCError {
            #expect(error.code == .invalidArgument && error.notProcessed, "\(error)")
            #expect(error.message.hasPrefix("trace.span_id"), "\(error)")
        }
        #expect(tracer.finishedSpans.isEmpty, "a call refused at its header makes no span")
        let echoed = try await client.unary(
            TestMethods.echo,
            Message(body: "x"),
            options: CallOptions(trace: callerTrace)
        )
        #expect(echoed.body == "x")
        let span = try #require(tracer.popFinishedSpans().first)
        #expect(span.operationName == "test.Test/Echo")
        #expect(span.kind == .server)
        let extraction = try #require(tracer.performedContextExtractions.first?.carrier as? [String: String])
        #expect(extraction["traceparent"] == "00-101112131415161718191a1b1c1d1e1f-a0a1a2a3a4a5a6a7-01")
        await client.close()
        try await server.stop()
    }
}
