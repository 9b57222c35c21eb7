import Foundation
import NIOCore
import NIOEmbedded
import NIOPosix
import Testing

@testable import ChatTLS

/// The certificates scripts/test made (scripts/lib/tls.sh).
enum TestCertificates {
    static var directory: String {
        get throws {
            guard let dir = ProcessInfo.processInfo.environment["CHAT_TEST_TLS_DIR"] else {
                throw Missing()
            }
            return dir
        }
    }

    struct Missing: Error, CustomStringConvertible {
        var description: String { "CHAT_TEST_TLS_DIR is not set: run the tests through scripts/test" }
    }

    static func path(_ name: String) throws -> String { "\(try Self.directory)/\(name)" }

    static func server(clientCA: Bool = false, require: Bool = false) throws -> TLSContext {
        try TLSContext(
            configuration: .server(
                certificate: try Self.path("server.pem"),
                privateKey: try Self.path("server.key"),
                clientCA: clientCA ? try Self.path("ca.pem") : nil,
                requireClientCertificate: require
            )
        )
    }

    static func client(certificate: String? = nil) throws -> TLSContext {
        try TLSContext(
            configuration: .client(
                trustRoots: try Self.path("ca.pem"),
                certificate: try certificate.map { try Self.path("\($0).pem") },
                privateKey: try certificate.map { try Self.path("\($0).key") }
            )
        )
    }
}

/// Records what reaches the top of a pipeline: plaintext, TLS events, errors, and the end.
final class Recorder: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer

    let received: EventLoopPromise<ByteBuffer>?
    let expectedBytes: Int
    let handshake: EventLoopPromise<TLSEvent>
    let closed: EventLoopPromise<[any Error]>
    private var buffer = ByteBuffer()
    private var errors: [any Error] = []
    let echo: Bool

    init(eventLoop: any EventLoop, expectedBytes: Int = 0, echo: Bool = false) {
        self.received = expectedBytes > 0 ? eventLoop.makePromise() : nil
        self.expectedBytes = expectedBytes
        self.handshake = eventLoop.makePromise()
        self.closed = eventLoop.makePromise()
        self.echo = echo
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = self.unwrapInboundIn(data)
        if self.echo {
            context.writeAndFlush(NIOAny(bytes), promise: nil)
        }
        self.buffer.writeBuffer(&bytes)
        if self.buffer.readableBytes >= self.expectedBytes { self.received?.succeed(self.buffer) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSEvent { self.handshake.succeed(event) }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.errors.append(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        struct ClosedBeforeHandshake: Error {}
        self.handshake.fail(ClosedBeforeHandshake())
        self.received?.fail(ClosedBeforeHandshake())
        self.closed.succeed(self.errors)
    }
}

/// A TLS echo server on 127.0.0.1 with a fresh port; `recorders` sees each accepted connection.
final class EchoServer: @unchecked Sendable {
    let group: MultiThreadedEventLoopGroup
    let channel: any Channel
    private let list = RecorderList()

    init(context: TLSContext, group: MultiThreadedEventLoopGroup) async throws {
        self.group = group
        let list = self.list
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                let recorder = Recorder(eventLoop: channel.eventLoop, echo: true)
                list.append(recorder)
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(TLSHandler(context: context))
                    try channel.pipeline.syncOperations.addHandler(recorder)
                }
            }
        self.channel = try await bootstrap.bind(host: "127.0.0.1", port: 0).get()
    }

    var port: Int { self.channel.localAddress!.port! }

    var accepted: [Recorder] { self.list.all }

    func stop() async throws {
        try await self.channel.close()
    }
}

/// The recorders of accepted connections, filled from event loops.
final class RecorderList: @unchecked Sendable {
    private let lock = NSLock()
    private var recorders: [Recorder] = []

    func append(_ recorder: Recorder) {
        self.lock.withLock { self.recorders.append(recorder) }
    }

    var all: [Recorder] { self.lock.withLock { self.recorders } }
}

