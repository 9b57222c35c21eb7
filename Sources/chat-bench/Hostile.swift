import ArgumentParser
import ChatProto
import ChatTLS
import ChatWire
import Foundation
import NIOCore
import NIOPosix

/// A peer that speaks raw frames over TLS and can stop reading its socket: the hostile patterns of the memory
/// scenario (what a fuzzing or malicious client does, not what the Swift client would).
final class RawFramePeer: Sendable {
    let channel: any Channel

    /// Connects and completes the TLS handshake, then sends the preface and `settings`.
    init(host: String, port: Int, tls: TLSContext, group: any EventLoopGroup, settings: [Setting]) async throws {
        let ready = group.next().makePromise(of: Void.self)
        self.channel = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.so_rcvbuf), value: 16 * 1024)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(TLSHandler(context: tls, serverName: host))
                    try channel.pipeline.syncOperations.addHandler(Discard(ready: ready))
                }
            }
            .connect(host: host, port: port)
            .get()
        try await ready.futureResult.get()
        var greeting = ByteBuffer(bytes: WireConstants.preface)
        greeting.writeFrame(.settings(settings))
        try await self.channel.writeAndFlush(greeting)
    }

    func send(_ frames: [Frame]) async throws {
        var buffer = ByteBuffer()
        for frame in frames { buffer.writeFrame(frame) }
        try await self.channel.writeAndFlush(buffer)
    }

    func stopReading() async throws { try await self.channel.setOption(.autoRead, value: false) }

    /// Closes the TCP connection without TLS close_notify.
    func abort() async throws {
        let tls = try await self.channel.pipeline.handler(type: TLSHandler.self).get()
        try await self.channel.pipeline.removeHandler(tls).get()
        try await self.channel.close()
    }

    func close() async { try? await self.channel.close() }

    static func headers(_ stream: StreamID, _ method: String, authorization: String?) throws -> Frame {
        let header = try CallHeader(method: method, authorization: authorization ?? "").serializedBytes()
        return .headers(stream: stream, payload: ByteBuffer(bytes: header))
    }

    static func request(_ stream: StreamID, _ message: some ProtoMessage) throws -> Frame {
        var payload = ByteBuffer()
        try payload.writeEnvelope(message)
        return .data(stream: stream, payload: payload, endStream: true)
    }

    /// Reads and drops whatever the server sends; tells when the handshake is done.
    private final class Discard: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let ready: EventLoopPromise<Void>
        init(ready: EventLoopPromise<Void>) { self.ready = ready }
        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if event is TLSEvent { self.ready.succeed() }
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
        func channelInactive(context: ChannelHandlerContext) {
            struct Closed: Error {}
            self.ready.fail(Closed())
        }
    }
}

