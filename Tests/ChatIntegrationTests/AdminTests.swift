import ChatApp
import ChatRPC
import ChatStoreTestSupport
import ChatTestSupport
import Foundation
import Testing

/// The admin listener of an instance assembled by ChatApplication: readiness follows the database, the schema and
/// the drain; liveness does not.
@Suite("Admin listener: readiness and liveness (real PostgreSQL)")
struct AdminTests {
    @Test("/readyz: ready; unready while PostgreSQL is down, ready when it is back; unready once draining")
    func readinessFollowsTheDatabaseAndTheDrain() async throws {
        let cluster = try await PrivateCluster.start()
        let harness = try await ServiceHarness(sharing: cluster.database, admin: true)
        let admin = try #require(harness.adminPort)
        #expect(try await httpGet(port: admin, "/readyz") == (200, "ready\n"))

        #expect(try await cluster.stop() == 0)
        try await waitUntil("unready without the database") { () async throws -> Bool in
            try await httpGet(port: admin, "/readyz") == (503, "database unreachable\n")
        }
        // Liveness is the process, not its dependencies: a restart would not bring the database back.
        #expect(try await httpGet(port: admin, "/healthz") == (200, "ok\n"))
        // The failed checks are database errors of the pool's, by code and SQLSTATE class.
        let scraped = try await httpGet(port: admin, "/metrics").body
        #expect(
            scraped.split(separator: "\n").contains {
                $0.hasPrefix("chat_db_errors_total{code=\"connection_failed\",sqlstate_class=\"none\"} ")
            },
            "\(scraped)"
        )

        #expect(try await cluster.resume() == 0)
        try await waitUntil("ready with the database back", limit: .seconds(30)) { () async throws -> Bool in
            try await httpGet(port: admin, "/readyz").status == 200
        }

        await harness.server.drain()
        #expect(try await httpGet(port: admin, "/readyz") == (503, "draining: shutting down\n"))
        try await harness.stop()
        await cluster.remove()
    }

    @Test("a database whose schema is behind this binary is not ready, and says to migrate")
    func schemaBehind() async throws {
        let harness = try await ServiceHarness(admin: true)
        let admin = try #require(harness.adminPort)
        #expect(try await httpGet(port: admin, "/readyz").status == 200)
        _ = try await superuserQuery(
            harness.database,
            "DELETE FROM chat_meta.schema_migrations WHERE version = (SELECT max(version) FROM chat_meta.schema_migrations)"
        )
        let (status, body) = try await httpGet(port: admin, "/readyz")
        #expect(status == 503 && body.contains("run chatd migrate"), "\(body)")
        _ = try await superuserQuery(harness.database, "DROP FUNCTION chat.schema_version()")
        #expect(
            try await httpGet(port: admin, "/readyz") == (503, "schema older than migration 6: run chatd migrate\n")
        )
        // Unknown paths, other methods and bodies are refused; the endpoints are all there is.
        #expect(try await httpGet(port: admin, "/").status == 404)
        try await harness.stop()
    }

    @Test(
        "the admin listener's limits: GET only, no bodies, 8 KiB a request, at most 16 connections (the 17th is closed at once)"
    )
    func limits() async throws {
        let harness = try await ServiceHarness(admin: true)
        let admin = try #require(harness.adminPort)
        #expect(
            try await httpExchange(port: admin, "POST /readyz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").status
                == 405
        )
        #expect(
            try await httpExchange(port: admin, "GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
                .status == 413
        )
        // Sixteen idle connections hold every slot; the seventeenth is closed without an answer.
        let server = try #require(harness.application.admin)
        try await waitUntil("the refused requests' connections are closed") { server.openConnections == 0 }
        let held = try (0..<16).map { _ in try connectTCP(port: admin) }
        try await waitUntil("the sixteen are admitted") { server.openConnections == 16 }
        let extra = try connectTCP(port: admin)
        #expect(try await offPool { readsEndOfStream(extra) }, "the 17th connection was served")
        close(extra)
        for fd in held { close(fd) }
        // The slots free as the connections close.
        try await waitUntil("a slot is free again") { () async throws -> Bool in
            (try? await httpGet(port: admin, "/healthz").status) == 200
        }
        try await waitUntil("every slot is free") { server.openConnections == 0 }
        // A request head that never ends is cut off once it passes 8 KiB: the connection closes unanswered.
        let endless = try connectTCP(port: admin)
        let head = Array(("GET /metrics HTTP/1.1\r\nX-Filler: " + String(repeating: "a", count: 16 * 1024)).utf8)
        #expect(head.withUnsafeBytes { send(endless, $0.baseAddress, $0.count, 0) } == head.count)
        #expect(try await offPool { readsEndOfStream(endless) }, "a 16 KiB request head was held")
        close(endless)
        try await harness.stop()
    }
}

/// True when the peer closes `fd` (within 10 s) without sending anything: an orderly end, or a reset (a server
/// that closes a socket with unread bytes in it resets the connection).
private func readsEndOfStream(_ fd: Int32) -> Bool {
    var timeout = timeval(tv_sec: 10, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var byte: UInt8 = 0
    let received = recv(fd, &byte, 1, 0)
    return received == 0 || (received < 0 && errno == ECONNRESET)
}
