internal import CProtobufC
internal import Glibc

/// What the generated code adds to a message: its protobuf-c struct and the converters to and from it.
protocol CProtoBridged: ProtoMessage {
    /// The protoc-c struct of the message.
    associatedtype CMessage

    /// The protoc-c descriptor of the message.
    static var cDescriptor: UnsafePointer<ProtobufCMessageDescriptor> { get }

    /// Copies an unpacked C message into Swift values.
    init(c: UnsafePointer<CMessage>)

    /// Fills a C message whose pointers all point into `arena`.
    func fill(_ c: UnsafeMutablePointer<CMessage>, arena: ProtoArena) throws(ProtoError)
}

// MARK: - Encoding

/// A bump allocator for the C form of one message being encoded; everything is freed with the arena.
final class ProtoArena {
    /// The full proto name of the message being encoded, for errors.
    let rootName: String
    private var blocks: [UnsafeMutableRawPointer] = []
    private var cursor: UnsafeMutableRawPointer?
    private var remaining = 0

    private static let blockSize = 4096

    init(rootName: String) {
        self.rootName = rootName
    }

    deinit {
        for block in self.blocks {
            free(block)
        }
    }

    /// Returns `byteCount` bytes aligned to `alignment`, owned by the arena.
    func allocate(byteCount: Int, alignment: Int) -> UnsafeMutableRawPointer {
        if let cursor = self.cursor {
            let address = Int(bitPattern: cursor)
            let aligned = (address + alignment - 1) & ~(alignment - 1)
            let needed = aligned - address + byteCount
            if needed <= self.remaining {
                self.cursor = cursor + needed
                self.remaining -= needed
                return UnsafeMutableRawPointer(bitPattern: aligned)!
            }
        }
        if byteCount > Self.blockSize / 4 {
            let block = malloc(max(byteCount, 1))!
            self.blocks.append(block)
            return block
        }
        let block = malloc(Self.blockSize)!
        self.blocks.append(block)
        self.cursor = block + byteCount
        self.remaining = Self.blockSize - byteCount
        return block
    }

    /// Returns uninitialized memory for `count` values of `type`.
    func allocate<T>(_ type: T.Type, count: Int) -> UnsafeMutablePointer<T> {
        self.allocate(byteCount: MemoryLayout<T>.stride * count, alignment: MemoryLayout<T>.alignment)
            .bindMemory(to: T.self, capacity: count)
    }

    /// Copies a string into the arena as a C string.
    ///
    /// - Throws: `.embeddedNUL` when the string holds a NUL byte, which C would silently truncate.
    func cString(_ string: String, field: String) throws(ProtoError) -> UnsafeMutablePointer<CChar> {
        var string = string
        let copy: UnsafeMutablePointer<CChar>? = string.withUTF8 { utf8 in
            let count = utf8.count
            let target = self.allocate(CChar.self, count: count + 1)
            if let base = utf8.baseAddress, count > 0 {
                if memchr(base, 0, count) != nil {
                    return nil
                }
                memcpy(target, base, count)
            }
            target[count] = 0
            return target
        }
        guard let copy else {
            throw ProtoError(code: .embeddedNUL, field: field, messageType: self.rootName)
        }
        return copy
    }

    /// Copies bytes into the arena as a protobuf-c `bytes` value.
    func binary(_ bytes: [UInt8]) -> ProtobufCBinaryData {
        guard !bytes.isEmpty else { return ProtobufCBinaryData(len: 0, data: nil) }
        let target = self.allocate(UInt8.self, count: bytes.count)
        bytes.withUnsafeBufferPointer { source in
            _ = memcpy(target, source.baseAddress!, bytes.count)
        }
        return ProtobufCBinaryData(len: bytes.count, data: target)
    }

    /// Builds the C form of a nested message in the arena.
    func message<M: CProtoBridged>(_ value: M) throws(ProtoError) -> UnsafeMutablePointer<M.CMessage> {
        let target = self.allocate(M.CMessage.self, count: 1)
        try value.fill(target, arena: self)
        return target
    }

    /// Builds a C array of converted elements in the arena.
    func array<Element, C>(
        _ values: [Element],
        of type: C.Type,
        _ convert: (Element) throws(ProtoError) -> C
    ) throws(ProtoError) -> UnsafeMutablePointer<C> {
        let target = self.allocate(C.self, count: values.count)
        for (index, value) in values.enumerated() {
            (target + index).initialize(to: try convert(value))
        }
        return target
    }
}

