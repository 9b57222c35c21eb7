import ChatClient
import ChatDomain
import ChatProto
import ChatRPC
import ChatServices
import ChatTestSupport
import NIOCore
import Testing

@Suite("RPC over real TLS sockets")
struct EndToEndTests {
    @Test("Health.Check answers for the server and for a service, NOT_FOUND for an unknown one")
    func healthCheck() async throws {
        let server = try await TestServer()
        let client = try server.makeClient()
        #expect(try await client.healthCheck(HealthCheckRequest()).status == .serving)
        #expect(try await client.healthCheck(HealthCheckRequest(service: "chat.v1.MessageService")).status == .serving)
        await #expect {
            try await client.healthCheck(HealthCheckRequest(service: "nope"))
        } throws: { error in
            (error as? RPCError)?.code == .notFound
        }
        await client.close()
        try await server.stop()
    }

    @Test("Health.Watch sends the current status, then every change")
    func healthWatch() async throws {
        let server = try await TestServer()
        let client = try server.makeClient()
        let stream = try await client.healthWatch(HealthCheckRequest(service: "chat.v1.MessageService"))
        var iterator = stream.makeAsyncIterator()
        #expect(try await iterator.next()?.status == .serving)
        server.health.setStatus(.notServing, for: "chat.v1.MessageService")
        #expect(try await iterator.next()?.status == .notServing)
        server.health.setStatus(.serving, for: "chat.v1.MessageService")
        #expect(try await iterator.next()?.status == .serving)
        await client.close()
        try await server.stop()
    }

    @Test("the method listing names every registered method with its kind")
    func methodListing() async throws {
        let server = try await TestServer()
        let client = try server.makeClient()
        let listing = try await client.listMethods(ListMethodsRequest())
        let names = Set(listing.methods.map(\.name))
        #expect(names.contains("/chat.v1.HealthService/Check"))
        #expect(names.contains("/chat.v1.MethodListService/ListMethods"))
        #expect(listing.methods.first { $0.name == "/chat.v1.HealthService/Watch" }?.kind == .serverStreaming)
        #expect(listing.protocolVersion == "chat/1")
        await client.close()
        try await server.stop()
    }

    @Test("hundreds of concurrent unary calls share one connection")
    func concurrentUnary() async throws {
        let server = try await TestServer()
        let client = try server.makeClient()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<500 {
                group.addTask {
                    let body = "message \(index) " + String(repeating: "ü", count: index % 50)
                    let echoed = try await client.unary(TestMethods.echo, Message(seq: UInt64(index), body: body))
                    #expect(echoed.seq == UInt64(index) && echoed.body == body)
                }
            }
            try await group.waitForAll()
        }
        #expect(server.server.connectionCount == 1)
        await client.close()
        try await server.stop()
    }

    @Test("a message larger than one frame and one window arrives whole")
    func largeMessage() async throws {
        let server = try await TestServer()
        let client = try server.makeClient()
        // 3 MB: hundreds of frames, several times the stream window in each direction.
        let body = String(repeating: "abcdefgh", count: 375_000)
        let echoed = try await client.unary(TestMethods.echo, Message(body: body))
        #expect(echoed.body == body)
        await client.close()
        try await server.stop()
    }

    @Test("an unknown method is UNIMPLEMENTED and marked not processed")
    func unknownMethod() async throws {
        let server = try await TestServer()
        let client = try server.makeClient()
        let missing = ChatMethod<Message, Message>(path: "/test.Test/Missing", kind: .unary)
        await #expect {
            try await client.unary(missing, Message())
        } throws: { error in
            let error = error as? RPCError
            return error?.code == .unimplemented && error?.notProcessed == true
        }
        await client.close()
        try await server.stop()
    }

    @Test("a handler's unknown error becomes INTERNAL with the call id, never its text")
    func internalErrorsDoNotLeak() async throws {
        let server = try await TestServer()
        let client = try server.makeClient()
        await #expect {
            try await client.unary(TestMethods.fail, Message())
        } throws: { error in
            guard let error = error as? RPCError else { return false }
            return error.code == .internal && error.message.hasPrefix("internal error (call ")
                && !error.message.contains("hunter2") && !error.message.contains("SELECT")
        }
        await client.close()
        try await server.stop()
    }

    @Test("a deadline ends a slow handler with DEADLINE_EXCEEDED and cancels it")
    func deadline() async throws {
        let server = try await TestServer()
        let client = try server.makeClient()
        // Connected first: the time measured is the call's, not a TLS handshake's on a loaded machine.
        _ = try await client.unary(TestMethods.echo, Message())
        let clock = ContinuousClock()
        let start = clock.now
        await #expect {
            try await client.unary(
                TestMethods.sleep,
                WatchThreadRequest(threadId: "deadline", afterSeq: 10_000),
                options: CallOptions(timeout: .milliseconds(200))
            )
        } throws: { error in
            (error as? RPCError)?.code == .deadlineExceeded
        }
        // The handler would sleep 10 s; the 200 ms deadline ends the call long before (slack for a loaded machine).
        #expect(clock.now - start < .seconds(8))
        try await waitUntil { server.probe.didCancel("deadline") }
        await client.close()
        try await server.stop()
    }

    @Test("cancelling the caller's task cancels the server's handler")
    func cancellation() async throws {
        let server = try await TestServer()
        let client = try server.makeClient()
        let task = Task {
            let stream = try await client.serverStream(TestMethods.forever, WatchThreadRequest(threadId: "cancel-me"))
            for try await _ in stream {}
        }
        try await waitUntil { server.probe.didStart("cancel-me") }
        task.cancel()
        _ = await task.result
        try await waitUntil { server.probe.didCancel("cancel-me") }
        // The connection still serves calls.
        #expect(try await client.healthCheck(HealthCheckRequest()).status == .serving)
        await client.close()
        try await server.stop()
    }

    @Test("a stream of 100,000 messages to a slow reader: the handler never runs far ahead (bounded memory)")
    func backpressure() async throws {
        let server = try await TestServer()
        let client = try server.makeClient()
        let stream = try await client.serverStream(TestMethods.stream, WatchThreadRequest(afterSeq: 100_000))
        var received = 0
        var maxAhead = 0
        for try await message in stream {
            received += 1
            #expect(message.seq == UInt64(received))
            maxAhead = max(maxAhead, server.probe.streamed - received)
            if received % 5_000 == 0 {
                // A slow reader: pause, and the server must stall instead of buffering.
                try await Task.sleep(for: .milliseconds(50))
                maxAhead = max(maxAhead, server.probe.streamed - received)
            }
        }
        #expect(received == 100_000)
        // Each message is ~110 bytes on the wire; the client window (256 KiB) plus the server's per-stream buffer
        // (one window) bound what can be in flight: well under 10,000 messages.
        #expect(maxAhead < 10_000, "the handler ran \(maxAhead) messages ahead of the reader")
        await client.close()
        try await server.stop()
    }

    @Test("drain lets in-flight calls finish, ends streams with UNAVAILABLE, and refuses new calls")
    func drain() async throws {
        let server = try await TestServer()
        let client = try server.makeClient()
        #expect(try await client.healthCheck(HealthCheckRequest()).status == .serving)
        let inFlight = Task {
            try await client.unary(TestMethods.sleep, WatchThreadRequest(threadId: "in-flight", afterSeq: 500))
        }
        let streaming = Task { () -> RPCError? in
            let stream = try await client.serverStream(TestMethods.forever, WatchThreadRequest(threadId: "watcher"))
            do {
                for try await _ in stream {}
                return nil
            } catch let error as RPCError {
                return error
            }
        }
        try await waitUntil { server.probe.didStart("in-flight") && server.probe.didStart("watcher") }
        await server.server.drain()
        #expect(try await inFlight.value.body == "slept")
        #expect(try await streaming.value?.code == .unavailable)
        await #expect {
            try await client.healthCheck(HealthCheckRequest())
        } throws: { error in
            (error as? RPCError)?.code == .unavailable
        }
        await client.close()
        try await server.group.shutdownGracefully()
    }
}

