public import NIOCore

/// A stream id: odd for client-opened streams; 0 is the connection.
public typealias StreamID = UInt32

/// The type byte of a frame header.
public struct FrameType: Hashable, Sendable, CustomStringConvertible {
    /// The byte on the wire.
    public let rawValue: UInt8

    /// Creates a type from its byte.
    public init(rawValue: UInt8) {
        self.rawValue = rawValue
    }

    public static let data = FrameType(rawValue: 0x0)
    public static let headers = FrameType(rawValue: 0x1)
    public static let trailers = FrameType(rawValue: 0x2)
    public static let cancel = FrameType(rawValue: 0x3)
    public static let windowUpdate = FrameType(rawValue: 0x4)
    public static let ping = FrameType(rawValue: 0x5)
    public static let goAway = FrameType(rawValue: 0x6)
    public static let settings = FrameType(rawValue: 0x7)

    public var description: String {
        switch self {
        case .data: "DATA"
        case .headers: "HEADERS"
        case .trailers: "TRAILERS"
        case .cancel: "CANCEL"
        case .windowUpdate: "WINDOW_UPDATE"
        case .ping: "PING"
        case .goAway: "GOAWAY"
        case .settings: "SETTINGS"
        default: "UNKNOWN(\(self.rawValue))"
        }
    }
}

/// The error codes of CANCEL and GOAWAY frames (docs/PROTOCOL.md, section 3).
public struct ErrorCode: Hashable, Sendable, CustomStringConvertible {
    /// The value on the wire.
    public let rawValue: UInt32

    /// Creates a code from its value.
    public init(rawValue: UInt32) {
        self.rawValue = rawValue
    }

    public static let noError = ErrorCode(rawValue: 0x0)
    public static let protocolError = ErrorCode(rawValue: 0x1)
    public static let internalError = ErrorCode(rawValue: 0x2)
    public static let flowControlError = ErrorCode(rawValue: 0x3)
    public static let streamClosed = ErrorCode(rawValue: 0x5)
    public static let frameSizeError = ErrorCode(rawValue: 0x6)
    public static let refusedStream = ErrorCode(rawValue: 0x7)
    public static let cancel = ErrorCode(rawValue: 0x8)
    public static let enhanceYourCalm = ErrorCode(rawValue: 0xB)

    public var description: String {
        switch self {
        case .noError: "NO_ERROR"
        case .protocolError: "PROTOCOL_ERROR"
        case .internalError: "INTERNAL_ERROR"
        case .flowControlError: "FLOW_CONTROL_ERROR"
        case .streamClosed: "STREAM_CLOSED"
        case .frameSizeError: "FRAME_SIZE_ERROR"
        case .refusedStream: "REFUSED_STREAM"
        case .cancel: "CANCEL"
        case .enhanceYourCalm: "ENHANCE_YOUR_CALM"
        default: "UNKNOWN(\(self.rawValue))"
        }
    }
}

/// One setting of a SETTINGS frame.
public struct Setting: Hashable, Sendable {
    /// The setting's id (docs/PROTOCOL.md, section 5).
    public var id: UInt16
    /// Its value.
    public var value: UInt32

    /// Creates a setting.
    public init(id: UInt16, value: UInt32) {
        self.id = id
        self.value = value
    }
}

/// A decoded frame.
public enum Frame: Hashable, Sendable {
    /// Bytes of the stream's message envelopes.
    case data(stream: StreamID, payload: ByteBuffer, endStream: Bool)
    /// An encoded `CallHeader` that opens a stream (client to server).
    case headers(stream: StreamID, payload: ByteBuffer)
    /// An encoded `CallStatus` that ends a stream (server to client).
    case trailers(stream: StreamID, payload: ByteBuffer)
    /// Ends a stream at once, in both directions.
    case cancel(stream: StreamID, code: ErrorCode)
    /// Returns flow-control credit; stream 0 is the connection.
    case windowUpdate(stream: StreamID, increment: UInt32)
    /// Liveness and round-trip measurement.
    case ping(payload: UInt64, ack: Bool)
    /// The connection is ending; streams above `lastStream` were not processed.
    case goAway(lastStream: StreamID, code: ErrorCode, debug: String)
    /// The sender's settings.
    case settings([Setting])
    /// Acknowledges the peer's settings.
    case settingsAck
    /// A frame of a type this version does not know; ignored.
    case unknown(type: FrameType, stream: StreamID)

    /// The frame's stream id.
    public var stream: StreamID {
        switch self {
        case .data(let stream, _, _), .headers(let stream, _), .trailers(let stream, _), .cancel(let stream, _),
            .windowUpdate(let stream, _), .unknown(_, let stream):
            stream
        case .ping, .goAway, .settings, .settingsAck:
            0
        }
    }
}

/// Fixed sizes of the protocol.
public enum WireConstants {
    /// The frame header: length (24), type (8), flags (8), stream id (32).
    public static let frameHeaderSize = 9
    /// The message envelope prefix: flags (8), length (32).
    public static let envelopePrefixSize = 5
    /// The client's connection preface: "CHAT\r\n", version 1, "\n".
    public static let preface: [UInt8] = [0x43, 0x48, 0x41, 0x54, 0x0D, 0x0A, 0x01, 0x0A]
    /// The ALPN protocol identifier.
    public static let alpn = "chat/1"
    /// The largest stream id.
    public static let maxStreamID: StreamID = 0x7FFF_FFFF
    /// The largest window.
    public static let maxWindow = 0x7FFF_FFFF
    /// END_STREAM on DATA.
    public static let flagEndStream: UInt8 = 0x1
    /// ACK on PING and SETTINGS.
    public static let flagAck: UInt8 = 0x1
    /// The longest GOAWAY debug text, bytes.
    public static let maxGoAwayDebug = 256
    /// The most entries in one SETTINGS frame.
    public static let maxSettings = 16
}
