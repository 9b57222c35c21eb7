"""The framing of chat/1 (docs/PROTOCOL.md sections 2 to 4): the preface, frames and message envelopes, as pure
functions and incremental decoders with their limits. No I/O: the connection feeds bytes in and takes frames out.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

PREFACE = b"CHAT\r\n\x01\n"
"""What the client sends first after the TLS handshake (section 2)."""

HEADER_SIZE = 9
MAX_STREAM_ID = 0x7FFFFFFF
DEFAULT_MAX_FRAME_SIZE = 16_384
"""MAX_FRAME_SIZE until the peer's SETTINGS say otherwise (section 5)."""
DEFAULT_MAX_MESSAGE_SIZE = 4 * 1024 * 1024
"""MAX_MESSAGE_SIZE until the peer's SETTINGS say otherwise (section 5)."""
ENVELOPE_HEADER_SIZE = 5


class FrameType(enum.IntEnum):
    DATA = 0x0
    HEADERS = 0x1
    TRAILERS = 0x2
    CANCEL = 0x3
    WINDOW_UPDATE = 0x4
    PING = 0x5
    GOAWAY = 0x6
    SETTINGS = 0x7


END_STREAM = 0x1
"""DATA: the sender's last frame on the stream."""
ACK = 0x1
"""PING and SETTINGS: an answer."""


class ErrorCode(enum.IntEnum):
    """CANCEL and GOAWAY codes (section 3); unknown ones mean INTERNAL_ERROR."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    ENHANCE_YOUR_CALM = 0xB


class WireError(Exception):
    """A violation of the protocol by the peer; `code` is what a GOAWAY or CANCEL would carry."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code


@dataclass(frozen=True)
class Frame:
    """One frame. `kind` is an int: frames of an unknown type are kept (and ignored by the caller)."""

    kind: int
    flags: int
    stream: int
    payload: bytes

    def encode(self) -> bytes:
        return encode_frame(self.kind, self.flags, self.stream, self.payload)


def encode_frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    """The 9-byte header and the payload."""
    length = len(payload)
    if length > 0xFFFFFF:
        raise ValueError(f"a frame payload is at most 2^24-1 bytes, not {length}")
    if not 0 <= stream <= MAX_STREAM_ID:
        raise ValueError(f"stream id {stream} is out of range")
    return struct.pack(">BHBBI", length >> 16, length & 0xFFFF, kind, flags, stream) + payload


class FrameDecoder:
    """Splits bytes into frames. A length over `max_frame_size` is refused from the header, before the payload is
    buffered (FRAME_SIZE_ERROR)."""

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= HEADER_SIZE:
            high, low, kind, flags, stream = struct.unpack_from(">BHBBI", self._buffer)
            length = (high << 16) | low
            if length > self.max_frame_size:
                raise WireError(
                    ErrorCode.FRAME_SIZE_ERROR, f"a frame of {length} bytes, over MAX_FRAME_SIZE {self.max_frame_size}"
                )
            if len(self._buffer) < HEADER_SIZE + length:
                break
            payload = bytes(self._buffer[HEADER_SIZE : HEADER_SIZE + length])
            del self._buffer[: HEADER_SIZE + length]
            frames.append(Frame(kind, flags, stream & MAX_STREAM_ID, payload))
        return frames

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held."""
        return len(self._buffer)


def encode_envelope(message: bytes) -> bytes:
    """One message envelope (section 4.1): flags 0 (uncompressed), the length, the message."""
    return struct.pack(">BI", 0, len(message)) + message


class MessageDeframer:
    """Splits a stream's DATA bytes into messages. A length over `max_message_size` is refused from the envelope
    header; a compressed envelope is refused (this version has no compression)."""

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self.max_message_size = max_message_size
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        messages: list[bytes] = []
        while len(self._buffer) >= ENVELOPE_HEADER_SIZE:
            flags, length = struct.unpack_from(">BI", self._buffer)
            if flags & 1:
                raise WireError(ErrorCode.INTERNAL_ERROR, "a compressed message (this version has none)")
            if length > self.max_message_size:
                raise WireError(
                    ErrorCode.CANCEL, f"a message of {length} bytes, over MAX_MESSAGE_SIZE {self.max_message_size}"
                )
            if len(self._buffer) < ENVELOPE_HEADER_SIZE + length:
                break
            messages.append(bytes(self._buffer[ENVELOPE_HEADER_SIZE : ENVELOPE_HEADER_SIZE + length]))
            del self._buffer[: ENVELOPE_HEADER_SIZE + length]
        return messages

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete message held."""
        return len(self._buffer)

    @property
    def pending_size(self) -> int | None:
        """The whole envelope size (header included) of the incomplete message, once its header is in."""
        if len(self._buffer) < ENVELOPE_HEADER_SIZE:
            return None
        length: int = struct.unpack_from(">I", self._buffer, 1)[0]
        return ENVELOPE_HEADER_SIZE + length
