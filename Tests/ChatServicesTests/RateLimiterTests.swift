import ChatAuth
import ChatDomain
import ChatProto
import Testing

@testable import ChatServices

func principal(_ user: String, tenant: String = "t1", role: Role = .guardian) -> Principal {
    Principal(userID: user, tenantID: tenant, role: role, learnerScope: [], permissions: [])
}

@Suite("Rate limiting (token buckets)")
struct RateLimiterTests {
    @Test("a bucket allows its burst, then one call per 1/rate seconds")
    func bucket() {
        var bucket = TokenBucket(rate: 10, burst: 3, now: 0)
        #expect(bucket.take(now: 0) == nil)
        #expect(bucket.take(now: 0) == nil)
        #expect(bucket.take(now: 0) == nil)
        let wait = bucket.take(now: 0)
        #expect(wait != nil && abs(wait! - 0.1) < 1e-9)
        #expect(bucket.take(now: 0.05) != nil)
        #expect(bucket.take(now: 0.1) == nil)
        // Idle time refills up to the burst, never beyond.
        for _ in 0..<3 { #expect(bucket.take(now: 100) == nil) }
        #expect(bucket.take(now: 100) != nil)
    }

    @Test("with three instances each enforces a third of the rate and the burst; back to one, the whole again")
    func share() {
        let limiter = RateLimiter(
            configuration: .init(perPrincipal: (30, 30), perService: (1e9, 1e9), perTenant: (1e9, 1e9))
        )
        limiter.setInstances(3)
        var admitted = 0
        for _ in 0..<100 where limiter.check(principal("a"), now: 0) == nil { admitted += 1 }
        #expect(admitted == 10, "a third of the burst")
        // One second later: a third of the rate.
        admitted = 0
        for _ in 0..<100 where limiter.check(principal("a"), now: 1) == nil { admitted += 1 }
        #expect(admitted == 10)
        // Alone again: the tokens earned at a third of the rate are kept (two seconds: 20), the burst is whole.
        limiter.setInstances(1)
        admitted = 0
        for _ in 0..<100 where limiter.check(principal("a"), now: 3) == nil { admitted += 1 }
        #expect(admitted == 20)
        admitted = 0
        for _ in 0..<100 where limiter.check(principal("a"), now: 13) == nil { admitted += 1 }
        #expect(admitted == 30)
        limiter.setInstances(0)
        #expect(limiter.instances == 1, "never fewer than this one")
        #expect(RateLimiter.share((2, 2), instances: 5) == (0.4, 1), "a burst of one at least")
    }

    @Test("principals have their own budget; a tenant's budget is shared; services get their own")
    func limiter() {
        let limiter = RateLimiter(
            configuration: .init(perPrincipal: (1, 2), perService: (1, 5), perTenant: (1, 4))
        )
        #expect(limiter.check(principal("a"), now: 0) == nil)
        #expect(limiter.check(principal("a"), now: 0) == nil)
        #expect(limiter.check(principal("a"), now: 0)?.0 == .principal)
        // Another user of the same tenant has a budget of their own, until the tenant's runs out.
        #expect(limiter.check(principal("b"), now: 0) == nil)
        #expect(limiter.check(principal("b"), now: 0) == nil)
        #expect(limiter.check(principal("c"), now: 0)?.0 == .tenant)
        // Another tenant is unaffected.
        #expect(limiter.check(principal("a", tenant: "t2"), now: 0) == nil)
        // A service has a larger budget of its own.
        let service = principal("svc", tenant: "t3", role: .service)
        for _ in 0..<4 { #expect(limiter.check(service, now: 0) == nil) }
        #expect(limiter.check(service, now: 0)?.0 == .tenant)
    }
}
