public import ChatProto
public import NIOCore

extension CallStatus {
    /// The TRAILERS payload for this status, never larger than `maxBytes` (the peer's MAX_HEADER_SIZE): details and
    /// trailing metadata are dropped first, then the message is shortened; the code is always kept. A status that
    /// cannot be encoded at all (a NUL byte in a string) becomes INTERNAL, never an empty payload (which decodes as
    /// OK).
    public func trailersPayload(maxBytes: Int) -> ByteBuffer {
        var status = self
        while true {
            switch Self.encode(status, maxBytes: maxBytes) {
            case .encoded(let payload):
                return payload
            case .unencodable:
                return Self.encode(.unencodableFallback, maxBytes: .max).payload!
            case .tooLarge(let size):
                if !status.details.isEmpty || !status.trailingMetadata.isEmpty {
                    status = CallStatus(code: status.code, message: status.message, notProcessed: status.notProcessed)
                } else if !status.message.isEmpty {
                    // Cut the message by what is over (on a character boundary); its length prefix only shrinks.
                    let keep = max(0, status.message.utf8.count - (size - maxBytes))
                    status.message = String(status.message.utf8Prefix(keep))
                } else {
                    // A code and a flag fit in any MAX_HEADER_SIZE a peer may advertise (at least 1,024 bytes).
                    return Self.encode(status, maxBytes: .max).payload!
                }
            }
        }
    }

    private static let unencodableFallback = CallStatus(
        code: .internal,
        message: "the server could not encode the call's status"
    )

    private enum Encoding {
        case encoded(ByteBuffer)
        case tooLarge(size: Int)
        case unencodable

        var payload: ByteBuffer? {
            if case .encoded(let payload) = self { return payload }
            return nil
        }
    }

    private static func encode(_ status: CallStatus, maxBytes: Int) -> Encoding {
        guard let packed = try? status.packed() else { return .unencodable }
        guard packed.size <= maxBytes else { return .tooLarge(size: packed.size) }
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
