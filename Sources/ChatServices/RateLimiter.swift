public import ChatAuth
public import ChatDomain
internal import ChatProto
public import ChatRPC
public import CoreMetrics
internal import Foundation
internal import Synchronization

/// A token bucket: `burst` tokens, refilled at `rate` per second. Pure logic, tested without a clock.
public struct TokenBucket: Sendable, Hashable {
    /// Sustained calls per second.
    public private(set) var rate: Double
    /// Calls allowed at once.
    public private(set) var burst: Double
    private var tokens: Double
    private var updatedAt: Double

    /// A full bucket at `now`.
    public init(rate: Double, burst: Double, now: Double) {
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updatedAt = now
    }

    /// Takes one token at `now` (seconds).
    ///
    /// - Returns: nil when the call may go ahead; otherwise how many seconds until a token is available.
    public mutating func take(now: Double) -> Double? {
        self.tokens = min(self.burst, self.tokens + max(0, now - self.updatedAt) * self.rate)
        self.updatedAt = max(self.updatedAt, now)
        if self.tokens >= 1 {
            self.tokens -= 1
            return nil
        }
        return (1 - self.tokens) / self.rate
    }

    /// Changes the rate and the burst at `now`: the tokens earned so far are kept, up to the new burst.
    public mutating func resize(rate: Double, burst: Double, now: Double) {
        guard rate != self.rate || burst != self.burst else { return }
        self.tokens = min(burst, self.tokens + max(0, now - self.updatedAt) * self.rate)
        self.updatedAt = max(self.updatedAt, now)
        self.rate = rate
        self.burst = burst
    }

    /// True when the bucket would be full at `now` (it can be forgotten).
    func isFull(at now: Double) -> Bool {
        self.tokens + max(0, now - self.updatedAt) * self.rate >= self.burst
    }
}

/// Rate limits per principal and per tenant, with a separate (larger) budget for service principals.
///
/// The budgets are global: with N instances alive (as the live hub hears them on its bus), each instance enforces
/// 1/N of every rate and burst, so that all of them together admit the budget (plus one burst). A client whose calls
/// all reach one instance gets that instance's share only.
public final class RateLimiter: Sendable {
    /// The budgets.
    public struct Configuration: Sendable {
        /// Calls per second and burst of one user.
        public var perPrincipal: (rate: Double, burst: Double)
        /// Calls per second and burst of one service principal.
        public var perService: (rate: Double, burst: Double)
        /// Calls per second and burst of one tenant, all its principals together.
        public var perTenant: (rate: Double, burst: Double)

        /// chatd's defaults.
        public init(
            perPrincipal: (rate: Double, burst: Double) = (50, 100),
            perService: (rate: Double, burst: Double) = (2_000, 4_000),
            perTenant: (rate: Double, burst: Double) = (5_000, 10_000)
        ) {
            self.perPrincipal = perPrincipal
            self.perService = perService
            self.perTenant = perTenant
        }
    }

    /// Which budget ran out.
    public enum Limit: String, Sendable, Hashable {
        case principal
        case tenant
    }

    private struct State {
        var buckets: [String: TokenBucket] = [:]
        /// The instances sharing the budgets, this one included.
        var instances = 1
    }

    private let configuration: Configuration
    private let state = Mutex(State())
    /// Beyond this many tracked keys, full buckets are forgotten (bounded memory).
    private let maxKeys = 100_000

    /// Creates a limiter.
    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    /// Sets how many instances share the budgets (at least 1); buckets take their new share on their next call.
    public func setInstances(_ count: Int) {
        self.state.withLock { $0.instances = max(1, count) }
    }

    /// How many instances share the budgets.
    public var instances: Int { self.state.withLock { $0.instances } }

    /// One instance's share of a budget: the rate and the burst divided by the instances (a burst of one at least).
    static func share(_ budget: (rate: Double, burst: Double), instances: Int) -> (rate: Double, burst: Double) {
        let count = Double(max(1, instances))
        return (budget.rate / count, max(1, budget.burst / count))
    }

    /// Takes a token from the principal's and the tenant's buckets.
    ///
    /// - Returns: nil when the call may go ahead; otherwise which limit and the seconds to wait.
    public func check(_ principal: Principal, now: Double) -> (Limit, Double)? {
        self.state.withLock { state in
            let own = Self.share(
                principal.role == .service ? self.configuration.perService : self.configuration.perPrincipal,
                instances: state.instances
            )
            let tenant = Self.share(self.configuration.perTenant, instances: state.instances)
            if state.buckets.count > self.maxKeys {
                state.buckets = state.buckets.filter { !$0.value.isFull(at: now) }
            }
            let principalKey = "p|\(principal.tenantID)|\(principal.userID)"
            let tenantKey = "t|\(principal.tenantID)"
            var mine = state.buckets[principalKey] ?? TokenBucket(rate: own.rate, burst: own.burst, now: now)
            mine.resize(rate: own.rate, burst: own.burst, now: now)
            if let wait = mine.take(now: now) {
                state.buckets[principalKey] = mine
                return (.principal, wait)
            }
            var shared = state.buckets[tenantKey] ?? TokenBucket(rate: tenant.rate, burst: tenant.burst, now: now)
            shared.resize(rate: tenant.rate, burst: tenant.burst, now: now)
            if let wait = shared.take(now: now) {
                state.buckets[tenantKey] = shared
                return (.tenant, wait)
            }
            state.buckets[principalKey] = mine
            state.buckets[tenantKey] = shared
            return nil
        }
    }
}

/// Refuses calls over budget with RESOURCE_EXHAUSTED, a retry-after detail and the quota that ran out. Runs after
/// `AuthInterceptor` (it needs the principal); public methods are not limited.
public struct RateLimitInterceptor: ServerInterceptor {
    let limiter: RateLimiter
    let clock: @Sendable () -> Double
    /// `chat_rate_limited_total` by `bucket` (`principal`, `service`, `tenant`); nil without metrics.
    let refusals: [String: Counter]?

    /// The name of the refusals counter.
    public static let metricName = "chat_rate_limited_total"

    /// Creates the interceptor; refusals are counted by `metrics` when given.
    public init(limiter: RateLimiter, clock: (@Sendable () -> Double)? = nil, metrics: (any MetricsFactory)? = nil) {
        self.limiter = limiter
        self.clock = clock ?? { Date().timeIntervalSince1970 }
        self.refusals = metrics.map { factory in
            Dictionary(
                uniqueKeysWithValues: ["principal", "service", "tenant"].map {
                    ($0, Counter(label: Self.metricName, dimensions: [("bucket", $0)], factory: factory))
                }
            )
        }
    }

    public func intercept(_ context: CallContext, next: @Sendable (CallContext) async throws -> Void) async throws {
        if let principal = context.principal, let (limit, wait) = self.limiter.check(principal, now: self.clock()) {
            let bucket = limit == .tenant ? "tenant" : principal.role == .service ? "service" : "principal"
            self.refusals?[bucket]?.increment()
            let milliseconds = UInt64(max(1, (wait * 1000).rounded(.up)))
            throw RPCError(
                .resourceExhausted,
                "rate limit of the \(limit.rawValue) exceeded; retry after \(milliseconds) ms",
                details: [
                    StatusDetail(detail: .retryInfo(RetryInfo(retryAfterMs: milliseconds))),
                    StatusDetail(
                        detail: .quotaFailure(
                            QuotaFailure(subject: limit.rawValue, description: "calls per second over the budget")
                        )
                    ),
                ]
            )
        }
        try await next(context)
    }
}
