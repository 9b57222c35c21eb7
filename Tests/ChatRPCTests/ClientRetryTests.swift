import ChatClient
import ChatProto
import ChatRPCCore
import Testing

/// The Swift client's retry rules as values: which failures are retried, the backoff, the budget, endpoints.
@Suite("ChatClient retries, budget and endpoints (values)")
struct ClientRetryTests {
    static func error(_ code: StatusCode, notProcessed: Bool = false, retryAfterMs: UInt64? = nil) -> RPCError {
        var details: [StatusDetail] = []
        if let retryAfterMs { details.append(StatusDetail(detail: .retryInfo(RetryInfo(retryAfterMs: retryAfterMs)))) }
        return RPCError(code, "x", details: details, notProcessed: notProcessed)
    }

    @Test("not processed UNAVAILABLE and RESOURCE_EXHAUSTED are retried for any method; the rest only when safe")
    func retryable() {
        #expect(Self.error(.unavailable, notProcessed: true).isRetryable(safeToRepeat: false))
        #expect(Self.error(.resourceExhausted, notProcessed: true).isRetryable(safeToRepeat: false))
        #expect(!Self.error(.unavailable).isRetryable(safeToRepeat: false))
        #expect(Self.error(.unavailable).isRetryable(safeToRepeat: true))
        #expect(Self.error(.aborted).isRetryable(safeToRepeat: true))
        #expect(!Self.error(.resourceExhausted).isRetryable(safeToRepeat: true), "a request over a limit")
        #expect(Self.error(.resourceExhausted, retryAfterMs: 10).isRetryable(safeToRepeat: true))
        for code in [StatusCode.invalidArgument, .notFound, .permissionDenied, .unauthenticated, .failedPrecondition] {
            #expect(!Self.error(code, notProcessed: true).isRetryable(safeToRepeat: true), "\(code)")
        }
        #expect(Self.error(.resourceExhausted, retryAfterMs: 1500).retryAfter == .milliseconds(1500))
        #expect(Self.error(.unavailable).retryAfter == nil)
    }

    @Test("backoff: full jitter under a doubling ceiling, capped")
    func backoff() {
        let policy = RetryPolicy(initialBackoff: .milliseconds(50), maxBackoff: .seconds(1))
        #expect(policy.backoff(retry: 1, random: 1) == .milliseconds(50))
        #expect(policy.backoff(retry: 2, random: 1) == .milliseconds(100))
        #expect(policy.backoff(retry: 4, random: 1) == .milliseconds(400))
        #expect(policy.backoff(retry: 10, random: 1) == .seconds(1))
        #expect(policy.backoff(retry: 3, random: 0) == .zero)
        #expect(policy.backoff(retry: 3, random: 0.5) == .milliseconds(100))
    }

    @Test("the budget: five failures in a row stop retries; successes earn them back slowly")
    func budget() {
        var budget = RetryBudget()
        for _ in 0..<4 { budget.recordFailure() }
        #expect(budget.allowsRetry)
        budget.recordFailure()
        #expect(!budget.allowsRetry, "5 of 10 tokens left")
        for _ in 0..<10 { budget.recordSuccess() }
        #expect(budget.allowsRetry)
        for _ in 0..<100 { budget.recordSuccess() }
        #expect(budget.tokens == 10)
    }

    @Test("endpoints parse host:port and [v6]:port, and refuse the rest")
    func endpoints() {
        #expect(Endpoint("chat.internal:7443") == Endpoint(host: "chat.internal", port: 7443))
        #expect(Endpoint("[::1]:7443") == Endpoint(host: "::1", port: 7443))
        #expect(Endpoint("[::1]:7443")?.description == "[::1]:7443")
        for bad in ["chat.internal", ":7443", "host:0", "host:70000", "host:x"] {
            #expect(Endpoint(bad) == nil, "\(bad)")
        }
    }
}
