// Bytes as the contract's messages: protobuf-c decoding with chatd's validation; whatever decodes re-encodes to a
// message that decodes to the same value.
import ChatProto
import FuzzDriver
import Glibc

func roundTrip<Message: ProtoMessage>(_: Message.Type, _ bytes: UnsafeRawBufferPointer) {
    guard let message = try? Message(serializedBytes: bytes) else { return }
    guard let encoded = try? message.serializedBytes() else {
        preconditionFailure("\(Message.protoName) decoded but does not encode")
    }
    guard let again = try? Message(serializedBytes: encoded) else {
        preconditionFailure("\(Message.protoName) re-encoded does not decode")
    }
    precondition(again == message, "\(Message.protoName) does not round-trip")
}

let messages: [@Sendable (UnsafeRawBufferPointer) -> Void] = [
    { roundTrip(CallHeader.self, $0) }, { roundTrip(CallStatus.self, $0) },
    { roundTrip(SendMessageRequest.self, $0) }, { roundTrip(CreateThreadRequest.self, $0) },
    { roundTrip(UpdateThreadRequest.self, $0) }, { roundTrip(ListThreadsRequest.self, $0) },
    { roundTrip(ListMessagesRequest.self, $0) }, { roundTrip(EditMessageRequest.self, $0) },
    { roundTrip(MarkReadRequest.self, $0) }, { roundTrip(WatchThreadRequest.self, $0) },
    { roundTrip(WatchInboxRequest.self, $0) }, { roundTrip(SubscribeEventsRequest.self, $0) },
    { roundTrip(ExportLearnerDataRequest.self, $0) }, { roundTrip(EraseLearnerDataRequest.self, $0) },
    { roundTrip(PlaceLegalHoldRequest.self, $0) }, { roundTrip(SetRetentionPolicyRequest.self, $0) },
    { roundTrip(ListAuditRecordsRequest.self, $0) }, { roundTrip(Message.self, $0) },
]

func fuzzProto(_ bytes: UnsafeRawBufferPointer) -> CInt {
    guard let first = bytes.first else { return 0 }
    messages[Int(first) % messages.count](UnsafeRawBufferPointer(rebasing: bytes.dropFirst()))
    return 0
}

/// libFuzzer's entry for one input (its own `main` refers to it; ours runs its driver).
@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    fuzzProto(fuzzBytes(data, count))
}

exit(runFuzzer(testOneInput))
