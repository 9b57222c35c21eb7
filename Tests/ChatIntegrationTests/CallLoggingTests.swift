import ChatClient
import ChatDomain
import ChatProto
import ChatRPC
import ChatStoreTestSupport
import ChatTestSupport
import Logging
import Testing

/// Every line a handler logs names its call and tenant, with the keys defined once in `LogKey`, and never carries
/// what a caller wrote.
@Suite("Call logging (real PostgreSQL, real TLS)")
struct CallLoggingTests {
    @Test("privacy actions log with the call's id, method and tenant, and without the caller's reason")
    func privacyLinesCarryTheCall() async throws {
        let log = RecordingLog()
        let harness = try await ServiceHarness(logger: log.logger(level: .info))
        let officer = try harness.client(.privacyOfficer, user: "dpo-log")
        let reason = "court order 2026-881 about a named child"
        _ = try await officer.placeLegalHold(PlaceLegalHoldRequest(learnerId: Fixture.learnerA1, reason: reason))
        await #expect(throws: RPCError.self) {
            _ = try await officer.eraseLearnerData(EraseLearnerDataRequest(learnerId: Fixture.learnerA1))
        }
        try await harness.stop()

        let placed = try #require(log.lines.first { $0.message == "legal hold placed" })
        #expect(placed.metadata[LogKey.method] == ChatMethods.PrivacyService.placeLegalHold.path)
        #expect(placed.metadata[LogKey.tenant] == Fixture.tenantA)
        #expect(UInt64(placed.metadata[LogKey.callID] ?? "") != nil)
        let refused = try #require(log.lines.first { $0.message == "erasure refused: legal hold" })
        #expect(refused.metadata[LogKey.method] == ChatMethods.PrivacyService.eraseLearnerData.path)
        #expect(refused.metadata[LogKey.tenant] == Fixture.tenantA)
        #expect(refused.metadata[LogKey.callID] != placed.metadata[LogKey.callID])
        // No line carries the reason, in its message or its metadata.
        for line in log.lines {
            #expect(!line.message.contains(reason) && !line.metadata.values.contains { $0.contains(reason) })
        }
    }
}
