import NIOCore
import Testing

@testable import ChatWire

/// Decodes everything in `bytes` with a fresh decoder, feeding it `chunk` bytes at a time.
func decodeAll(_ bytes: ByteBuffer, chunk: Int, expectsPreface: Bool = false, maxFrameSize: Int = 16_384) throws
    -> [Frame]
{
    var processor = NIOSingleStepByteToMessageProcessor(
        FrameDecoder(maxFrameSize: maxFrameSize, expectsPreface: expectsPreface)
    )
    var frames: [Frame] = []
    var input = bytes
    while input.readableBytes > 0 {
        let piece = input.readSlice(length: min(chunk, input.readableBytes))!
        try processor.process(buffer: piece) { frames.append($0) }
    }
    return frames
}

let sampleFrames: [Frame] = [
    .settings(ChatSettings.server.entries),
    .settingsAck,
    .headers(stream: 1, payload: ByteBuffer(bytes: [0x0A, 0x03, 0x61, 0x62, 0x63])),
    .data(stream: 1, payload: ByteBuffer(bytes: [0, 0, 0, 0, 2, 0x08, 0x01]), endStream: true),
    .data(stream: 3, payload: ByteBuffer(), endStream: false),
    .trailers(stream: 1, payload: ByteBuffer(bytes: [0x08, 0x05])),
    .cancel(stream: 5, code: .cancel),
    .windowUpdate(stream: 0, increment: 1 << 20),
    .windowUpdate(stream: 7, increment: 1),
    .ping(payload: 0x0102_0304_0506_0708, ack: false),
    .ping(payload: 42, ack: true),
    .goAway(lastStream: 9, code: .enhanceYourCalm, debug: "too_many_pings"),
    .goAway(lastStream: WireConstants.maxStreamID, code: .noError, debug: ""),
]

@Suite("Frame decoder and encoder")
struct FrameDecoderTests {
    @Test("every frame type round-trips")
    func roundTrip() throws {
        var bytes = ByteBuffer()
        for frame in sampleFrames { bytes.writeFrame(frame) }
        #expect(try decodeAll(bytes, chunk: bytes.readableBytes) == sampleFrames)
    }

    @Test("fed byte by byte, in odd chunks or in one piece, the decoder gives the same frames")
    func dripFeed() throws {
        var bytes = ByteBuffer(bytes: WireConstants.preface)
        for frame in sampleFrames { bytes.writeFrame(frame) }
        let whole = try decodeAll(bytes, chunk: bytes.readableBytes, expectsPreface: true)
        #expect(whole == sampleFrames)
        for chunk in [1, 2, 3, 7, 9, 10, 64] {
            #expect(try decodeAll(bytes, chunk: chunk, expectsPreface: true) == whole, "chunk \(chunk)")
        }
    }

