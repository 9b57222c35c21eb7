/// The settings one side advertises (docs/PROTOCOL.md, section 5).
public struct ChatSettings: Hashable, Sendable {
    /// Streams the peer may have open at once.
    public var maxConcurrentStreams: Int
    /// The receive window of each new stream, bytes.
    public var initialWindowSize: Int
    /// The largest frame payload accepted.
    public var maxFrameSize: Int
    /// The largest envelope payload accepted.
    public var maxMessageSize: Int
    /// The largest CallHeader or CallStatus accepted.
    public var maxHeaderSize: Int
    /// Pings more frequent than this count as strikes, milliseconds.
    public var keepaliveMinIntervalMilliseconds: Int
    /// The initial receive window of the connection, bytes.
    public var connectionWindow: Int

    /// The values a side assumes until it has read the peer's SETTINGS.
    public static let defaults = ChatSettings(
        maxConcurrentStreams: 100,
        initialWindowSize: 65_535,
        maxFrameSize: 16_384,
        maxMessageSize: 4 * 1024 * 1024,
        maxHeaderSize: 8 * 1024,
        keepaliveMinIntervalMilliseconds: 10_000,
        connectionWindow: 65_535
    )

    /// What chatd advertises: large windows, so that throughput is not window-bound on fast links.
    public static let server = ChatSettings(
        maxConcurrentStreams: 100,
        initialWindowSize: 1 << 20,
        maxFrameSize: 16_384,
        maxMessageSize: 4 * 1024 * 1024,
        maxHeaderSize: 8 * 1024,
        keepaliveMinIntervalMilliseconds: 10_000,
        connectionWindow: 16 << 20
    )

    /// What the Swift client advertises: a 256 KiB window per stream bounds what one stream buffers, 16 MiB for the
    /// connection; it accepts no streams from the server.
    public static let client = ChatSettings(
        maxConcurrentStreams: 0,
        initialWindowSize: 256 * 1024,
        maxFrameSize: 16_384,
        maxMessageSize: 4 * 1024 * 1024,
        maxHeaderSize: 8 * 1024,
        keepaliveMinIntervalMilliseconds: 10_000,
        connectionWindow: 16 << 20
    )

    /// Creates settings.
    public init(
        maxConcurrentStreams: Int,
        initialWindowSize: Int,
        maxFrameSize: Int,
        maxMessageSize: Int,
        maxHeaderSize: Int,
        keepaliveMinIntervalMilliseconds: Int,
        connectionWindow: Int
    ) {
        self.maxConcurrentStreams = maxConcurrentStreams
        self.initialWindowSize = initialWindowSize
        self.maxFrameSize = maxFrameSize
        self.maxMessageSize = maxMessageSize
        self.maxHeaderSize = maxHeaderSize
        self.keepaliveMinIntervalMilliseconds = keepaliveMinIntervalMilliseconds
        self.connectionWindow = connectionWindow
    }

    /// The setting ids.
    public enum ID {
        public static let maxConcurrentStreams: UInt16 = 0x1
        public static let initialWindowSize: UInt16 = 0x2
        public static let maxFrameSize: UInt16 = 0x3
        public static let maxMessageSize: UInt16 = 0x4
        public static let maxHeaderSize: UInt16 = 0x5
        public static let keepaliveMinInterval: UInt16 = 0x6
        public static let connectionWindow: UInt16 = 0x7
    }

    /// The entries of a SETTINGS frame that advertises these values.
    public var entries: [Setting] {
        [
            Setting(id: ID.maxConcurrentStreams, value: UInt32(self.maxConcurrentStreams)),
            Setting(id: ID.initialWindowSize, value: UInt32(self.initialWindowSize)),
            Setting(id: ID.maxFrameSize, value: UInt32(self.maxFrameSize)),
            Setting(id: ID.maxMessageSize, value: UInt32(self.maxMessageSize)),
            Setting(id: ID.maxHeaderSize, value: UInt32(self.maxHeaderSize)),
            Setting(id: ID.keepaliveMinInterval, value: UInt32(self.keepaliveMinIntervalMilliseconds)),
            Setting(id: ID.connectionWindow, value: UInt32(self.connectionWindow)),
        ]
    }

    /// Applies a peer's SETTINGS entries on top of the defaults.
    ///
    /// - Throws: `WireError` PROTOCOL_ERROR naming the setting when a value is out of range.
    public static func received(_ entries: [Setting]) throws(WireError) -> ChatSettings {
        var settings = ChatSettings.defaults
        let window = UInt32(WireConstants.maxWindow)
        for entry in entries {
            let value = Int(entry.value)
            func check(_ range: ClosedRange<UInt32>, _ name: String) throws(WireError) {
                guard range.contains(entry.value) else {
                    throw WireError(.protocolError, "\(name) \(entry.value) out of range \(range)")
                }
            }
            switch entry.id {
            case ID.maxConcurrentStreams:
                try check(0...window, "MAX_CONCURRENT_STREAMS")
                settings.maxConcurrentStreams = value
            case ID.initialWindowSize:
                try check(0...window, "INITIAL_WINDOW_SIZE")
                settings.initialWindowSize = value
            case ID.maxFrameSize:
                try check(16_384...16_777_215, "MAX_FRAME_SIZE")
                settings.maxFrameSize = value
            case ID.maxMessageSize:
                try check(1_024...window, "MAX_MESSAGE_SIZE")
                settings.maxMessageSize = value
            case ID.maxHeaderSize:
                try check(1_024...65_536, "MAX_HEADER_SIZE")
                settings.maxHeaderSize = value
            case ID.keepaliveMinInterval:
                try check(0...window, "KEEPALIVE_MIN_INTERVAL_MS")
                settings.keepaliveMinIntervalMilliseconds = value
            case ID.connectionWindow:
                try check(65_535...window, "CONNECTION_WINDOW")
                settings.connectionWindow = value
            default:
                continue
            }
        }
        guard settings.maxHeaderSize <= settings.maxFrameSize else {
            throw WireError(.protocolError, "MAX_HEADER_SIZE exceeds MAX_FRAME_SIZE")
        }
        return settings
    }
}
