"""One chat/1 connection over TLS 1.3 with asyncio (docs/PROTOCOL.md sections 2 to 8): many concurrent calls on
one connection, flow control both ways, deadlines and cancellation.

Flow control: the connection's receive credit goes back as soon as DATA is read; a stream's only as its messages
are consumed, so a caller that does not read holds back only its own stream, and the client buffers at most one
stream window (INITIAL_WINDOW_SIZE) per stream; it goes back in batches of an eighth of the window. Requests respect
the server's windows and MAX_FRAME_SIZE.

Writes: frames are queued and written together at the end of the event loop's turn (one TLS record and one system
call for every call started in that turn); a writer waits for the transport to drain past WRITE_BUFFER_LIMIT.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import struct
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from chatd_client.errors import ChatError, status_error
from chatd_client.proto import rpc_pb2
from chatd_client.wire import (
    ACK,
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_MESSAGE_SIZE,
    END_STREAM,
    MAX_STREAM_ID,
    PREFACE,
    ErrorCode,
    Frame,
    FrameDecoder,
    FrameType,
    MessageDeframer,
    WireError,
    encode_envelope,
    encode_frame,
)

MAX_CONCURRENT_STREAMS = 0x1
INITIAL_WINDOW_SIZE = 0x2
MAX_FRAME_SIZE = 0x3
MAX_MESSAGE_SIZE = 0x4
MAX_HEADER_SIZE = 0x5
CONNECTION_WINDOW = 0x7

#: What this client advertises: 1 MiB per stream, 16 MiB for the connection (what chatd advertises too).
STREAM_WINDOW = 1 << 20
RECEIVE_CONNECTION_WINDOW = 16 << 20
MAX_WINDOW = (1 << 31) - 1
#: Stream credit goes back once this much was consumed.
CREDIT_BATCH = STREAM_WINDOW // 8
#: Past this many bytes queued in the TLS transport, a writer waits for it to drain.
WRITE_BUFFER_LIMIT = 1 << 20


@dataclass
class _Peer:
    """The server's settings (the defaults until its SETTINGS arrive)."""

    max_concurrent_streams: int = 100
    initial_window: int = 65_535
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_header_size: int = 8192


@dataclass
class _Stream:
    """One call's state on the connection."""

    id: int
    send_window: int
    deframer: MessageDeframer
    messages: asyncio.Queue[bytes | rpc_pb2.CallStatus | ChatError] = field(default_factory=asyncio.Queue)
    window_changed: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False
    #: Bytes of received messages the caller has not consumed yet (at most the stream window).
    buffered: int = 0
    #: DATA bytes received and not yet credited back: more than the window advertised is the server's
    #: FLOW_CONTROL_ERROR, so a server that ignores the window cannot make the client buffer without bound.
    outstanding: int = 0
    #: Bytes the caller consumed whose credit has not gone back yet (at most CREDIT_BATCH).
    consumed: int = 0


