public import NIOCore

/// Decodes frames from bytes: checks every limit from the 9-byte header before it reads or buffers a payload.
///
/// On the server it first expects the client's 8-byte preface. It validates what can be validated per frame (sizes of
/// fixed payloads, stream 0 rules); what depends on connection state is the state machine's job.
public struct FrameDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = Frame

    /// The largest payload accepted (our MAX_FRAME_SIZE).
    public var maxFrameSize: Int
    private var awaitingPreface: Bool

    /// Creates a decoder.
    ///
    /// - Parameters:
    ///   - maxFrameSize: the MAX_FRAME_SIZE this side advertises.
    ///   - expectsPreface: true on the server, which reads the client's preface first.
    public init(maxFrameSize: Int = ChatSettings.defaults.maxFrameSize, expectsPreface: Bool) {
        self.maxFrameSize = maxFrameSize
        self.awaitingPreface = expectsPreface
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> Frame? {
        if self.awaitingPreface {
            // Compare what has arrived so far, so that garbage is refused without waiting for 8 bytes.
            let available = min(buffer.readableBytes, WireConstants.preface.count)
            guard let head = buffer.getBytes(at: buffer.readerIndex, length: available),
                head[...] == WireConstants.preface[..<available]
            else {
                throw WireError(.protocolError, "bad connection preface")
            }
            guard available == WireConstants.preface.count else { return nil }
            buffer.moveReaderIndex(forwardBy: available)
            self.awaitingPreface = false
        }
        guard buffer.readableBytes >= WireConstants.frameHeaderSize else { return nil }
        let start = buffer.readerIndex
        let length =
            Int(buffer.getInteger(at: start, as: UInt8.self)!) << 16
            | Int(buffer.getInteger(at: start + 1, as: UInt16.self)!)
        guard length <= self.maxFrameSize else {
            throw WireError(.frameSizeError, "frame of \(length) bytes exceeds MAX_FRAME_SIZE \(self.maxFrameSize)")
        }
        guard buffer.readableBytes >= WireConstants.frameHeaderSize + length else { return nil }
        let type = FrameType(rawValue: buffer.getInteger(at: start + 3, as: UInt8.self)!)
        let flags = buffer.getInteger(at: start + 4, as: UInt8.self)!
        let stream = buffer.getInteger(at: start + 5, as: UInt32.self)! & WireConstants.maxStreamID
        buffer.moveReaderIndex(forwardBy: WireConstants.frameHeaderSize)
        var payload = buffer.readSlice(length: length)!
        return try Self.frame(type: type, flags: flags, stream: stream, payload: &payload)
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> Frame? {
        try self.decode(buffer: &buffer)
    }

    private static func frame(type: FrameType, flags: UInt8, stream: StreamID, payload: inout ByteBuffer) throws
        -> Frame
    {
        func requireStream() throws {
            guard stream != 0 else { throw WireError(.protocolError, "\(type) on stream 0") }
        }
        func requireConnection() throws {
            guard stream == 0 else { throw WireError(.protocolError, "\(type) on stream \(stream)") }
        }
        func requireSize(_ size: Int) throws {
            guard payload.readableBytes == size else {
                throw WireError(.frameSizeError, "\(type) payload of \(payload.readableBytes) bytes, expected \(size)")
            }
        }
        switch type {
        case .data:
            try requireStream()
            return .data(stream: stream, payload: payload, endStream: flags & WireConstants.flagEndStream != 0)
        case .headers:
            try requireStream()
            return .headers(stream: stream, payload: payload)
        case .trailers:
            try requireStream()
            return .trailers(stream: stream, payload: payload)
        case .cancel:
            try requireStream()
            try requireSize(4)
            return .cancel(stream: stream, code: ErrorCode(rawValue: payload.readInteger()!))
        case .windowUpdate:
            try requireSize(4)
            let increment = payload.readInteger(as: UInt32.self)! & WireConstants.maxStreamID
            guard increment > 0 else { throw WireError(.protocolError, "WINDOW_UPDATE with increment 0") }
            return .windowUpdate(stream: stream, increment: increment)
        case .ping:
            try requireConnection()
            try requireSize(8)
            return .ping(payload: payload.readInteger()!, ack: flags & WireConstants.flagAck != 0)
        case .goAway:
            try requireConnection()
            guard payload.readableBytes >= 8, payload.readableBytes <= 8 + WireConstants.maxGoAwayDebug else {
                throw WireError(.frameSizeError, "GOAWAY payload of \(payload.readableBytes) bytes")
            }
            let last = payload.readInteger(as: UInt32.self)! & WireConstants.maxStreamID
            let code = ErrorCode(rawValue: payload.readInteger()!)
            let debug = payload.readString(length: payload.readableBytes) ?? ""
            return .goAway(lastStream: last, code: code, debug: debug)
        case .settings:
            try requireConnection()
            if flags & WireConstants.flagAck != 0 {
                try requireSize(0)
                return .settingsAck
            }
            guard payload.readableBytes % 6 == 0, payload.readableBytes <= 6 * WireConstants.maxSettings else {
                throw WireError(.frameSizeError, "SETTINGS payload of \(payload.readableBytes) bytes")
            }
            var settings: [Setting] = []
            settings.reserveCapacity(payload.readableBytes / 6)
            while payload.readableBytes > 0 {
                settings.append(Setting(id: payload.readInteger()!, value: payload.readInteger()!))
            }
            return .settings(settings)
        default:
            return .unknown(type: type, stream: stream)
        }
    }
}