/// Connects a TLS client and returns its channel and recorder.
func connectClient(
    port: Int,
    context: TLSContext,
    group: MultiThreadedEventLoopGroup,
    serverName: String = "127.0.0.1",
    expectedBytes: Int = 0
) async throws -> (any Channel, Recorder) {
    let list = RecorderList()
    let channel = try await ClientBootstrap(group: group)
        .channelInitializer { channel in
            let made = Recorder(eventLoop: channel.eventLoop, expectedBytes: expectedBytes)
            list.append(made)
            return channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(
                    TLSHandler(context: context, serverName: serverName),
                    name: "tls"
                )
                try channel.pipeline.syncOperations.addHandler(made)
            }
        }
        .connect(host: "127.0.0.1", port: port).get()
    return (channel, list.all[0])
}

@Suite("TLS over memory BIOs", .serialized)
struct TLSHandlerTests {
    @Test("handshake with TLS 1.3 and ALPN chat/1, then data both ways, then a clean close")
    func echo() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await EchoServer(context: try TestCertificates.server(), group: group)
        let payload = ByteBuffer(repeating: 0x5A, count: 100_000)
        let (channel, recorder) = try await connectClient(
            port: server.port,
            context: try TestCertificates.client(),
            group: group,
            expectedBytes: payload.readableBytes
        )
        // Written before the handshake completes: buffered, then sent.
        try await channel.writeAndFlush(payload)
        // The client sees the server's verified name.
        #expect(
            try await recorder.handshake.futureResult.get()
                == .handshakeCompleted(applicationProtocol: "chat/1", peerIdentity: "localhost")
        )
        #expect(try await recorder.received!.futureResult.get() == payload)
        try await channel.close()
        let clientErrors = try await recorder.closed.futureResult.get()
        #expect(clientErrors.isEmpty)
        // The server saw close_notify: no unclean-shutdown error on its side.
        let serverErrors = try await server.accepted[0].closed.futureResult.get()
        #expect(serverErrors.isEmpty, "\(serverErrors)")
        try await server.stop()
        try await group.shutdownGracefully()
    }

    @Test("mTLS: a client certificate from the configured CA yields the peer identity")
    func mutualTLS() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await EchoServer(context: try TestCertificates.server(clientCA: true), group: group)
        let (channel, recorder) = try await connectClient(
            port: server.port,
            context: try TestCertificates.client(certificate: "client"),
            group: group,
            expectedBytes: 1
        )
        try await channel.writeAndFlush(ByteBuffer(bytes: [1]))
        _ = try await recorder.received!.futureResult.get()
        let serverEvent = try await server.accepted[0].handshake.futureResult.get()
        #expect(serverEvent == .handshakeCompleted(applicationProtocol: "chat/1", peerIdentity: "service:dev-client"))
        try await channel.close()
        try await server.stop()
        try await group.shutdownGracefully()
    }

    @Test("mTLS: a certificate from another CA is refused; so is none, when a certificate is required")
    func mutualTLSRefused() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let optional = try await EchoServer(context: try TestCertificates.server(clientCA: true), group: group)
        let required = try await EchoServer(
            context: try TestCertificates.server(clientCA: true, require: true),
            group: group
        )
        for (server, certificate) in [(optional, "rogue-client"), (required, nil), (required, "rogue-client")] {
            let (channel, recorder) = try await connectClient(
                port: server.port,
                context: try TestCertificates.client(certificate: certificate),
                group: group,
                expectedBytes: 1
            )
            channel.writeAndFlush(ByteBuffer(bytes: [1]), promise: nil)
            await #expect(throws: (any Error).self) { try await recorder.received!.futureResult.get() }
            _ = try await recorder.closed.futureResult.get()
        }
        try await optional.stop()
        try await required.stop()
        try await group.shutdownGracefully()
    }

    @Test("mTLS: with an optional client certificate, a client without one connects with no identity")
    func mutualTLSOptional() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await EchoServer(context: try TestCertificates.server(clientCA: true), group: group)
        let (channel, recorder) = try await connectClient(
            port: server.port,
            context: try TestCertificates.client(),
            group: group,
            expectedBytes: 1
        )
        try await channel.writeAndFlush(ByteBuffer(bytes: [1]))
        _ = try await recorder.received!.futureResult.get()
        let serverEvent = try await server.accepted[0].handshake.futureResult.get()
        #expect(serverEvent == .handshakeCompleted(applicationProtocol: "chat/1", peerIdentity: nil))
        try await channel.close()
        try await server.stop()
        try await group.shutdownGracefully()
    }

    @Test("a client that does not trust the server's CA, or expects another name, fails the handshake")
    func serverVerification() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await EchoServer(context: try TestCertificates.server(), group: group)
        let untrusting = try TLSContext(configuration: .client(trustRoots: try TestCertificates.path("rogue-ca.pem")))
        for (context, name) in [(untrusting, "127.0.0.1"), (try TestCertificates.client(), "chat.example.org")] {
            let (_, recorder) = try await connectClient(
                port: server.port,
                context: context,
                group: group,
                serverName: name
            )
            await #expect(throws: (any Error).self) { try await recorder.handshake.futureResult.get() }
            let errors = try await recorder.closed.futureResult.get()
            #expect(errors.contains { ($0 as? TLSError)?.code == .handshakeFailed }, "\(errors)")
        }
        try await server.stop()
        try await group.shutdownGracefully()
    }

    @Test("a client that offers another ALPN protocol is refused")
    func wrongALPN() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await EchoServer(context: try TestCertificates.server(), group: group)
        var configuration = TLSConfiguration.client(trustRoots: try TestCertificates.path("ca.pem"))
        configuration.applicationProtocols = ["h2"]
        let client = try TLSContext(configuration: configuration)
        let (_, recorder) = try await connectClient(port: server.port, context: client, group: group)
        await #expect(throws: (any Error).self) { try await recorder.handshake.futureResult.get() }
        _ = try await recorder.closed.futureResult.get()
        let serverErrors = try await server.accepted[0].closed.futureResult.get()
        #expect(
            serverErrors.contains {
                ($0 as? TLSError)?.code == .noApplicationProtocol || ($0 as? TLSError)?.code == .handshakeFailed
            }
        )
        try await server.stop()
        try await group.shutdownGracefully()
    }

    @Test("a client that offers no ALPN at all gets the no_application_protocol alert")
    func noALPN() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await EchoServer(context: try TestCertificates.server(), group: group)
        var configuration = TLSConfiguration.client(trustRoots: try TestCertificates.path("ca.pem"))
        configuration.applicationProtocols = []
        let client = try TLSContext(configuration: configuration)
        let (_, recorder) = try await connectClient(port: server.port, context: client, group: group)
        await #expect(throws: (any Error).self) { try await recorder.handshake.futureResult.get() }
        // The client reads the server's alert: OpenSSL names it.
        let clientErrors = try await recorder.closed.futureResult.get()
        #expect(clientErrors.contains { ($0 as? TLSError)?.code == .noApplicationProtocol }, "\(clientErrors)")
        try await server.stop()
        try await group.shutdownGracefully()
    }

    @Test("plaintext is refused and the connection closed")
    func plaintextRefused() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await EchoServer(context: try TestCertificates.server(), group: group)
        let closed = group.next().makePromise(of: Void.self)
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(CloseWatcher(closed: closed))
                }
            }
            .connect(host: "127.0.0.1", port: server.port).get()
        try await channel.writeAndFlush(ByteBuffer(bytes: [0x43, 0x48, 0x41, 0x54, 0x0D, 0x0A, 0x01, 0x0A]))
        try await closed.futureResult.get()
        let errors = try await server.accepted[0].closed.futureResult.get()
        #expect(errors.contains { ($0 as? TLSError)?.code == .handshakeFailed })
        try await server.stop()
        try await group.shutdownGracefully()
    }

    @Test("a peer that says nothing is closed after the handshake timeout")
    func handshakeTimeout() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var configuration = TLSConfiguration.server(
            certificate: try TestCertificates.path("server.pem"),
            privateKey: try TestCertificates.path("server.key")
        )
        configuration.handshakeTimeoutSeconds = 1
        let server = try await EchoServer(context: try TLSContext(configuration: configuration), group: group)
        let closed = group.next().makePromise(of: Void.self)
        _ = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(CloseWatcher(closed: closed))
                }
            }
            .connect(host: "127.0.0.1", port: server.port).get()
        try await closed.futureResult.get()
        let errors = try await server.accepted[0].closed.futureResult.get()
        #expect(errors.contains { ($0 as? TLSError)?.code == .handshakeTimeout })
        try await server.stop()
        try await group.shutdownGracefully()
    }

    @Test("an end of stream without close_notify is reported as an unclean shutdown")
    func uncleanShutdown() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await EchoServer(context: try TestCertificates.server(), group: group)
        let (channel, recorder) = try await connectClient(
            port: server.port,
            context: try TestCertificates.client(),
            group: group,
            expectedBytes: 1
        )
        try await channel.writeAndFlush(ByteBuffer(bytes: [7]))
        _ = try await recorder.received!.futureResult.get()
        // Close the TCP connection underneath TLS: without the TLS handler, no close_notify is sent.
        try await channel.pipeline.removeHandler(name: "tls").get()
        try await channel.close()
        let errors = try await server.accepted[0].closed.futureResult.get()
        #expect(errors.contains { ($0 as? TLSError)?.code == .uncleanShutdown }, "\(errors)")
        try await server.stop()
        try await group.shutdownGracefully()
    }
}