/// Builds the C form of a message, ready to be packed.
func protoPack<M: CProtoBridged>(_ value: M) throws(ProtoError) -> PackedMessage {
    let arena = ProtoArena(rootName: M.protoName)
    let message = try arena.message(value)
    let base = UnsafeRawPointer(message).assumingMemoryBound(to: ProtobufCMessage.self)
    return PackedMessage(arena: arena, message: base)
}

// MARK: - Decoding

/// The state behind the budgeted allocator that protobuf-c decodes with.
private struct DecodeBudget {
    var allocator: ProtobufCAllocator
    var remaining: Int
    var exhausted = false
}

/// Decoding may allocate this many bytes per encoded byte, plus a fixed allowance: a legitimate message never
/// comes close, while a flood of empty sub-messages (two bytes on the wire, a whole struct in memory) is refused
/// before it can exhaust memory.
private let decodeBytesPerEncodedByte = 32
private let decodeFixedAllowance = 64 * 1024

private func budgetedAlloc(_ data: UnsafeMutableRawPointer?, _ size: Int) -> UnsafeMutableRawPointer? {
    let budget = data!.assumingMemoryBound(to: DecodeBudget.self)
    guard size <= budget.pointee.remaining else {
        budget.pointee.exhausted = true
        return nil
    }
    budget.pointee.remaining -= size
    return malloc(max(size, 1))
}

private func budgetedFree(_ data: UnsafeMutableRawPointer?, _ pointer: UnsafeMutableRawPointer?) {
    free(pointer)
}

/// Validates, unpacks with a budgeted allocator, copies into Swift values and frees the C message.
func protoDecode<M: CProtoBridged>(_ type: M.Type, _ bytes: UnsafeRawBufferPointer) throws(ProtoError) -> M {
    try ProtoValidator.validate(bytes, descriptor: M.cDescriptor, messageType: M.protoName)
    let budget = UnsafeMutablePointer<DecodeBudget>.allocate(capacity: 1)
    defer { budget.deallocate() }
    budget.initialize(
        to: DecodeBudget(
            allocator: ProtobufCAllocator(alloc: budgetedAlloc, free: budgetedFree, allocator_data: budget),
            remaining: decodeFixedAllowance + bytes.count * decodeBytesPerEncodedByte
        )
    )
    let allocatorOffset = MemoryLayout<DecodeBudget>.offset(of: \DecodeBudget.allocator)!
    let allocator = (UnsafeMutableRawPointer(budget) + allocatorOffset).assumingMemoryBound(to: ProtobufCAllocator.self)
    var empty: UInt8 = 0
    let unpacked = withUnsafeMutablePointer(to: &empty) { emptyPointer in
        let base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? UnsafePointer(emptyPointer)
        return protobuf_c_message_unpack(M.cDescriptor, allocator, bytes.count, base)
    }
    guard let unpacked else {
        let code: ProtoError.Code = budget.pointee.exhausted ? .tooComplex : .malformed
        throw ProtoError(code: code, field: nil, messageType: M.protoName)
    }
    defer { protobuf_c_message_free_unpacked(unpacked, allocator) }
    return M(c: UnsafeRawPointer(unpacked).assumingMemoryBound(to: M.CMessage.self))
}

/// Copies a C string that protobuf-c unpacked (and the validator checked) into a Swift string.
@inline(__always)
func protoString(_ pointer: UnsafePointer<CChar>?) -> String {
    guard let pointer else { return "" }
    return String(cString: pointer)
}

/// Copies a protobuf-c `bytes` value.
@inline(__always)
func protoBytes(_ value: ProtobufCBinaryData) -> [UInt8] {
    guard value.len > 0, let data = value.data else { return [] }
    return Array(UnsafeBufferPointer(start: data, count: value.len))
}

/// Copies a protobuf-c repeated field.
@inline(__always)
func protoArray<C, Element>(_ pointer: UnsafeMutablePointer<C>?, _ count: Int, _ convert: (C) -> Element) -> [Element] {
    guard let pointer, count > 0 else { return [] }
    var result: [Element] = []
    result.reserveCapacity(count)
    for index in 0..<count {
        result.append(convert(pointer[index]))
    }
    return result
}
