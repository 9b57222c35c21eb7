public import ChatProto
public import NIOCore

extension CallStatus {
    /// The TRAILERS payload for this status, never larger than `maxBytes` (the peer's MAX_HEADER_SIZE): details and
    /// trailing metadata are dropped first, then the message is shortened; the code is always kept. A status that
    /// cannot be encoded at all (a NUL byte in a string) becomes INTERNAL, never an empty payload (which decodes as
    /// OK).
    public func trailersPayload(maxBytes: Int) -> ByteBuffer {
        let fallback = CallStatus(code: .internal, message: "the server could not encode the call's status")
        switch Self.encode(self, maxBytes: maxBytes) {
        case .encoded(let payload): return payload
        case .unencodable: return Self.encode(fallback, maxBytes: .max).payload!
        case .tooLarge: break
        }
        var bare = CallStatus(code: self.code, message: self.message, notProcessed: self.notProcessed)
        // Shorten the message (on a character boundary) until it fits.
        var limit = min(bare.message.utf8.count, maxBytes)
        while true {
            if let payload = Self.encode(bare, maxBytes: maxBytes).payload { return payload }
            guard limit > 0 else { break }
            limit /= 2
            bare.message = String(bare.message.utf8Prefix(limit))
        }
        return Self.encode(fallback, maxBytes: maxBytes).payload ?? Self.encode(
            CallStatus(code: .internal),
            maxBytes: .max
        ).payload!
    }

    private enum Encoding {
        case encoded(ByteBuffer)
        case tooLarge
        case unencodable

        var payload: ByteBuffer? {
            if case .encoded(let payload) = self { return payload }
            return nil
        }
    }

    private static func encode(_ status: CallStatus, maxBytes: Int) -> Encoding {
        guard let packed = try? status.packed() else { return .unencodable }
        guard packed.size <= maxBytes else { return .tooLarge }
        var payload = ByteBuffer()
        payload.writeWithUnsafeMutableBytes(minimumWritableBytes: packed.size) { packed.write(to: $0) }
        return .encoded(payload)
    }
}

extension String {
    /// The longest prefix of at most `maxBytes` UTF-8 bytes that ends on a character boundary.
    func utf8Prefix(_ maxBytes: Int) -> Substring {
        guard self.utf8.count > maxBytes else { return self[...] }
        var end = self.utf8.index(self.utf8.startIndex, offsetBy: max(0, maxBytes))
        while String.Index(end, within: self) == nil { end = self.utf8.index(before: end) }
        return self[..<end]
    }
}
