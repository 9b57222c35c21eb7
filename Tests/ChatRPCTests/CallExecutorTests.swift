import ChatDomain
import ChatProto
import Logging
import NIOCore
import Synchronization
import Testing

@testable import ChatRPC

/// What ran, in order.
private final class Log: Sendable {
    let entries = Mutex<[String]>([])
    func append(_ entry: String) { self.entries.withLock { $0.append(entry) } }
    var all: [String] { self.entries.withLock { $0 } }
}

/// Records the order interceptors run in.
private struct Recording: ServerInterceptor {
    let name: String
    let log: Log
    let refuse: Bool

    init(_ name: String, _ log: Log, refuse: Bool = false) {
        self.name = name
        self.log = log
        self.refuse = refuse
    }

    func intercept(_ context: CallContext, next: @Sendable (CallContext) async throws -> Void) async throws {
        self.log.append(self.name)
        if self.refuse { throw RPCError(.permissionDenied, "refused by \(self.name)", notProcessed: true) }
        var context = context
        let userID = (context.principal?.userID ?? "") + self.name
        context.principal = Principal(userID: userID, tenantID: "t", role: .service, learnerScope: [], permissions: [])
        try await next(context)
    }
}

private struct NoSink: ResponseSink {
    func send(_ envelopes: ByteBuffer, messages: Int, stallLimit: Duration?) async throws {}
}

private func context() -> CallContext {
    CallContext(
        method: "/t.T/M",
        callID: 7,
        header: CallHeader(),
        peerIdentity: nil,
        deadline: nil,
        logger: Logger(label: "executor-test")
    )
}

private func method(_ body: @escaping @Sendable (CallContext) async throws -> Void) -> MethodHandler {
    MethodHandler(info: ChatMethod<Message, Message>(path: "/t.T/M", kind: .unary).info) { _, context, _ in
        try await body(context)
    }
}

@Suite("Call executor: interceptors composed once, errors mapped to statuses")
struct CallExecutorTests {
    @Test("interceptors run outermost first, each passing its context on; the handler sees the last")
    func order() async {
        let log = Log()
        let executor = CallExecutor(interceptors: [Recording("a", log), Recording("b", log)])
        let seen = Mutex<String?>(nil)
        let status = await executor.run(
            method { context in seen.withLock { $0 = context.principal?.userID } },
            request: ByteBuffer(),
            context: context(),
            sink: NoSink()
        )
        #expect(status.code == .ok)
        #expect(log.all == ["a", "b"])
        #expect(seen.withLock { $0 } == "ab")
    }

    @Test("an interceptor that refuses: its status, the handler never runs")
    func refusal() async {
        let log = Log()
        let ran = Mutex(false)
        let executor = CallExecutor(interceptors: [Recording("a", log, refuse: true), Recording("b", log)])
        let status = await executor.run(
            method { _ in ran.withLock { $0 = true } },
            request: ByteBuffer(),
            context: context(),
            sink: NoSink()
        )
        #expect(status.code == .permissionDenied && status.notProcessed)
        #expect(log.all == ["a"] && !ran.withLock { $0 })
    }

    @Test("not_processed: set on any refusal before the handler, whatever the interceptor threw; never after it began")
    func notProcessed() async {
        struct Plain: ServerInterceptor {
            func intercept(_ context: CallContext, next: @Sendable (CallContext) async throws -> Void) async throws {
                throw RPCError(.resourceExhausted, "over budget")
            }
        }
        let refused = await CallExecutor(interceptors: [Plain()]).run(
            method { _ in },
            request: ByteBuffer(),
            context: context(),
            sink: NoSink()
        )
        #expect(refused.code == .resourceExhausted && refused.notProcessed)
        let failed = await CallExecutor(interceptors: []).run(
            method { _ in throw RPCError(.notFound, "no such thread") },
            request: ByteBuffer(),
            context: context(),
            sink: NoSink()
        )
        #expect(failed.code == .notFound && !failed.notProcessed)
    }

    @Test("errors: status errors keep their code, a stall is RESOURCE_EXHAUSTED, others INTERNAL without their text")
    func mapping() async {
        struct Secret: Error { let text = "password=hunter2" }
        let executor = CallExecutor(interceptors: [])
        let cases: [(any Error, StatusCode)] = [
            (RPCError(.notFound, "no such thread"), .notFound),
            (ResponseStalled(queued: true, limit: .seconds(30)), .resourceExhausted),
            (CancellationError(), .cancelled),
            (Secret(), .internal),
        ]
        for (error, code) in cases {
            let status = await executor.run(
                method { _ in throw error },
                request: ByteBuffer(),
                context: context(),
                sink: NoSink()
            )
            #expect(status.code == code)
            #expect(!status.message.contains("hunter2"))
        }
    }
}
