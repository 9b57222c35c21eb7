import Testing

@testable import ChatProto

@Suite("Round trips through protobuf-c")
struct RoundTripTests {
    @Test("every message type of the contract has a fixture")
    func everyMessageHasAFixture() {
        let names = Set(Fixtures.all.map(\.protoName))
        // Every request and response of every method is among them, and the wire-level messages too.
        for method in ChatMethods.all {
            #expect(names.contains(method.requestType), "no fixture for \(method.requestType)")
            #expect(names.contains(method.responseType), "no fixture for \(method.responseType)")
        }
        #expect(names.contains(CallHeader.protoName))
        #expect(names.contains(CallStatus.protoName))
        #expect(names.count >= 80)
    }

    @Test("every fixture encodes, decodes through protobuf-c and compares equal", arguments: Fixtures.all)
    func fixtureRoundTrips(_ fixture: Fixture) throws {
        let bytes = try fixture.value.serializedBytes()
        // Fixtures set every field, so only a message without fields encodes to nothing.
        #expect(bytes.isEmpty == Self.isDefault(fixture.value))
        let decoded = try Self.decode(like: fixture.value, bytes)
        #expect(decoded == fixture.value, "\(fixture.protoName) seed \(fixture.seed)")
    }

    @Test("packed size is exact and packing writes exactly that many bytes")
    func packedSizeIsExact() throws {
        let message = Fixtures.all.first { $0.protoName == "chat.v1.ListThreadsResponse" }!.value
        let packed = try message.packed()
        var buffer = [UInt8](repeating: 0xAA, count: packed.size + 8)
        let written = buffer.withUnsafeMutableBytes { packed.write(to: $0) }
        #expect(written == packed.size)
        #expect(buffer[packed.size...].allSatisfy { $0 == 0xAA })
    }

    @Test("default values encode to nothing and decode back")
    func defaultsEncodeToNothing() throws {
        #expect(try Thread().serializedBytes() == [])
        #expect(try Thread(serializedBytes: []) == Thread())
        #expect(try ListMethodsRequest(serializedBytes: []) == ListMethodsRequest())
    }

    @Test("oneofs: each member survives and nil stays nil")
    func oneofs() throws {
        var request = UpdateThreadRequest(threadId: "t")
        #expect(try UpdateThreadRequest(serializedBytes: request.serializedBytes()).titleUpdate == nil)
        request.titleUpdate = .title("")
        // Set-to-empty differs from not-set: the oneof carries presence.
        #expect(try UpdateThreadRequest(serializedBytes: request.serializedBytes()).titleUpdate == .title(""))
        request.stateUpdate = .state(.archived)
        let decoded = try UpdateThreadRequest(serializedBytes: request.serializedBytes())
        #expect(decoded.stateUpdate == .state(.archived))
    }

    @Test("unknown enum values are kept")
    func unknownEnumValues() throws {
        let thread = Thread(state: .unrecognized(42))
        #expect(try Thread(serializedBytes: thread.serializedBytes()).state == .unrecognized(42))
        #expect(ThreadState(rawValue: 2) == .archived)
    }

    @Test("bytes keep NUL and 0xFF; text keeps non-ASCII")
    func bytesAndText() throws {
        let header = CallHeader(
            method: "/chat.v1.ThreadService/ListThreads",
            idempotencyKey: [0, 0xFF, 0, 1],
            metadata: [MetadataEntry(key: "x-lang", value: Array("ü".utf8))]
        )
        let decoded = try CallHeader(serializedBytes: header.serializedBytes())
        #expect(decoded == header)
        let message = Message(body: "Grüße, 你好 👋🏽")
        #expect(try Message(serializedBytes: message.serializedBytes()).body == "Grüße, 你好 👋🏽")
    }

    /// True when the value equals its type's default, as for messages without fields.
    static func isDefault(_ value: any ProtoMessage) -> Bool {
        func open<M: ProtoMessage>(_ value: M) -> Bool { value == M() }
        return open(value)
    }

    /// Decodes `bytes` as a message of the same type as `value`.
    static func decode(like value: any ProtoMessage, _ bytes: [UInt8]) throws -> any ProtoMessage {
        func open<M: ProtoMessage>(_: M) throws -> any ProtoMessage {
            try M(serializedBytes: bytes)
        }
        return try open(value)
    }
}

extension Fixture: CustomTestStringConvertible {
    var testDescription: String { "\(self.protoName)#\(self.seed)" }
}

/// `==` across existentials, for comparing decoded values with fixtures.
func == (lhs: any ProtoMessage, rhs: any ProtoMessage) -> Bool {
    func equals<M: ProtoMessage>(_ lhs: M, _ rhs: any ProtoMessage) -> Bool {
        (rhs as? M) == lhs
    }
    return equals(lhs, rhs)
}
