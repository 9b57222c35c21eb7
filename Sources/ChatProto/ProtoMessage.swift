internal import CProtobufC

/// A message of the contract: a Swift value that encodes to and decodes from protobuf through protobuf-c.
///
/// Decoding validates before it unpacks (every `string` field must be UTF-8 without NUL bytes, which protobuf-c
/// does not check), copies into Swift values and frees the C message. Encoding builds the C message in an arena
/// and packs it straight into the caller's buffer.
public protocol ProtoMessage: Sendable, Hashable {
    /// The full proto name, e.g. `chat.v1.Thread`.
    static var protoName: String { get }

    /// Creates the message with every field at its default.
    init()

    /// Decodes a message from its protobuf encoding.
    ///
    /// - Parameter bytes: the encoded message.
    /// - Throws: `ProtoError` when the bytes are not a valid encoding of this message.
    init(serializedBytes bytes: UnsafeRawBufferPointer) throws(ProtoError)

    /// Builds the C form of the message, ready to be packed.
    ///
    /// - Throws: `ProtoError` when a string holds a NUL byte (protobuf-c strings are NUL-terminated).
    func packed() throws(ProtoError) -> PackedMessage
}

extension ProtoMessage {
    /// Decodes a message from its protobuf encoding.
    ///
    /// - Parameter bytes: the encoded message.
    public init(serializedBytes bytes: [UInt8]) throws(ProtoError) {
        let result: Result<Self, ProtoError> = bytes.withUnsafeBytes { raw in
            Result { () throws(ProtoError) in try Self(serializedBytes: raw) }
        }
        self = try result.get()
    }

    /// Encodes the message to a new array.
    public func serializedBytes() throws(ProtoError) -> [UInt8] {
        let packed = try self.packed()
        return [UInt8](unsafeUninitializedCapacity: packed.size) { buffer, count in
            count = packed.write(to: UnsafeMutableRawBufferPointer(buffer))
        }
    }
}

/// A message in its C form, with its exact encoded size, ready to be packed into any buffer.
public struct PackedMessage {
    /// The arena that owns every C allocation of the message.
    let arena: ProtoArena
    /// The C message, in the arena.
    let message: UnsafePointer<ProtobufCMessage>

    /// The exact number of bytes `write(to:)` produces.
    public let size: Int

    init(arena: ProtoArena, message: UnsafePointer<ProtobufCMessage>) {
        self.arena = arena
        self.message = message
        self.size = protobuf_c_message_get_packed_size(message)
    }

    /// Packs the message into the start of `buffer`.
    ///
    /// - Parameter buffer: at least `size` bytes.
    /// - Returns: the number of bytes written, which is `size`.
    public func write(to buffer: UnsafeMutableRawBufferPointer) -> Int {
        precondition(buffer.count >= self.size, "buffer smaller than the packed size")
        guard self.size > 0, let base = buffer.baseAddress else { return 0 }
        return withExtendedLifetime(self.arena) {
            protobuf_c_message_pack(self.message, base.assumingMemoryBound(to: UInt8.self))
        }
    }
}

/// Why a message could not be encoded or decoded.
public struct ProtoError: Error, Hashable, CustomStringConvertible {
    /// The kind of failure.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable {
            case malformed
            case invalidUTF8
            case embeddedNUL
            case tooComplex
        }

        private let base: Base

        /// The bytes are not a protobuf encoding of the message (truncated, bad tag or length, wrong wire type).
        public static let malformed = Code(base: .malformed)
        /// A string field holds bytes that are not UTF-8.
        public static let invalidUTF8 = Code(base: .invalidUTF8)
        /// A string field holds a NUL byte, which a C string would silently truncate.
        public static let embeddedNUL = Code(base: .embeddedNUL)
        /// Decoding would need more memory than the encoding's size justifies.
        public static let tooComplex = Code(base: .tooComplex)

        public var description: String {
            switch self.base {
            case .malformed: "malformed"
            case .invalidUTF8: "invalid UTF-8"
            case .embeddedNUL: "embedded NUL"
            case .tooComplex: "too complex"
            }
        }
    }

    /// The kind of failure.
    public let code: Code
    /// The field, as `Message.field` (nested fields joined by dots), when the failure is about one field.
    public let field: String?
    /// The message type being encoded or decoded.
    public let messageType: String

    /// Creates an error.
    ///
    /// - Parameters:
    ///   - code: the kind of failure.
    ///   - field: the field at fault, if any.
    ///   - messageType: the full proto name of the message.
    public init(code: Code, field: String?, messageType: String) {
        self.code = code
        self.field = field
        self.messageType = messageType
    }

    public var description: String {
        if let field = self.field {
            return "\(self.messageType): field \(field): \(self.code)"
        }
        return "\(self.messageType): \(self.code)"
    }
}