    @Test("a frame over MAX_FRAME_SIZE is refused from its header, before the payload arrives")
    func frameSizeCheckedFirst() throws {
        var header = ByteBuffer()
        header.writeFrameHeader(length: 16_385, type: .data, flags: 0, stream: 1)
        // Only the 9 header bytes: the decoder must not wait for (or buffer) 16 KiB.
        #expect {
            try decodeAll(header, chunk: 9)
        } throws: { error in
            (error as! WireError).code == .frameSizeError
        }
        var huge = ByteBuffer()
        huge.writeFrameHeader(length: (1 << 24) - 1, type: .headers, flags: 0, stream: 1)
        #expect(throws: WireError.self) { try decodeAll(huge, chunk: 1) }
        // Exactly at the limit is fine.
        var atLimit = ByteBuffer()
        atLimit.writeFrame(.data(stream: 1, payload: ByteBuffer(repeating: 7, count: 16_384), endStream: false))
        #expect(try decodeAll(atLimit, chunk: 1000).count == 1)
    }

    @Test("a wrong preface is refused as soon as the first wrong byte arrives")
    func badPreface() {
        #expect {
            try decodeAll(ByteBuffer(string: "GET / HTTP/1.1\r\n"), chunk: 1, expectsPreface: true)
        } throws: { error in
            (error as! WireError).code == .protocolError
        }
        // A TLS ClientHello sent as plaintext into the protocol is refused too.
        #expect(throws: WireError.self) {
            try decodeAll(ByteBuffer(bytes: [0x16, 0x03, 0x01, 0x00]), chunk: 4, expectsPreface: true)
        }
    }

    @Test(
        "fixed-size payloads of the wrong size are FRAME_SIZE_ERROR",
        arguments: [
            (FrameType.cancel, 3, 1 as UInt32),
            (.windowUpdate, 5, 1),
            (.ping, 7, 0),
            (.goAway, 7, 0),
            (.goAway, 8 + 257, 0),
            (.settings, 5, 0),
            (.settings, 6 * 17, 0),
        ]
    )
    func wrongSizes(type: FrameType, length: Int, stream: UInt32) {
        var bytes = ByteBuffer()
        bytes.writeFrameHeader(length: length, type: type, flags: 0, stream: stream)
        bytes.writeRepeatingByte(0, count: length)
        #expect {
            try decodeAll(bytes, chunk: bytes.readableBytes)
        } throws: { error in
            (error as! WireError).code == .frameSizeError
        }
    }

    @Test("stream rules: stream frames on stream 0 and connection frames on a stream are PROTOCOL_ERROR")
    func streamRules() {
        for (type, stream, length) in [
            (FrameType.data, 0 as UInt32, 0), (.headers, 0, 0), (.trailers, 0, 0), (.cancel, 0, 4), (.ping, 1, 8),
            (.settings, 1, 0), (.goAway, 3, 8),
        ] {
            var bytes = ByteBuffer()
            bytes.writeFrameHeader(length: length, type: type, flags: 0, stream: stream)
            bytes.writeRepeatingByte(0, count: length)
            #expect(throws: WireError.self, "\(type) on stream \(stream)") {
                try decodeAll(bytes, chunk: bytes.readableBytes)
            }
        }
    }

    @Test("a WINDOW_UPDATE of 0 is PROTOCOL_ERROR; SETTINGS ACK with a payload is FRAME_SIZE_ERROR")
    func zeroIncrementAndAckPayload() {
        var zero = ByteBuffer()
        zero.writeFrameHeader(length: 4, type: .windowUpdate, flags: 0, stream: 1)
        zero.writeInteger(UInt32(0))
        #expect(throws: WireError.self) { try decodeAll(zero, chunk: 13) }
        var ack = ByteBuffer()
        ack.writeFrameHeader(length: 6, type: .settings, flags: WireConstants.flagAck, stream: 0)
        ack.writeRepeatingByte(0, count: 6)
        #expect(throws: WireError.self) { try decodeAll(ack, chunk: 15) }
    }

    @Test("unknown frame types are skipped; the reserved bit and undefined flags are ignored")
    func unknownAndReserved() throws {
        var bytes = ByteBuffer()
        bytes.writeFrameHeader(length: 3, type: FrameType(rawValue: 0x42), flags: 0xFF, stream: 0)
        bytes.writeBytes([1, 2, 3])
        // Stream id with the reserved top bit set, and undefined flags on DATA.
        bytes.writeInteger(UInt8(0))
        bytes.writeInteger(UInt16(1))
        bytes.writeInteger(FrameType.data.rawValue)
        bytes.writeInteger(UInt8(0xF0))
        bytes.writeInteger(UInt32(0x8000_0003))
        bytes.writeInteger(UInt8(9))
        let frames = try decodeAll(bytes, chunk: 1)
        #expect(
            frames == [
                .unknown(type: FrameType(rawValue: 0x42), stream: 0),
                .data(stream: 3, payload: ByteBuffer(bytes: [9]), endStream: false),
            ]
        )
    }

    @Test("GOAWAY debug text is cut to 256 bytes without splitting a character")
    func goAwayDebugTruncation() throws {
        let text = String(repeating: "a", count: 255) + "ü" + "tail"
        var bytes = ByteBuffer()
        bytes.writeFrame(.goAway(lastStream: 1, code: .protocolError, debug: text))
        let frames = try decodeAll(bytes, chunk: bytes.readableBytes)
        #expect(frames == [.goAway(lastStream: 1, code: .protocolError, debug: String(repeating: "a", count: 255))])
    }
}
