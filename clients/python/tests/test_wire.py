"""The framing and the generated messages, without a server."""

import pytest

from chatd_client import rpc_pb2, threads_pb2
from chatd_client.wire import (
    ACK,
    END_STREAM,
    ErrorCode,
    Frame,
    FrameDecoder,
    FrameType,
    MessageDeframer,
    WireError,
    encode_envelope,
    encode_frame,
)


def test_frames_round_trip_split_at_every_byte() -> None:
    frames = [
        Frame(FrameType.SETTINGS, 0, 0, b""),
        Frame(FrameType.HEADERS, 0, 1, b"header"),
        Frame(FrameType.DATA, END_STREAM, 1, b"x" * 300),
        Frame(FrameType.PING, ACK, 0, b"12345678"),
        Frame(0x42, 0, 3, b"unknown types are kept for the caller to ignore"),
    ]
    wire = b"".join(frame.encode() for frame in frames)
    decoder = FrameDecoder()
    out: list[Frame] = []
    for i in range(len(wire)):
        out += decoder.feed(wire[i : i + 1])
    assert out == frames
    assert decoder.buffered == 0


def test_frame_header_layout_and_reserved_bit() -> None:
    assert encode_frame(FrameType.DATA, END_STREAM, 5, b"ab") == b"\x00\x00\x02\x00\x01\x00\x00\x00\x05ab"
    # The reserved bit is ignored on receipt.
    (frame,) = FrameDecoder().feed(b"\x00\x00\x00\x07\x00\x80\x00\x00\x00")
    assert frame.stream == 0


def test_oversized_frame_refused_from_its_header() -> None:
    # A header announcing 16,385 bytes: refused before any payload arrives.
    with pytest.raises(WireError) as raised:
        FrameDecoder(max_frame_size=16_384).feed(b"\x00\x40\x01\x00\x00\x00\x00\x00\x01")
    assert raised.value.code == ErrorCode.FRAME_SIZE_ERROR
    assert FrameDecoder(max_frame_size=16_385).feed(b"\x00\x40\x01\x00\x00\x00\x00\x00\x01") == []


def test_envelopes_across_frames_and_several_in_one() -> None:
    messages = [b"", b"one", b"two" * 1000]
    data = b"".join(encode_envelope(m) for m in messages)
    deframer = MessageDeframer()
    out: list[bytes] = []
    for i in range(0, len(data), 7):
        out += deframer.feed(data[i : i + 7])
    assert out == messages


def test_envelope_limits() -> None:
    with pytest.raises(WireError):
        MessageDeframer(max_message_size=10).feed(b"\x00\x00\x00\x00\x0b")
    with pytest.raises(WireError):
        MessageDeframer().feed(b"\x01\x00\x00\x00\x00")


def test_generated_messages_encode_as_the_contract_says() -> None:
    header = rpc_pb2.CallHeader(method="/chat.v1.ThreadService/GetThread", timeout_us=250_000, attempt=1)
    header.trace.trace_id = bytes(range(16))
    header.trace.span_id = bytes(range(1, 9))
    decoded = rpc_pb2.CallHeader.FromString(header.SerializeToString())
    assert decoded == header
    assert decoded.HasField("trace")
    request = threads_pb2.CreateThreadRequest(learner_id="a1000000-0000-4000-8000-000000000011", title="t")
    assert threads_pb2.CreateThreadRequest.FromString(request.SerializeToString()).title == "t"
    assert rpc_pb2.STATUS_CODE_UNAUTHENTICATED == 16
