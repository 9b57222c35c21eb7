public import ChatAuth
public import ChatTLS
internal import Foundation
public import Logging
internal import NIOCore
internal import NIOHTTP1
public import NIOPosix
public import ServiceLifecycle

/// Fetches the token keys from the identity provider's JWKS URL (https only): once before chatd serves, then every
/// `refreshInterval`, and as soon as a token names a key id the ring lacks (a key the provider has just published),
/// but never sooner than `minimumInterval` after the previous fetch, however many such tokens come (anyone can
/// send one). A fetch that fails, or whose answer is not a key set with at least one key, keeps the keys in use.
///
/// Each fetch is one HTTP/1.1 GET over its own TLS 1.3 connection (OpenSSL, the server verified against
/// `trustRoots` or the system's trust store), bounded: `timeout` for all of it, at most `maxBytes` of answer.
public final class JWKSFetcher: Service, Sendable {
    /// Where the keys come from and how often.
    public struct Configuration: Sendable, Hashable {
        /// `https://host[:port]/path`.
        public var url: String
        /// PEM CA certificates to verify the server with; nil for the system's trust store.
        public var trustRoots: String?
        /// Time between scheduled fetches.
        public var refreshInterval: Duration
        /// The least time between two fetches (a token with an unknown key id asks for one).
        public var minimumInterval: Duration
        /// How long one fetch may take, connection and TLS handshake included.
        public var timeout: Duration

        /// chatd's defaults.
        public enum Defaults {
            public static let refreshInterval = Duration.seconds(300)
            public static let minimumInterval = Duration.seconds(30)
            public static let timeout = Duration.seconds(10)
        }

        /// The largest answer accepted (a key set of hundreds of keys is a few tens of KiB).
        public static let maxBytes = 1 << 20

        /// Creates a configuration with chatd's defaults.
        public init(url: String, trustRoots: String? = nil) {
            self.url = url
            self.trustRoots = trustRoots
            self.refreshInterval = Defaults.refreshInterval
            self.minimumInterval = Defaults.minimumInterval
            self.timeout = Defaults.timeout
        }
    }

    /// A URL's parts, checked.
    struct Endpoint: Sendable, Hashable {
        let host: String
        let port: Int
        /// Path and query, e.g. `/.well-known/jwks.json`.
        let target: String

        /// Parses `text`: `https://` only (keys are secrets of integrity: never over plain HTTP), a host, an
        /// optional port; no user information.
        init(_ text: String) throws(FetchError) {
            guard text.hasPrefix("https://") else {
                throw FetchError("the JWKS URL must be https://, not \(text)")
            }
            let rest = text.dropFirst("https://".count)
            let authority = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
            var target = String(rest.dropFirst(authority.count).prefix { $0 != "#" })
            if target.isEmpty || target.hasPrefix("?") { target = "/" + target }
            guard !authority.isEmpty, !authority.contains("@") else {
                throw FetchError("the JWKS URL needs a host (and no user information): \(text)")
            }
            var host = Substring(authority)
            var port = 443
            if let colon = authority.lastIndex(of: ":"), !authority.hasSuffix("]") {
                guard let number = Int(authority[authority.index(after: colon)...]), (1...65535).contains(number)
                else {
                    throw FetchError("the JWKS URL's port is not a number from 1 to 65535: \(text)")
                }
                port = number
                host = authority[..<colon]
            }
            if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
            guard !host.isEmpty else { throw FetchError("the JWKS URL needs a host: \(text)") }
            self.host = String(host)
            self.port = port
            self.target = target
        }
    }

    /// Why a fetch failed (never the answer's contents).
    public struct FetchError: Error, CustomStringConvertible, Sendable {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    public let configuration: Configuration
    let endpoint: Endpoint
    private let ring: KeyRing
    private let tls: TLSContext
    private let group: MultiThreadedEventLoopGroup
    private let logger: Logger
    private let wake: (stream: AsyncStream<Void>, continuation: AsyncStream<Void>.Continuation)