extension ChatBench {
    /// The hostile patterns of issue 14, one after another against `--address`, with the server's RSS (of
    /// `--server-pid`) before and after each: 10 WatchThread streams replaying `--thread-id` to a peer that
    /// advertises 2³¹−1 windows and never reads (held `--duration` seconds); 20,000 unread unary calls; four half-sent
    /// 4 MiB messages then an unclean close, 10 times; 28,000 plain TCP connect/close cycles; 20 connections closed
    /// mid-call without close_notify.
    func runHostile() async throws {
        guard let pid = self.serverPID else { throw ValidationError("--scenario hostile needs --server-pid") }
        guard let thread = self.threadID else { throw ValidationError("--scenario hostile needs --thread-id") }
        let (host, port) = try Self.split(self.address)
        let tls = try TLSContext(configuration: .client(trustRoots: self.ca))
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let authorization = self.token.map { "Bearer \($0)" }
        let huge = [
            Setting(id: ChatSettings.ID.initialWindowSize, value: UInt32(WireConstants.maxWindow)),
            Setting(id: ChatSettings.ID.connectionWindow, value: UInt32(WireConstants.maxWindow)),
        ]
        func peer(_ settings: [Setting] = []) async throws -> RawFramePeer {
            try await RawFramePeer(host: host, port: port, tls: tls, group: group, settings: settings)
        }
        var rows: [(String, Int, Int, Int)] = []
        func measure(_ name: String, _ body: () async throws -> Int) async throws {
            let before = try Self.residentKilobytes(pid)
            let during = try await body()
            try await Task.sleep(for: .seconds(2))
            let after = try Self.residentKilobytes(pid)
            rows.append((name, before, during, after))
            print(
                String(
                    format: "%-34@ RSS before %7d KiB, while held %7d KiB (%+7d), after %7d KiB (%+7d)",
                    name as NSString,
                    before,
                    during,
                    during - before,
                    after,
                    after - before
                )
            )
        }

        try await measure("non-reading WatchThread x10") {
            let hostile = try await peer(huge)
            try await hostile.stopReading()
            var frames: [Frame] = []
            for index in 0..<10 {
                let stream = StreamID(2 * index + 1)
                frames.append(
                    try RawFramePeer.headers(stream, "/chat.v1.LiveService/WatchThread", authorization: authorization)
                )
                frames.append(try RawFramePeer.request(stream, WatchThreadRequest(threadId: thread)))
            }
            try await hostile.send(frames)
            try await Task.sleep(for: .milliseconds(Int64(self.duration * 1000)))
            let held = try Self.residentKilobytes(pid)
            try await hostile.abort()
            return held
        }
        try await measure("non-reading unary x20000") {
            let hostile = try await peer(huge)
            try await hostile.stopReading()
            var stream: StreamID = 1
            for _ in 0..<200 {
                var frames: [Frame] = []
                for _ in 0..<100 {
                    frames.append(try RawFramePeer.headers(stream, "/chat.v1.HealthService/Check", authorization: nil))
                    frames.append(try RawFramePeer.request(stream, HealthCheckRequest()))
                    stream += 2
                }
                do { try await hostile.send(frames) } catch { break }  // the server may give up on us
            }
            try await Task.sleep(for: .seconds(2))
            let held = try Self.residentKilobytes(pid)
            try await hostile.abort()
            return held
        }
        try await measure("half-sent 4 MiB x4, unclean, x10") {
            var prefix = ByteBuffer()
            prefix.writeInteger(UInt8(0))
            prefix.writeInteger(UInt32(4 << 20))
            let chunk = ByteBuffer(repeating: 0x61, count: 16_000)
            var held = 0
            for _ in 0..<10 {
                let hostile = try await peer()
                for index in 0..<4 {
                    let stream = StreamID(2 * index + 1)
                    var frames = [
                        try RawFramePeer.headers(stream, "/chat.v1.HealthService/Check", authorization: nil),
                        Frame.data(stream: stream, payload: prefix, endStream: false),
                    ]
                    for _ in 0..<128 { frames.append(.data(stream: stream, payload: chunk, endStream: false)) }
                    do { try await hostile.send(frames) } catch { break }
                }
                try await Task.sleep(for: .milliseconds(200))
                held = max(held, try Self.residentKilobytes(pid))
                try? await hostile.abort()
            }
            return held
        }
        try await measure("TCP connect/close x28000") {
            for _ in 0..<28_000 {
                let channel = try await ClientBootstrap(group: group).connect(host: host, port: port).get()
                try? await channel.close()
            }
            return try Self.residentKilobytes(pid)
        }
        try await measure("mid-call, no close_notify x20") {
            var peers: [RawFramePeer] = []
            for _ in 0..<20 {
                let hostile = try await peer()
                try await hostile.send([
                    try RawFramePeer.headers(1, "/chat.v1.LiveService/WatchThread", authorization: authorization),
                    try RawFramePeer.request(1, WatchThreadRequest(threadId: thread)),
                ])
                peers.append(hostile)
            }
            try await Task.sleep(for: .milliseconds(500))
            let held = try Self.residentKilobytes(pid)
            for hostile in peers { try? await hostile.abort() }
            return held
        }
        if let json = self.json {
            for (name, before, during, after) in rows {
                try self.appendJSON(
                    [
                        "scenario": "hostile", "pattern": name, "rss_before_kb": before, "rss_held_kb": during,
                        "rss_after_kb": after,
                    ],
                    to: json
                )
            }
        }
        try await group.shutdownGracefully()
    }
}
