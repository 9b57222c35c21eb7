import ChatProto
import NIOCore
import Testing

@testable import ChatWire

@Suite("Message envelopes")
struct MessageDeframerTests {
    @Test("a complete message leaves no storage behind, even when it came in a slice of a large read")
    func noRetainedStorage() throws {
        // A TLS read: one large buffer; the call's frame payload is a slice of it.
        var read = ByteBufferAllocator().buffer(capacity: 16_384)
        read.writeInteger(UInt8(0))
        read.writeInteger(UInt32(3))
        read.writeBytes([1, 2, 3])
        read.writeRepeatingByte(0, count: 1_000)  // other frames of the same read
        let payload = read.getSlice(at: 0, length: 8)!
        var deframer = MessageDeframer(maxMessageSize: 1 << 20)
        deframer.append(payload)
        let message = try #require(try deframer.nextMessage())
        #expect(Array(message.readableBytesView) == [1, 2, 3])
        #expect(deframer.isEmpty)
        // An idle stream keeps its deframer for life: it must not hold (or copy) the read's storage.
        #expect(deframer.heldCapacity == 0)
    }

    @Test("messages split across payloads and packed together come out whole and in order")
    func reassembly() throws {
        var stream = ByteBuffer()
        let messages = [
            HealthCheckRequest(service: "chat.v1.MessageService"),
            HealthCheckRequest(),
            HealthCheckRequest(service: String(repeating: "x", count: 3000)),
        ]
        for message in messages { try stream.writeEnvelope(message) }
        for chunk in [1, 2, 5, 6, 100, stream.readableBytes] {
            var deframer = MessageDeframer(maxMessageSize: 4096)
            var input = stream
            var decoded: [HealthCheckRequest] = []
            while input.readableBytes > 0 {
                deframer.append(input.readSlice(length: min(chunk, input.readableBytes))!)
                while let message = try deframer.nextMessage() {
                    decoded.append(try message.withUnsafeReadableBytes { try HealthCheckRequest(serializedBytes: $0) })
                }
            }
            #expect(decoded == messages, "chunk \(chunk)")
            #expect(deframer.isEmpty)
        }
    }

    @Test("an oversized message is refused from its 5-byte prefix, before the body arrives")
    func oversizedRefusedEarly() {
        var deframer = MessageDeframer(maxMessageSize: 1024)
        var prefix = ByteBuffer()
        prefix.writeInteger(UInt8(0))
        prefix.writeInteger(UInt32(0xFFFF_FFFF))
        deframer.append(prefix)
        #expect(throws: WireError.self) { try deframer.nextMessage() }
    }

    @Test("a message of exactly the limit is accepted")
    func atLimit() throws {
        var deframer = MessageDeframer(maxMessageSize: 1024)
        var bytes = ByteBuffer()
        bytes.writeInteger(UInt8(0))
        bytes.writeInteger(UInt32(1024))
        bytes.writeRepeatingByte(1, count: 1024)
        deframer.append(bytes)
        #expect(try deframer.nextMessage()?.readableBytes == 1024)
    }

    @Test("the compressed flag is refused")
    func compressed() {
        var deframer = MessageDeframer(maxMessageSize: 1024)
        deframer.append(ByteBuffer(bytes: [1, 0, 0, 0, 0]))
        #expect(throws: WireError.self) { try deframer.nextMessage() }
    }
}

@Suite("Settings")
struct SettingsTests {
    @Test("advertised settings read back as the same values")
    func roundTrip() throws {
        #expect(try ChatSettings.received(ChatSettings.server.entries) == ChatSettings.server)
        #expect(try ChatSettings.received([]) == ChatSettings.defaults)
    }

    @Test("unknown ids are ignored")
    func unknownIDs() throws {
        #expect(try ChatSettings.received([Setting(id: 0x99, value: 12)]) == ChatSettings.defaults)
    }

    @Test(
        "out-of-range values are PROTOCOL_ERROR",
        arguments: [
            Setting(id: ChatSettings.ID.maxFrameSize, value: 100),
            Setting(id: ChatSettings.ID.maxFrameSize, value: 1 << 24),
            Setting(id: ChatSettings.ID.initialWindowSize, value: 0x8000_0000),
            Setting(id: ChatSettings.ID.maxMessageSize, value: 10),
            Setting(id: ChatSettings.ID.maxHeaderSize, value: 70_000),
            Setting(id: ChatSettings.ID.connectionWindow, value: 100),
        ]
    )
    func outOfRange(_ setting: Setting) {
        #expect(throws: WireError.self) { try ChatSettings.received([setting]) }
    }
}
