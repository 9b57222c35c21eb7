public import NIOCore

extension ByteBuffer {
    /// Appends a frame: the 9-byte header, then the payload.
    ///
    /// - Parameter frame: the frame; payload sizes are the caller's to keep within the peer's limits.
    public mutating func writeFrame(_ frame: Frame) {
        switch frame {
        case .data(let stream, let payload, let endStream):
            self.writeFrameHeader(
                length: payload.readableBytes,
                type: .data,
                flags: endStream ? WireConstants.flagEndStream : 0,
                stream: stream
            )
            self.writeImmutableBuffer(payload)
        case .headers(let stream, let payload):
            self.writeFrameHeader(length: payload.readableBytes, type: .headers, flags: 0, stream: stream)
            self.writeImmutableBuffer(payload)
        case .trailers(let stream, let payload):
            self.writeFrameHeader(length: payload.readableBytes, type: .trailers, flags: 0, stream: stream)
            self.writeImmutableBuffer(payload)
        case .cancel(let stream, let code):
            self.writeFrameHeader(length: 4, type: .cancel, flags: 0, stream: stream)
            self.writeInteger(code.rawValue)
        case .windowUpdate(let stream, let increment):
            self.writeFrameHeader(length: 4, type: .windowUpdate, flags: 0, stream: stream)
            self.writeInteger(increment & WireConstants.maxStreamID)
        case .ping(let payload, let ack):
            self.writeFrameHeader(length: 8, type: .ping, flags: ack ? WireConstants.flagAck : 0, stream: 0)
            self.writeInteger(payload)
        case .goAway(let lastStream, let code, let debug):
            var text = Array(debug.utf8.prefix(WireConstants.maxGoAwayDebug))
            // Never cut a UTF-8 sequence in half: drop the bytes of a cut sequence (at most three).
            while !text.isEmpty, String(validating: text, as: UTF8.self) == nil {
                text.removeLast()
            }
            self.writeFrameHeader(length: 8 + text.count, type: .goAway, flags: 0, stream: 0)
            self.writeInteger(lastStream & WireConstants.maxStreamID)
            self.writeInteger(code.rawValue)
            self.writeBytes(text)
        case .settings(let settings):
            self.writeFrameHeader(length: settings.count * 6, type: .settings, flags: 0, stream: 0)
            for setting in settings {
                self.writeInteger(setting.id)
                self.writeInteger(setting.value)
            }
        case .settingsAck:
            self.writeFrameHeader(length: 0, type: .settings, flags: WireConstants.flagAck, stream: 0)
        case .unknown(let type, let stream):
            self.writeFrameHeader(length: 0, type: type, flags: 0, stream: stream)
        }
    }

    /// Appends a frame header.
    public mutating func writeFrameHeader(length: Int, type: FrameType, flags: UInt8, stream: StreamID) {
        precondition(length < 1 << 24, "frame payload too large for the 24-bit length")
        self.writeInteger(UInt8(truncatingIfNeeded: length >> 16))
        self.writeInteger(UInt16(truncatingIfNeeded: length))
        self.writeInteger(type.rawValue)
        self.writeInteger(flags)
        self.writeInteger(stream & WireConstants.maxStreamID)
    }
}