/// Completes a promise when the channel closes.
final class CloseWatcher: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    let closed: EventLoopPromise<Void>

    init(closed: EventLoopPromise<Void>) {
        self.closed = closed
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.closed.succeed()
    }
}

/// Two TLS handlers on EmbeddedChannels, the bytes carried between them by hand.
@Suite("TLS records per flush (EmbeddedChannel)")
struct TLSCoalescingTests {
    /// Carries every outbound buffer of `from` into `to`; returns the buffers carried.
    @discardableResult
    static func carry(_ from: EmbeddedChannel, _ to: EmbeddedChannel) throws -> [ByteBuffer] {
        var carried: [ByteBuffer] = []
        while let buffer = try from.readOutbound(as: ByteBuffer.self) {
            carried.append(buffer)
            try to.writeInbound(buffer)
        }
        return carried
    }

    /// The TLS records in `buffers` (content type 23: application data) and their count.
    static func applicationRecords(_ buffers: [ByteBuffer]) -> Int {
        var count = 0
        for var buffer in buffers {
            while let header = buffer.readBytes(length: 5) {
                let length = Int(header[3]) << 8 | Int(header[4])
                buffer.moveReaderIndex(forwardBy: min(length, buffer.readableBytes))
                if header[0] == 23 { count += 1 }
            }
        }
        return count
    }

