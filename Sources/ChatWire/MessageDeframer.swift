public import ChatProto
public import NIOCore

/// Reassembles the message envelopes of one stream from its DATA payloads.
///
/// The 5-byte prefix is checked against MAX_MESSAGE_SIZE as soon as it is complete, so an oversized message is
/// refused before any of it is buffered; at most one message plus one frame is ever held.
public struct MessageDeframer: Sendable {
    /// The largest message accepted.
    public let maxMessageSize: Int
    private var buffer = ByteBuffer()

    /// Creates a deframer.
    ///
    /// - Parameter maxMessageSize: our MAX_MESSAGE_SIZE.
    public init(maxMessageSize: Int) {
        self.maxMessageSize = maxMessageSize
    }

    /// True when no partial envelope is buffered.
    public var isEmpty: Bool { self.buffer.readableBytes == 0 }

    /// Bytes of storage the deframer keeps alive (0 between messages, so an idle stream holds none).
    public var heldCapacity: Int { self.buffer.storageCapacity }

    /// Bytes buffered towards the next message.
    public var bufferedBytes: Int { self.buffer.readableBytes }

    /// The whole envelope size (prefix included) of the partial message buffered, once its prefix has arrived.
    public var pendingEnvelopeSize: Int? {
        guard self.buffer.readableBytes >= WireConstants.envelopePrefixSize else { return nil }
        let length = Int(self.buffer.getInteger(at: self.buffer.readerIndex + 1, as: UInt32.self)!)
        return WireConstants.envelopePrefixSize + length
    }

    /// Appends a DATA payload.
    public mutating func append(_ bytes: ByteBuffer) {
        if self.buffer.readableBytes == 0 {
            self.buffer = bytes
        } else {
            var bytes = bytes
            self.buffer.writeBuffer(&bytes)
        }
    }

    /// Returns the next complete message, or nil when more bytes are needed.
    ///
    /// - Throws: `WireError` (stream scope is set by the caller) when the message is too large or compressed.
    public mutating func nextMessage() throws(WireError) -> ByteBuffer? {
        guard self.buffer.readableBytes >= WireConstants.envelopePrefixSize else { return nil }
        let start = self.buffer.readerIndex
        let flags = self.buffer.getInteger(at: start, as: UInt8.self)!
        let length = Int(self.buffer.getInteger(at: start + 1, as: UInt32.self)!)
        guard flags & 0x1 == 0 else {
            throw WireError(.internalError, "compressed messages are not supported")
        }
        guard length <= self.maxMessageSize else {
            throw WireError(
                .internalError,
                "message of \(length) bytes exceeds MAX_MESSAGE_SIZE \(self.maxMessageSize)"
            )
        }
        guard self.buffer.readableBytes >= WireConstants.envelopePrefixSize + length else { return nil }
        self.buffer.moveReaderIndex(forwardBy: WireConstants.envelopePrefixSize)
        let message = self.buffer.readSlice(length: length)!
        if self.buffer.readableBytes == 0 {
            // Not clear(): on a buffer that shares its storage (a slice of a TLS read, or of the message just
            // returned) that allocates a fresh storage of the whole capacity, which an idle stream then kept for its
            // lifetime - 17 KB per stream.
            self.buffer = ByteBuffer()
        } else {
            self.buffer.discardReadBytes()
        }
        return message
    }
}

extension ByteBuffer {
    /// Appends a message envelope: flags 0, the length, then the message packed straight into this buffer.
    ///
    /// - Parameter message: the message in its C form.
    public mutating func writeEnvelope(_ message: PackedMessage) {
        self.writeInteger(UInt8(0))
        self.writeInteger(UInt32(message.size))
        self.writeWithUnsafeMutableBytes(minimumWritableBytes: message.size) { buffer in
            message.write(to: buffer)
        }
    }

    /// Appends a message envelope for `message`.
    ///
    /// - Throws: `ProtoError` when a string of the message holds a NUL byte.
    public mutating func writeEnvelope(_ message: some ProtoMessage) throws(ProtoError) {
        self.writeEnvelope(try message.packed())
    }
}
