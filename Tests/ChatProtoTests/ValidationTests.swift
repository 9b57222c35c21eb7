import ChatTestSupport
import Testing

@testable import ChatProto

/// Builds protobuf wire bytes by hand, so that tests can say exactly what a hostile peer sends.
struct Wire {
    var bytes: [UInt8] = []

    mutating func varint(_ value: UInt64) {
        var value = value
        while value >= 0x80 {
            self.bytes.append(UInt8(value & 0x7F) | 0x80)
            value >>= 7
        }
        self.bytes.append(UInt8(value))
    }

    mutating func field(_ number: UInt64, bytes payload: [UInt8]) {
        self.varint(number << 3 | 2)
        self.varint(UInt64(payload.count))
        self.bytes += payload
    }

    mutating func field(_ number: UInt64, varint value: UInt64) {
        self.varint(number << 3)
        self.varint(value)
    }

    static func message(_ build: (inout Wire) -> Void) -> [UInt8] {
        var wire = Wire()
        build(&wire)
        return wire.bytes
    }
}

@Suite("Validation of untrusted bytes")
struct ValidationTests {
    @Test("a NUL inside a string is rejected, naming the field, instead of truncating it")
    func embeddedNUL() {
        let bytes = Wire.message { $0.field(2, bytes: Array("a\u{0}b".utf8)) }
        #expect {
            try SendMessageRequest(serializedBytes: bytes)
        } throws: { error in
            let error = error as! ProtoError
            return error.code == .embeddedNUL && error.field == "body"
                && error.messageType == "chat.v1.SendMessageRequest"
        }
    }

    @Test(
        "invalid UTF-8 is rejected",
        arguments: [
            [0xFF] as [UInt8],  // never valid
            [0xC0, 0x80],  // overlong NUL
            [0xE0, 0x80, 0x80],  // overlong
            [0xED, 0xA0, 0x80],  // surrogate
            [0xF4, 0x90, 0x80, 0x80],  // above U+10FFFF
            [0x61, 0xE2, 0x82],  // truncated sequence
            [0x80],  // lone continuation
        ]
    )
    func invalidUTF8(_ text: [UInt8]) {
        let bytes = Wire.message { $0.field(2, bytes: text) }
        #expect {
            try SendMessageRequest(serializedBytes: bytes)
        } throws: { error in
            (error as! ProtoError).code == .invalidUTF8
        }
    }

    @Test("valid UTF-8 of every length is accepted")
    func validUTF8() throws {
        let text = "a\u{7F}\u{80}\u{7FF}\u{800}\u{FFFF}\u{10000}\u{10FFFF}"
        let bytes = Wire.message { $0.field(2, bytes: Array(text.utf8)) }
        #expect(try SendMessageRequest(serializedBytes: bytes).body == text)
    }

    @Test("a bad string deep inside nested messages is found, with its path")
    func nestedPath() {
        // WatchThreadResponse.event(1) -> WatchEvent.message(2) -> MessageEvent.message(2) -> Message.body(5)
        let message = Wire.message { $0.field(5, bytes: [0x68, 0x69, 0xFF]) }
        let messageEvent = Wire.message { $0.field(2, bytes: message) }
        let watchEvent = Wire.message { $0.field(2, bytes: messageEvent) }
        let response = Wire.message { $0.field(1, bytes: watchEvent) }
        #expect {
            try WatchThreadResponse(serializedBytes: response)
        } throws: { error in
            let error = error as! ProtoError
            return error.code == .invalidUTF8 && error.field == "event.message.message.body"
        }
    }

    @Test("encoding a string with a NUL fails, naming the field")
    func encodeNUL() {
        #expect {
            try SendMessageRequest(threadId: "t", body: "a\u{0}b").serializedBytes()
        } throws: { error in
            let error = error as! ProtoError
            return error.code == .embeddedNUL && error.field == "SendMessageRequest.body"
        }
    }

    @Test("unknown fields are skipped, strings in them are not checked")
    func unknownFields() throws {
        let bytes = Wire.message {
            $0.field(1, bytes: Array("thread".utf8))
            $0.field(99, bytes: [0xFF, 0x00])
            $0.field(100, varint: 7)
        }
        #expect(try SendMessageRequest(serializedBytes: bytes).threadId == "thread")
    }

    @Test("a wrong wire type for a known field is malformed")
    func wrongWireType() {
        // Field 2 (body, a string) sent as a varint.
        let bytes = Wire.message { $0.field(2, varint: 5) }
        #expect(throws: ProtoError.self) { try SendMessageRequest(serializedBytes: bytes) }
    }

    @Test("every truncation of every fixture either decodes or throws, never crashes")
    func truncations() throws {
        var threw = 0
        for fixture in Fixtures.all {
            let bytes = try fixture.value.serializedBytes()
            for length in 0..<bytes.count {
                do {
                    _ = try RoundTripTests.decode(like: fixture.value, Array(bytes[..<length]))
                } catch is ProtoError {
                    threw += 1
                }
            }
        }
        #expect(threw > 1000)
    }

    @Test("random bytes never crash the decoder")
    func randomBytes() {
        var generator = SplitMix64(seed: 0x5EED)
        var rejected = 0
        for iteration in 0..<20_000 {
            let count = Int(generator.next() % 64)
            let bytes = (0..<count).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            let fixture = Fixtures.all[iteration % Fixtures.all.count]
            do {
                _ = try RoundTripTests.decode(like: fixture.value, bytes)
            } catch {
                rejected += 1
            }
        }
        #expect(rejected > 10_000)
    }

    @Test("a flood of empty sub-messages is refused before it can exhaust memory")
    func allocationBudget() {
        // 500,000 empty Thread entries: one megabyte on the wire, far more as C structs.
        var bytes: [UInt8] = []
        bytes.reserveCapacity(1_000_000)
        for _ in 0..<500_000 {
            bytes += [0x0A, 0x00]
        }
        #expect {
            try ListThreadsResponse(serializedBytes: bytes)
        } throws: { error in
            (error as! ProtoError).code == .tooComplex
        }
    }

    @Test("a thousand real threads are within the budget")
    func budgetAllowsRealMessages() throws {
        let thread = Thread(
            id: "6f1c2b9e-0000-4000-8000-000000000001",
            learnerId: "6f1c2b9e-0000-4000-8000-000000000002",
            title: "Homework",
            state: .active,
            lastSeq: 12,
            createdBy: Actor(userId: "teacher-1", role: .teacher)
        )
        let response = ListThreadsResponse(threads: Array(repeating: thread, count: 1000))
        #expect(try ListThreadsResponse(serializedBytes: response.serializedBytes()) == response)
    }
}