    @Test(
        "the writes of one flush leave as one TLS record in one buffer; past 64 KiB the waiting writes go at once; the plaintext arrives whole"
    )
    func recordsPerFlush() throws {
        let server = EmbeddedChannel(handler: TLSHandler(context: try TestCertificates.server()))
        let client = EmbeddedChannel(
            handler: TLSHandler(context: try TestCertificates.client(), serverName: "localhost")
        )
        try client.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try server.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        for _ in 0..<6 {
            try Self.carry(client, server)
            try Self.carry(server, client)
        }
        // A first exchange, so that whatever OpenSSL sends after the handshake (session tickets) has gone.
        server.writeAndFlush(ByteBuffer(string: "x"), promise: nil)
        try Self.carry(server, client)
        #expect(try client.readInbound(as: ByteBuffer.self).map { String(buffer: $0) } == "x")

        // Three frames, one flush: one buffer, one record.
        for text in ["HEADERS", "DATA", "TRAILERS"] {
            server.write(ByteBuffer(string: text), promise: nil)
        }
        server.flush()
        let flushed = try Self.carry(server, client)
        #expect(flushed.count == 1 && Self.applicationRecords(flushed) == 1, "\(flushed.count) buffers")
        var received = ByteBuffer()
        while var part = try client.readInbound(as: ByteBuffer.self) { received.writeBuffer(&part) }
        #expect(String(buffer: received) == "HEADERSDATATRAILERS")

        // Three writes of just over half the limit: the second brings the waiting bytes past it and is encrypted
        // with the first at once; the third waits for the flush. Two buffers, every promise kept.
        let half = TLSHandler.coalesceLimit / 2 + 1
        let promises = (0..<3).map { _ in server.eventLoop.makePromise(of: Void.self) }
        for promise in promises { server.write(ByteBuffer(repeating: 7, count: half), promise: promise) }
        server.flush()
        let buffers = try Self.carry(server, client)
        #expect(buffers.count == 2, "\(buffers.count) buffers")
        for promise in promises { try promise.futureResult.wait() }
        var total = 0
        while let part = try client.readInbound(as: ByteBuffer.self) { total += part.readableBytes }
        #expect(total == 3 * half)
        _ = try? server.finish()
        _ = try? client.finish()
    }
}
