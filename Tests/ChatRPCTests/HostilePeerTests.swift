import ChatClient
import ChatProto
import ChatRPC
import ChatTestSupport
import ChatWire
import NIOCore
import Testing

/// Each hostile peer gets its documented error, and the server goes on serving a well-behaved client.
@Suite("Hostile peers")
struct HostilePeerTests {
    /// Checks that an ordinary client is still served.
    func stillServes(_ server: TestServer) async throws {
        let client = try server.makeClient()
        #expect(try await client.healthCheck(HealthCheckRequest()).status == .serving)
        await client.close()
    }

    @Test("no preface within the timeout: GOAWAY PROTOCOL_ERROR and close")
    func noPreface() async throws {
        let server = try await TestServer(configure: { $0.prefaceTimeout = .milliseconds(300) })
        let peer = try await RawPeer(port: server.port, group: server.group)
        let frames = try await peer.collectUntilClosed()
        #expect(goAway(in: frames)?.code == .protocolError)
        try await self.stillServes(server)
        try await server.stop()
    }

    @Test("garbage after the handshake: GOAWAY PROTOCOL_ERROR (bad preface) and close")
    func garbage() async throws {
        let server = try await TestServer()
        let peer = try await RawPeer(port: server.port, group: server.group)
        try await peer.send(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: chatd\r\n\r\n"))
        let frames = try await peer.collectUntilClosed()
        #expect(goAway(in: frames)?.code == .protocolError)
        try await self.stillServes(server)
        try await server.stop()
    }

    @Test("a frame whose length exceeds MAX_FRAME_SIZE: GOAWAY FRAME_SIZE_ERROR, decided from the header alone")
    func oversizedLength() async throws {
        let server = try await TestServer()
        let peer = try await RawPeer(port: server.port, group: server.group)
        try await peer.greet()
        var header = ByteBuffer()
        header.writeFrameHeader(length: (1 << 24) - 1, type: .data, flags: 0, stream: 1)
        try await peer.send(header)  // nothing follows: the server must not wait for 16 MB
        let frames = try await peer.collectUntilClosed()
        #expect(goAway(in: frames)?.code == .frameSizeError)
        try await self.stillServes(server)
        try await server.stop()
    }

    @Test("an oversized message length prefix: TRAILERS RESOURCE_EXHAUSTED; the connection survives")
    func oversizedMessage() async throws {
        let server = try await TestServer()
        let peer = try await RawPeer(port: server.port, group: server.group)
        try await peer.greet()
        var envelope = ByteBuffer()
        envelope.writeInteger(UInt8(0))
        envelope.writeInteger(UInt32(0xFFFF_FFF0))
        try await peer.send([
            try RawPeer.headers(1, method: "/test.Test/Echo"),
            .data(stream: 1, payload: envelope, endStream: false),
        ])
        let trailers = await peer.next { if case .trailers(1, _) = $0 { true } else { false } }
        guard case .trailers(_, let payload)? = trailers else {
            Issue.record("no TRAILERS for the oversized message")
            return
        }
        let status = try payload.withUnsafeReadableBytes { try CallStatus(serializedBytes: $0) }
        #expect(status.code == .resourceExhausted)
        // Same connection, next stream: served.
        try await peer.send([
            try RawPeer.headers(3, method: "/chat.v1.HealthService/Check"),
            try RawPeer.request(3, HealthCheckRequest()),
        ])
        let next = await peer.next { if case .trailers(3, _) = $0 { true } else { false } }
        guard case .trailers(_, let okPayload)? = next else {
            Issue.record("the connection did not survive")
            return
        }
        #expect(try okPayload.withUnsafeReadableBytes { try CallStatus(serializedBytes: $0) }.code == .ok)
        try await server.stop()
    }

    @Test("stream id reuse: GOAWAY PROTOCOL_ERROR")
    func streamIDReuse() async throws {
        let server = try await TestServer()
        let peer = try await RawPeer(port: server.port, group: server.group)
        try await peer.greet()
        try await peer.send([
            try RawPeer.headers(5, method: "/chat.v1.HealthService/Check"),
            try RawPeer.request(5, HealthCheckRequest()),
        ])
        _ = await peer.next { if case .trailers(5, _) = $0 { true } else { false } }
        try await peer.send([try RawPeer.headers(5, method: "/chat.v1.HealthService/Check")])
        let frames = try await peer.collectUntilClosed()
        #expect(goAway(in: frames)?.code == .protocolError)
        try await self.stillServes(server)
        try await server.stop()
    }

    @Test("a flood of open-and-cancel: GOAWAY ENHANCE_YOUR_CALM")
    func openAndCancelFlood() async throws {
        // A lower limit than the default 1,000 per second, so that the flood fits in one second of a loaded machine.
        let server = try await TestServer(configure: { $0.connection.cancelsPerSecondAllowed = 100 })
        let peer = try await RawPeer(port: server.port, group: server.group)
        try await peer.greet()
        var frames: [Frame] = []
        var stream: StreamID = 1
        for _ in 0..<300 {
            frames.append(try RawPeer.headers(stream, method: "/test.Test/Forever"))
            frames.append(.cancel(stream: stream, code: .cancel))
            stream += 2
        }
        try await peer.send(frames)
        let received = try await peer.collectUntilClosed()
        #expect(goAway(in: received)?.code == .enhanceYourCalm)
        try await self.stillServes(server)
        try await server.stop()
    }

    @Test("a flood of pings: GOAWAY ENHANCE_YOUR_CALM too_many_pings")
    func pingFlood() async throws {
        let server = try await TestServer()
        let peer = try await RawPeer(port: server.port, group: server.group)
        try await peer.greet()
        try await peer.send((0..<10).map { Frame.ping(payload: UInt64($0), ack: false) })
        let frames = try await peer.collectUntilClosed()
        let reason = goAway(in: frames)
        #expect(reason?.code == .enhanceYourCalm && reason?.debug == "too_many_pings")
        try await self.stillServes(server)
        try await server.stop()
    }

    @Test("streams beyond MAX_CONCURRENT_STREAMS are refused, not processed")
    func tooManyStreams() async throws {
        let server = try await TestServer()
        let peer = try await RawPeer(port: server.port, group: server.group)
        try await peer.greet()
        var frames: [Frame] = []
        for index in 0..<101 {
            let stream = StreamID(2 * index + 1)
            frames.append(try RawPeer.headers(stream, method: "/test.Test/Forever"))
            frames.append(try RawPeer.request(stream, WatchThreadRequest(threadId: "s\(index)")))
        }
        try await peer.send(frames)
        let refused = await peer.next { if case .cancel(201, .refusedStream) = $0 { true } else { false } }
        #expect(refused != nil)
        try await server.stop()
    }

    @Test("the server enforces the deadline in the call header by itself")
    func serverDeadline() async throws {
        let server = try await TestServer()
        let peer = try await RawPeer(port: server.port, group: server.group)
        try await peer.greet()
        try await peer.send([
            try RawPeer.headers(1, method: "/test.Test/Sleep", timeoutMicros: 200_000),
            try RawPeer.request(1, WatchThreadRequest(threadId: "raw-deadline", afterSeq: 10_000)),
        ])
        let trailers = await peer.next { if case .trailers(1, _) = $0 { true } else { false } }
        guard case .trailers(_, let payload)? = trailers else {
            Issue.record("no TRAILERS")
            return
        }
        #expect(try payload.withUnsafeReadableBytes { try CallStatus(serializedBytes: $0) }.code == .deadlineExceeded)
        try await waitUntil { server.probe.didCancel("raw-deadline") }
        try await server.stop()
    }

    @Test("a request with two messages, or none, is INVALID_ARGUMENT")
    func requestCardinality() async throws {
        let server = try await TestServer()
        let peer = try await RawPeer(port: server.port, group: server.group)
        try await peer.greet()
        var two = ByteBuffer()
        try two.writeEnvelope(HealthCheckRequest())
        try two.writeEnvelope(HealthCheckRequest())
        try await peer.send([
            try RawPeer.headers(1, method: "/chat.v1.HealthService/Check"),
            .data(stream: 1, payload: two, endStream: true),
            try RawPeer.headers(3, method: "/chat.v1.HealthService/Check"),
            .data(stream: 3, payload: ByteBuffer(), endStream: true),
        ])
        for stream: StreamID in [1, 3] {
            let trailers = await peer.next { if case .trailers(stream, _) = $0 { true } else { false } }
            guard case .trailers(_, let payload)? = trailers else {
                Issue.record("no TRAILERS on \(stream)")
                return
            }
            #expect(
                try payload.withUnsafeReadableBytes { try CallStatus(serializedBytes: $0) }.code == .invalidArgument
            )
        }
        try await server.stop()
    }
}