    /// A fetcher for `ring`.
    ///
    /// - Throws: `FetchError` for a URL that is not `https://host[:port]/...`; `TLSError` for trust roots that do
    ///   not load.
    public init(
        configuration: Configuration,
        ring: KeyRing,
        group: MultiThreadedEventLoopGroup,
        logger: Logger
    ) throws {
        self.configuration = configuration
        self.endpoint = try Endpoint(configuration.url)
        self.ring = ring
        self.tls = try TLSContext(configuration: .httpsClient(trustRoots: configuration.trustRoots))
        self.group = group
        self.logger = logger
        self.wake = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// Fetches the keys and puts them in the ring.
    ///
    /// - Throws: `FetchError` saying what went wrong; the ring is unchanged then.
    public func fetchNow() async throws {
        let body = try await self.get()
        let keys: JWKSet
        do {
            keys = try JWKSet(json: body)
        } catch {
            throw FetchError("the JWKS at \(self.configuration.url) does not parse: \(error)")
        }
        guard !keys.keys.isEmpty else { throw FetchError("the JWKS at \(self.configuration.url) has no keys") }
        let before = Set(self.ring.keys.keys.keys)
        let after = Set(keys.keys.keys)
        self.ring.replace(with: keys)
        if before != after {
            self.logger.notice(
                "JWKS fetched",
                metadata: ["url": "\(self.configuration.url)", "kids": "\(after.sorted().joined(separator: ","))"]
            )
        }
    }

    public func run() async throws {
        let continuation = self.wake.continuation
        self.ring.onUnknownKeyID { _ in continuation.yield() }
        defer { self.ring.onUnknownKeyID { _ in } }
        try? await cancelWhenGracefulShutdown {
            var lastFetch = ContinuousClock.now
            while !Task.isCancelled {
                // The schedule, or a token with a key id the ring lacks, whichever comes first.
                let next = lastFetch + self.configuration.refreshInterval
                await self.waitForWake(until: next)
                try Task.checkCancellation()
                // Never sooner than the minimum interval after the last fetch.
                try await Task.sleep(until: lastFetch + self.configuration.minimumInterval)
                lastFetch = .now
                do {
                    try await self.fetchNow()
                } catch let error as FetchError {
                    self.logger.warning("JWKS not fetched: keeping the keys in use", metadata: ["error": "\(error)"])
                }
            }
        }
    }

    /// Returns at `deadline`, or sooner when a token asked for a fetch.
    private func waitForWake(until deadline: ContinuousClock.Instant) async {
        let stream = self.wake.stream
        await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await Task.sleep(until: deadline) }
            group.addTask {
                for await _ in stream { return }
            }
            await group.next()
            group.cancelAll()
        }
    }

    /// One GET of the URL: the body of a 200 answer.
    func get() async throws -> [UInt8] {
        let endpoint = self.endpoint
        let tls = self.tls
        let limit = Configuration.maxBytes
        let timeout = self.configuration.timeout
        let eventLoop = self.group.next()
        let done = eventLoop.makePromise(of: [UInt8].self)
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(TimeAmount.nanoseconds(Int64(timeout / .nanoseconds(1))))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(TLSHandler(context: tls, serverName: endpoint.host))
                    try sync.addHTTPClientHandlers()
                    try sync.addHandler(
                        JWKSResponseHandler(endpoint: endpoint, limit: limit, done: done)
                    )
                }
            }
        let deadline = eventLoop.scheduleTask(in: .nanoseconds(Int64(timeout / .nanoseconds(1)))) {
            done.fail(FetchError("no answer from \(endpoint.host) within \(timeout)"))
        }
        do {
            let channel = try await bootstrap.connect(host: endpoint.host, port: endpoint.port).get()
            done.futureResult.whenComplete { _ in
                deadline.cancel()
                channel.close(promise: nil)
            }
        } catch {
            deadline.cancel()
            done.fail(FetchError("cannot connect to \(endpoint.host):\(endpoint.port): \(error)"))
        }
        do {
            return try await done.futureResult.get()
        } catch let error as FetchError {
            throw error
        } catch {
            throw FetchError("fetching \(self.configuration.url) failed: \(error)")
        }
    }
}

/// Sends the GET once TLS is up and collects a 200 answer's body, within the size limit.
private final class JWKSResponseHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    let endpoint: JWKSFetcher.Endpoint
    let limit: Int
    let done: EventLoopPromise<[UInt8]>
    private var status: HTTPResponseStatus?
    private var body: [UInt8] = []

    init(endpoint: JWKSFetcher.Endpoint, limit: Int, done: EventLoopPromise<[UInt8]>) {
        self.endpoint = endpoint
        self.limit = limit
        self.done = done
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is TLSEvent {
            var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: self.endpoint.target)
            let host = self.endpoint.host.contains(":") ? "[\(self.endpoint.host)]" : self.endpoint.host
            head.headers.add(name: "Host", value: self.endpoint.port == 443 ? host : "\(host):\(self.endpoint.port)")
            head.headers.add(name: "Accept", value: "application/json, application/jwk-set+json")
            head.headers.add(name: "User-Agent", value: "chatd/\(chatdVersion)")
            head.headers.add(name: "Connection", value: "close")
            context.write(self.wrapOutboundOut(.head(head)), promise: nil)
            context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.status = head.status
        case .body(let buffer):
            guard self.body.count + buffer.readableBytes <= self.limit else {
                self.done.fail(JWKSFetcher.FetchError("the JWKS answer is larger than \(self.limit) bytes"))
                context.close(promise: nil)
                return
            }
            self.body += buffer.readableBytesView
        case .end:
            guard self.status == .ok else {
                let status = self.status.map { "\($0.code)" } ?? "none"
                self.done.fail(JWKSFetcher.FetchError("the JWKS URL answered HTTP \(status)"))
                return
            }
            self.done.succeed(self.body)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.done.fail(JWKSFetcher.FetchError("fetching the JWKS failed: \(error)"))
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.done.fail(JWKSFetcher.FetchError("the JWKS server closed the connection before its answer ended"))
        context.fireChannelInactive()
    }
}