/// An interceptor in the shape of authentication: refuses calls without a token, attaches a principal otherwise.
struct TokenInterceptor: ServerInterceptor {
    func intercept(_ context: CallContext, next: @Sendable (CallContext) async throws -> Void) async throws {
        guard context.header.authorization.hasPrefix("Bearer ") else {
            throw RPCError(.unauthenticated, "missing bearer token")
        }
        var context = context
        context.principal = Principal(
            userID: String(context.header.authorization.dropFirst(7)),
            tenantID: "t",
            role: .service,
            learnerScope: [],
            permissions: []
        )
        try await next(context)
    }
}

@Suite("Interceptors and reconnection")
struct InterceptorAndReconnectTests {
    @Test("an interceptor runs before every handler: it can refuse a call or hand the handler a principal")
    func interceptor() async throws {
        let server = try await TestServer(interceptors: [TokenInterceptor()])
        let client = try server.makeClient()
        await #expect {
            try await client.unary(TestMethods.whoAmI, Message())
        } throws: { error in
            (error as? RPCError)?.code == .unauthenticated
        }
        let answer = try await client.unary(
            TestMethods.whoAmI,
            Message(),
            options: CallOptions(authorization: "Bearer alice")
        )
        #expect(answer.body == "alice")
        await client.close()
        try await server.stop()
    }

    @Test("the client reconnects when the server recycles its connection")
    func reconnect() async throws {
        let server = try await TestServer()
        let client = try server.makeClient()
        #expect(try await client.healthCheck(HealthCheckRequest()).status == .serving)
        #expect(server.server.connectionCount == 1)
        await server.server.recycleConnections()
        #expect(server.server.connectionCount == 0)
        #expect(try await client.healthCheck(HealthCheckRequest()).status == .serving)
        #expect(server.server.connectionCount == 1)
        await client.close()
        try await server.stop()
    }
}
