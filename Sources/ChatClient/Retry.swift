public import ChatProto
public import ChatRPCCore
internal import Synchronization

/// How often and how patiently the client sends a failed unary call again. `RetryPolicy(maxAttempts: 1)` turns
/// retries off.
///
/// Which failures are retried is the contract's rule (docs/PROTOCOL.md 4.4 and 13.5), not a setting:
/// - a call the server did not process (`notProcessed`) had no effect: UNAVAILABLE and RESOURCE_EXHAUSTED are
///   retried whatever the method does (other codes would only fail again);
/// - a call that may have run is retried only when a repeat cannot have a second effect (the method is marked
///   idempotent in the contract, or it is a mutation with an idempotency key, which the client always gives one):
///   UNAVAILABLE (the outcome is unknown), ABORTED (a concurrent attempt with the key is running), and
///   RESOURCE_EXHAUSTED with a `RetryInfo` (shed load).
public struct RetryPolicy: Sendable, Hashable {
    /// Attempts in all, the first included.
    public var maxAttempts: Int
    /// The first retry waits up to this long; each later one up to `multiplier` times longer, capped.
    public var initialBackoff: Duration
    /// The cap on a retry's wait (a `RetryInfo` may ask for longer, and gets it).
    public var maxBackoff: Duration
    /// The backoff's growth per retry.
    public var multiplier: Double

    /// Creates a policy.
    public init(
        maxAttempts: Int = 5,
        initialBackoff: Duration = .milliseconds(50),
        maxBackoff: Duration = .seconds(5),
        multiplier: Double = 2
    ) {
        precondition(maxAttempts >= 1, "maxAttempts: at least 1")
        precondition(initialBackoff > .zero && initialBackoff <= maxBackoff, "initialBackoff: in (0, maxBackoff]")
        precondition(multiplier >= 1, "multiplier: at least 1")
        self.maxAttempts = maxAttempts
        self.initialBackoff = initialBackoff
        self.maxBackoff = maxBackoff
        self.multiplier = multiplier
    }

    /// The wait before retry number `retry` (1 for the first): full jitter, uniform in [0, the capped exponential].
    public func backoff(retry: Int, random: Double) -> Duration {
        var ceiling = self.initialBackoff
        var step = 1
        while step < retry && ceiling < self.maxBackoff {
            ceiling = ceiling * self.multiplier
            step += 1
        }
        ceiling = min(self.maxBackoff, ceiling)
        return ceiling * min(1, max(0, random))
    }
}

/// gRPC's retry throttling, shared by the calls of one client: each failed attempt costs a token, each success
/// returns `tokenRatio` of one; with half the tokens or fewer left, no call is retried. A client facing a failing
/// server then sends about 1 + ratio attempts per call instead of `maxAttempts`.
public struct RetryBudget: Sendable, Hashable {
    /// The tokens when full.
    public var maxTokens: Double
    /// What a success returns.
    public var tokenRatio: Double
    /// The tokens now.
    public private(set) var tokens: Double

    /// Creates a full budget (gRPC's defaults: 10 tokens, ratio 0.1).
    public init(maxTokens: Double = 10, tokenRatio: Double = 0.1) {
        precondition(maxTokens > 0 && tokenRatio > 0, "maxTokens and tokenRatio: more than 0")
        self.maxTokens = maxTokens
        self.tokenRatio = tokenRatio
        self.tokens = maxTokens
    }

    /// A call succeeded.
    public mutating func recordSuccess() { self.tokens = min(self.maxTokens, self.tokens + self.tokenRatio) }
    /// An attempt failed.
    public mutating func recordFailure() { self.tokens = max(0, self.tokens - 1) }
    /// Whether a retry may be made now.
    public var allowsRetry: Bool { self.tokens > self.maxTokens / 2 }
}

extension RPCError {
    /// The `RetryInfo` delay, when the status carries one.
    public var retryAfter: Duration? {
        for detail in self.details {
            if case .retryInfo(let info)? = detail.detail { return .milliseconds(Int64(clamping: info.retryAfterMs)) }
        }
        return nil
    }

    /// The `ResumeInfo`, when the status carries one: where a stream resumes.
    public var resumeInfo: ResumeInfo? {
        for detail in self.details {
            if case .resumeInfo(let info)? = detail.detail { return info }
        }
        return nil
    }

    /// Whether another attempt can help and cannot do harm. `safeToRepeat`: the method is idempotent, or the call
    /// is a unary mutation carrying an idempotency key.
    public func isRetryable(safeToRepeat: Bool) -> Bool {
        if self.notProcessed && (self.code == .unavailable || self.code == .resourceExhausted) { return true }
        guard safeToRepeat else { return false }
        switch self.code {
        case .unavailable, .aborted: return true
        // A processed RESOURCE_EXHAUSTED without RetryInfo is a limit of the request (a message too large).
        case .resourceExhausted: return self.retryAfter != nil
        default: return false
        }
    }
}

/// The retry decision as a value: what the policy, the budget and the error say about one failed attempt.
final class RetryDecider: Sendable {
    let policy: RetryPolicy
    let budget: Mutex<RetryBudget>

    init(policy: RetryPolicy, budget: RetryBudget) {
        self.policy = policy
        self.budget = Mutex(budget)
    }

    func succeeded() {
        self.budget.withLock { $0.recordSuccess() }
    }

    /// The wait before retry number `retry` after `error`, or nil when the call must fail with it. Records the
    /// failure in the budget.
    func delay(after error: RPCError, retry: Int, safeToRepeat: Bool, random: () -> Double) -> Duration? {
        let allowed = self.budget.withLock { budget -> Bool in
            budget.recordFailure()
            return budget.allowsRetry
        }
        guard retry < self.policy.maxAttempts, error.isRetryable(safeToRepeat: safeToRepeat), allowed else {
            return nil
        }
        let delay = self.policy.backoff(retry: retry, random: random())
        guard let floor = error.retryAfter else { return delay }
        // At least the server's delay, spread a little so that the clients it refused do not all return at once.
        return max(delay, floor + floor * (0.2 * random()))
    }
}
