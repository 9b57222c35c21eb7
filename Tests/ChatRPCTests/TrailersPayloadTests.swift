import ChatProto
import ChatRPC
import NIOCore
import Testing

private func decode(_ payload: ByteBuffer) throws -> CallStatus {
    try payload.withUnsafeReadableBytes { try CallStatus(serializedBytes: $0) }
}

@Suite("TRAILERS payloads: always the true code, always within the peer's MAX_HEADER_SIZE")
struct TrailersPayloadTests {
    @Test("a status that fits is sent whole")
    func fits() throws {
        let status = RPCError.invalidArgument(field: "body", "at most 10 characters").callStatus
        #expect(try decode(status.trailersPayload(maxBytes: 1_024)) == status)
    }

    @Test("a status over the limit loses its details, then message bytes, never its code")
    func shortened() throws {
        let violations = (0..<40).map {
            StatusDetail(
                detail: .fieldViolation(FieldViolation(field: "f\($0)", description: String(repeating: "é", count: 20)))
            )
        }
        let status = CallStatus(
            code: .failedPrecondition,
            message: String(repeating: "ü", count: 500),
            details: violations,
            notProcessed: true
        )
        let payload = status.trailersPayload(maxBytes: 1_024)
        #expect(payload.readableBytes <= 1_024)
        let sent = try decode(payload)
        #expect(sent.code == .failedPrecondition && sent.notProcessed)
        #expect(sent.details.isEmpty && sent.message.unicodeScalars.allSatisfy { $0 == "ü" })
        #expect(!sent.message.isEmpty)
        // A tighter limit: still the code.
        let tight = try decode(status.trailersPayload(maxBytes: 16))
        #expect(tight.code == .failedPrecondition)
    }

    @Test("a status that cannot be encoded (a NUL byte) becomes INTERNAL, never an empty payload that reads as OK")
    func unencodable() throws {
        let status = CallStatus(code: .notFound, message: "no\u{0}thing")
        let payload = status.trailersPayload(maxBytes: 1_024)
        #expect(payload.readableBytes > 0)
        #expect(try decode(payload).code == .internal)
    }
}