class Connection:
    """A chat/1 connection. Open it with `Connection.open`; make calls with `call`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._peer = _Peer()
        self._decoder = FrameDecoder(max_frame_size=DEFAULT_MAX_FRAME_SIZE)
        self._streams: dict[int, _Stream] = {}
        self._next_stream_id = 1
        self._connection_send_window = 65_535
        self._connection_window_changed = asyncio.Event()
        self._unacknowledged = 0
        self._slots = asyncio.Semaphore(self._peer.max_concurrent_streams)
        self._slot_limit = self._peer.max_concurrent_streams
        self._going_away: int | None = None
        self._closed: ChatError | None = None
        #: Frames queued in this turn of the event loop, written together at its end (`_flush`): the calls made
        #: in one turn share one TLS record and one system call.
        self._out = bytearray()
        self._flush_scheduled = False
        self._reader_task: asyncio.Task[None] | None = None
        #: PINGs sent and not yet acknowledged, by payload.
        self._pings: dict[bytes, asyncio.Future[None]] = {}

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float = 10.0,
    ) -> Connection:
        """Connects, completes the TLS 1.3 handshake with ALPN chat/1, and sends the preface and SETTINGS."""
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.set_alpn_protocols(["chat/1"])
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, server_hostname=server_hostname or host),
            timeout,
        )
        ssl_object = writer.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "chat/1":
            writer.close()
            raise ChatError(rpc_pb2.STATUS_CODE_UNAVAILABLE, "the server did not agree on chat/1", not_processed=True)
        connection = cls(reader, writer)
        settings = struct.pack(
            ">HIHI", INITIAL_WINDOW_SIZE, STREAM_WINDOW, CONNECTION_WINDOW, RECEIVE_CONNECTION_WINDOW
        )
        writer.write(PREFACE + encode_frame(FrameType.SETTINGS, 0, 0, settings))
        await writer.drain()
        connection._reader_task = asyncio.get_running_loop().create_task(connection._read_loop())
        return connection

    @property
    def buffered_bytes(self) -> int:
        """Bytes of received messages no caller has consumed yet, all streams."""
        return sum(stream.buffered for stream in self._streams.values())

    @property
    def is_usable(self) -> bool:
        """False once the server said GOAWAY or the connection closed: new calls go to a new connection."""
        return self._going_away is None and self._closed is None

    async def close(self) -> None:
        """Closes the connection; calls still open fail with UNAVAILABLE."""
        self._fail_all(ChatError(rpc_pb2.STATUS_CODE_UNAVAILABLE, "the connection was closed"))
        if self._reader_task is not None:
            self._reader_task.cancel()
        self._flush()
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass

    async def ping(self, timeout: float) -> bool:
        """Sends a PING and waits for its ACK: False (and the connection is closed, its calls failing with
        UNAVAILABLE) when none comes within `timeout` seconds. Used on a stream that went quiet for longer than the
        server's heartbeats allow, to tell a dead connection from a quiet stream. chatd allows a PING every
        KEEPALIVE_MIN_INTERVAL_MS; this is sent at most once per stall."""
        if not self.is_usable:
            return False
        payload = os.urandom(8)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pings[payload] = waiter
        try:
            self._send(encode_frame(FrameType.PING, 0, 0, payload))
            await asyncio.wait_for(waiter, timeout)
            return True
        except (asyncio.TimeoutError, ConnectionError, ssl.SSLError, OSError):
            self._fail_all(ChatError(rpc_pb2.STATUS_CODE_UNAVAILABLE, f"no PING answer within {timeout} s"))
            self._writer.close()
            return False
        finally:
            self._pings.pop(payload, None)

    # MARK: calls

    async def call(self, header: rpc_pb2.CallHeader, request: bytes) -> AsyncGenerator[bytes, None]:
        """Opens a stream for `header`, sends `request`, and yields each response message's bytes; ends at TRAILERS
        OK and raises `ChatError` for any other status. Leaving the iteration early cancels the call (CANCEL)."""
        if not self.is_usable:
            raise ChatError(
                rpc_pb2.STATUS_CODE_UNAVAILABLE, "the connection is closing; not processed", not_processed=True
            )
        await self._slots.acquire()
        stream: _Stream | None = None
        try:
            stream = self._open_stream()
            encoded = header.SerializeToString()
            if len(encoded) > self._peer.max_header_size:
                raise ChatError(
                    rpc_pb2.STATUS_CODE_RESOURCE_EXHAUSTED,
                    f"the call header is {len(encoded)} bytes, over the server's {self._peer.max_header_size}",
                    not_processed=True,
                )
            self._send(encode_frame(FrameType.HEADERS, 0, stream.id, encoded))
            await self._send_data(stream, encode_envelope(request))
            while True:
                item = await stream.messages.get()
                if isinstance(item, bytes):
                    # Consumed: the stream's credit goes back (flow control per stream follows the reader).
                    stream.buffered -= len(item) + 5
                    self._return_stream_credit(stream, len(item) + 5)
                    yield item
                elif isinstance(item, ChatError):
                    raise item
                else:
                    if item.code != rpc_pb2.STATUS_CODE_OK:
                        raise status_error(item)
                    return
        finally:
            if stream is not None and not stream.ended:
                stream.ended = True
                await self._send_cancel(stream.id)
            if stream is not None:
                self._streams.pop(stream.id, None)
            self._slots.release()

    def _open_stream(self) -> _Stream:
        if self._next_stream_id > MAX_STREAM_ID:
            self._going_away = 0
            raise ChatError(rpc_pb2.STATUS_CODE_UNAVAILABLE, "stream ids ran out; not processed", not_processed=True)
        stream = _Stream(
            id=self._next_stream_id,
            send_window=self._peer.initial_window,
            deframer=MessageDeframer(max_message_size=DEFAULT_MAX_MESSAGE_SIZE),
        )
        self._next_stream_id += 2
        self._streams[stream.id] = stream
        return stream

    async def _send_data(self, stream: _Stream, data: bytes) -> None:
        """Sends `data` with END_STREAM in frames within MAX_FRAME_SIZE and both send windows."""
        offset = 0
        while True:
            remaining = len(data) - offset
            size = min(remaining, self._peer.max_frame_size, stream.send_window, self._connection_send_window)
            if size == 0 and remaining > 0:
                # Both windows must have room: wait for WINDOW_UPDATE.
                stream.window_changed.clear()
                self._connection_window_changed.clear()
                waiters = [
                    asyncio.ensure_future(stream.window_changed.wait()),
                    asyncio.ensure_future(self._connection_window_changed.wait()),
                ]
                try:
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in waiters:
                        waiter.cancel()
                if stream.ended:
                    return
                continue
            chunk = data[offset : offset + size]
            offset += size
            stream.send_window -= size
            self._connection_send_window -= size
            last = offset >= len(data)
            self._send(encode_frame(FrameType.DATA, END_STREAM if last else 0, stream.id, chunk))
            if self._writer.transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
                self._flush()
                await self._writer.drain()
            if last:
                return

    def _return_stream_credit(self, stream: _Stream, amount: int) -> None:
        # Credit goes back in batches of CREDIT_BATCH (an eighth of the window): the server always has most of the
        # window to send into, and a stream of small messages costs one WINDOW_UPDATE per batch, not per message.
        stream.consumed += amount
        if stream.ended or stream.consumed < CREDIT_BATCH:
            return
        stream.outstanding -= stream.consumed
        self._send(encode_frame(FrameType.WINDOW_UPDATE, 0, stream.id, struct.pack(">I", stream.consumed)))
        stream.consumed = 0

    async def _send_cancel(self, stream_id: int) -> None:
        if self._closed is not None:
            return
        self._send(encode_frame(FrameType.CANCEL, 0, stream_id, struct.pack(">I", ErrorCode.CANCEL)))

    def _send(self, frame: bytes) -> None:
        """Queues a frame; the queue is written at the end of this turn of the event loop."""
        self._out += frame
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._out:
            return
        data, self._out = bytes(self._out), bytearray()
        if self._writer.is_closing():
            return
        try:
            self._writer.write(data)
        except (ConnectionError, RuntimeError, ssl.SSLError):
            pass

    # MARK: reading

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self._reader.read(65_536)
                if not data:
                    self._fail_all(ChatError(rpc_pb2.STATUS_CODE_UNAVAILABLE, "the server closed the connection"))
                    return
                for frame in self._decoder.feed(data):
                    self._handle(frame)
                if self._writer.transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
                    self._flush()
                    await self._writer.drain()
        except WireError as error:
            self._send_goaway(error.code, str(error))
            self._fail_all(ChatError(rpc_pb2.STATUS_CODE_INTERNAL, f"protocol error from the server: {error}"))
        except (ConnectionError, ssl.SSLError, OSError) as error:
            self._fail_all(ChatError(rpc_pb2.STATUS_CODE_UNAVAILABLE, f"the connection failed: {error}"))

    def _handle(self, frame: Frame) -> None:
        kind = frame.kind
        if kind == FrameType.SETTINGS:
            if not frame.flags & ACK:
                self._apply_settings(frame.payload)
                self._send(encode_frame(FrameType.SETTINGS, ACK, 0, b""))
        elif kind == FrameType.PING:
            if not frame.flags & ACK:
                # Before the frames already queued (docs/PROTOCOL.md 7).
                self._out[:0] = encode_frame(FrameType.PING, ACK, 0, frame.payload)
                self._send(b"")
            elif (waiter := self._pings.pop(frame.payload, None)) is not None and not waiter.done():
                waiter.set_result(None)
        elif kind == FrameType.WINDOW_UPDATE:
            (increment,) = struct.unpack(">I", frame.payload)
            increment &= MAX_WINDOW
            if frame.stream == 0:
                self._connection_send_window += increment
                self._connection_window_changed.set()
            elif (stream := self._streams.get(frame.stream)) is not None:
                stream.send_window += increment
                stream.window_changed.set()
        elif kind == FrameType.DATA:
            self._unacknowledged += len(frame.payload)
            if self._unacknowledged >= RECEIVE_CONNECTION_WINDOW // 2:
                # The connection's credit goes back as the bytes are read.
                self._send(encode_frame(FrameType.WINDOW_UPDATE, 0, 0, struct.pack(">I", self._unacknowledged)))
                self._unacknowledged = 0
            stream = self._streams.get(frame.stream)
            if stream is None or stream.ended:
                return
            stream.outstanding += len(frame.payload)
            if stream.outstanding > STREAM_WINDOW:
                raise WireError(
                    ErrorCode.FLOW_CONTROL_ERROR,
                    f"stream {stream.id}: {stream.outstanding} bytes sent into a window of {STREAM_WINDOW}",
                )
            try:
                for message in stream.deframer.feed(frame.payload):
                    stream.buffered += len(message) + 5
                    stream.messages.put_nowait(message)
            except WireError as error:
                self._end(stream, ChatError(rpc_pb2.STATUS_CODE_RESOURCE_EXHAUSTED, str(error)), cancel=True)
        elif kind == FrameType.TRAILERS:
            stream = self._streams.get(frame.stream)
            if stream is not None and not stream.ended:
                stream.ended = True
                stream.messages.put_nowait(rpc_pb2.CallStatus.FromString(frame.payload))
        elif kind == FrameType.CANCEL:
            stream = self._streams.get(frame.stream)
            if stream is not None and not stream.ended:
                (code,) = struct.unpack(">I", frame.payload)
                refused = code == ErrorCode.REFUSED_STREAM
                cancelled = ChatError(
                    rpc_pb2.STATUS_CODE_UNAVAILABLE if refused else rpc_pb2.STATUS_CODE_CANCELLED,
                    "the server refused the stream; not processed" if refused else "the server cancelled the call",
                    not_processed=refused,
                )
                self._end(stream, cancelled, cancel=False)
        elif kind == FrameType.GOAWAY:
            last, code = struct.unpack(">II", frame.payload[:8])
            last &= MAX_STREAM_ID
            self._going_away = last
            for stream in list(self._streams.values()):
                if stream.id > last and not stream.ended:
                    unprocessed = ChatError(
                        rpc_pb2.STATUS_CODE_UNAVAILABLE,
                        "the connection is closing; not processed",
                        not_processed=True,
                    )
                    self._end(stream, unprocessed, cancel=False)
        # Frames of unknown types are ignored (their length was checked).

    def _apply_settings(self, payload: bytes) -> None:
        for offset in range(0, len(payload), 6):
            identifier, value = struct.unpack_from(">HI", payload, offset)
            if identifier == MAX_CONCURRENT_STREAMS:
                self._resize_slots(value)
            elif identifier == INITIAL_WINDOW_SIZE:
                delta = value - self._peer.initial_window
                self._peer.initial_window = value
                for stream in self._streams.values():
                    stream.send_window += delta
                    stream.window_changed.set()
            elif identifier == MAX_FRAME_SIZE:
                self._peer.max_frame_size = value
            elif identifier == MAX_MESSAGE_SIZE:
                self._peer.max_message_size = value
            elif identifier == MAX_HEADER_SIZE:
                self._peer.max_header_size = value
            elif identifier == CONNECTION_WINDOW:
                self._connection_send_window += value - 65_535
                self._connection_window_changed.set()

    def _resize_slots(self, limit: int) -> None:
        # More room is handed out at once; a smaller limit than the default is enforced by the server, which refuses
        # the extra streams with REFUSED_STREAM (not processed: safe to retry).
        limit = min(limit, 10_000)
        while self._slot_limit < limit:
            self._slots.release()
            self._slot_limit += 1

    def _end(self, stream: _Stream, error: ChatError, cancel: bool) -> None:
        stream.ended = True
        stream.messages.put_nowait(error)
        stream.window_changed.set()
        if cancel:
            self._send(encode_frame(FrameType.CANCEL, 0, stream.id, struct.pack(">I", ErrorCode.CANCEL)))

    def _send_goaway(self, code: ErrorCode, text: str) -> None:
        debug = text.encode("utf-8")[:256]
        self._send(encode_frame(FrameType.GOAWAY, 0, 0, struct.pack(">II", 0, code) + debug))
        self._flush()

    def _fail_all(self, error: ChatError) -> None:
        if self._closed is None:
            self._closed = error
        for stream in list(self._streams.values()):
            if not stream.ended:
                self._end(stream, error, cancel=False)
