internal import CProtobufC

/// Checks an encoded message before protobuf-c unpacks it.
///
/// protobuf-c copies `string` fields without validating them and NUL-terminates them, so invalid UTF-8 would
/// reach Swift and a NUL inside a string would silently truncate it. The validator walks the wire format with the
/// message's descriptor and rejects both, naming the field. It also rejects what protobuf-c would reject
/// (truncation, bad wire types, groups), so every error it finds is precise.
enum ProtoValidator {
    /// protobuf-c has no nesting limit; the contract has no recursive types, so any deeper nesting is hostile.
    static let maxDepth = 32

    /// Validates `bytes` as an encoding of the message described by `descriptor`.
    static func validate(
        _ bytes: UnsafeRawBufferPointer,
        descriptor: UnsafePointer<ProtobufCMessageDescriptor>,
        messageType: String
    ) throws(ProtoError) {
        var path: [UnsafePointer<CChar>] = []
        try Self.walk(bytes, descriptor: descriptor, depth: 0, path: &path, messageType: messageType)
    }

    private static func walk(
        _ bytes: UnsafeRawBufferPointer,
        descriptor: UnsafePointer<ProtobufCMessageDescriptor>,
        depth: Int,
        path: inout [UnsafePointer<CChar>],
        messageType: String
    ) throws(ProtoError) {
        func fail(_ code: ProtoError.Code, _ field: UnsafePointer<CChar>? = nil) -> ProtoError {
            var names = path.map { String(cString: $0) }
            if let field { names.append(String(cString: field)) }
            return ProtoError(
                code: code,
                field: names.isEmpty ? nil : names.joined(separator: "."),
                messageType: messageType
            )
        }
        guard depth <= Self.maxDepth else { throw fail(.tooComplex) }
        var reader = WireReader(bytes: bytes)
        while !reader.isAtEnd {
            guard let tag = reader.readVarint(), tag >> 3 != 0, tag >> 3 <= 0x1FFF_FFFF else { throw fail(.malformed) }
            let number = UInt32(truncatingIfNeeded: tag >> 3)
            switch tag & 7 {
            case 0:
                guard reader.readVarint() != nil else { throw fail(.malformed) }
            case 1:
                guard reader.skip(8) else { throw fail(.malformed) }
            case 5:
                guard reader.skip(4) else { throw fail(.malformed) }
            case 2:
                guard let length = reader.readVarint(), let payload = reader.take(length) else {
                    throw fail(.malformed)
                }
                guard let field = protobuf_c_message_descriptor_get_field(descriptor, number) else { continue }
                switch field.pointee.type {
                case PROTOBUF_C_TYPE_STRING:
                    if let error = UTF8Check.validate(payload) {
                        throw fail(error, field.pointee.name)
                    }
                case PROTOBUF_C_TYPE_MESSAGE:
                    guard let nested = field.pointee.descriptor else { continue }
                    path.append(field.pointee.name)
                    try Self.walk(
                        payload,
                        descriptor: nested.assumingMemoryBound(to: ProtobufCMessageDescriptor.self),
                        depth: depth + 1,
                        path: &path,
                        messageType: messageType
                    )
                    path.removeLast()
                default:
                    continue
                }
            default:
                // Groups (3, 4) do not exist in proto3; 6 and 7 are not wire types.
                throw fail(.malformed)
            }
        }
    }
}

/// A bounds-checked cursor over protobuf wire bytes.
struct WireReader {
    private let bytes: UnsafeRawBufferPointer
    private var offset = 0

    init(bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
    }

    var isAtEnd: Bool { self.offset >= self.bytes.count }

    /// Reads a base-128 varint of at most 10 bytes; nil when truncated or too long.
    mutating func readVarint() -> UInt64? {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while self.offset < self.bytes.count, shift < 70 {
            let byte = self.bytes[self.offset]
            self.offset += 1
            result |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return result }
            shift += 7
        }
        return nil
    }

    /// Skips `count` bytes; false when fewer remain.
    mutating func skip(_ count: Int) -> Bool {
        guard self.bytes.count - self.offset >= count else { return false }
        self.offset += count
        return true
    }

    /// Takes the next `length` bytes; nil when fewer remain.
    mutating func take(_ length: UInt64) -> UnsafeRawBufferPointer? {
        guard length <= UInt64(self.bytes.count - self.offset) else { return nil }
        let start = self.offset
        self.offset += Int(length)
        return UnsafeRawBufferPointer(rebasing: self.bytes[start..<self.offset])
    }
}

/// Strict UTF-8 validation (no overlong forms, no surrogates, nothing above U+10FFFF) that also rejects NUL.
enum UTF8Check {
    /// Returns nil when the bytes are valid, otherwise the kind of failure.
    static func validate(_ bytes: UnsafeRawBufferPointer) -> ProtoError.Code? {
        var index = 0
        let count = bytes.count
        while index < count {
            let lead = bytes[index]
            if lead < 0x80 {
                if lead == 0 { return .embeddedNUL }
                index += 1
                continue
            }
            let length: Int
            var lowerBound: UInt8 = 0x80
            var upperBound: UInt8 = 0xBF
            switch lead {
            case 0xC2...0xDF:
                length = 2
            case 0xE0:
                length = 3
                lowerBound = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF:
                length = 3
            case 0xED:
                length = 3
                upperBound = 0x9F
            case 0xF0:
                length = 4
                lowerBound = 0x90
            case 0xF1...0xF3:
                length = 4
            case 0xF4:
                length = 4
                upperBound = 0x8F
            default:
                return .invalidUTF8
            }
            guard index + length <= count else { return .invalidUTF8 }
            let second = bytes[index + 1]
            guard second >= lowerBound, second <= upperBound else { return .invalidUTF8 }
            var continuation = 2
            while continuation < length {
                guard bytes[index + continuation] & 0xC0 == 0x80 else { return .invalidUTF8 }
                continuation += 1
            }
            index += length
        }
        return nil
    }
}
