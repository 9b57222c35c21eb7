"""One chat/1 connection over TLS 1.3 with asyncio (docs/PROTOCOL.md sections 2 to 8): many concurrent calls on
one connection, flow control both ways, deadlines and cancellation.

Flow control: the connection's receive credit goes back as soon as DATA is read; a stream's only as its messages
are consumed (in batches of an eighth of the window), so a caller that does not read holds back only its own
stream, and the client buffers at most one stream window (INITIAL_WINDOW_SIZE) per stream. The
bytes of a message larger than the window are credited as they come, or it could never arrive; MAX_MESSAGE_SIZE
bounds them. Requests respect the server's windows and MAX_FRAME_SIZE.

Writes: frames are queued and written together at the end of the event loop's turn (one TLS record and one system
call for every call started in that turn); a writer waits for the transport to drain past WRITE_BUFFER_LIMIT.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
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
    #: Bytes of the incomplete message at the deframer's tail already credited back, and for each queued message
    #: how many of its bytes were (so that no byte is credited twice).
    tail_credited: int = 0
    early: collections.deque[int] = field(default_factory=collections.deque)


class Connection:
    """A chat/1 connection. Open it with `Connection.open`; make calls with `call`."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        #: Set while the transport accepts more (cleared between its pause_writing and resume_writing).
        self._writable = asyncio.Event()
        self._writable.set()
        self._lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
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
        connection = cls()
        transport, _ = await asyncio.wait_for(
            asyncio.get_running_loop().create_connection(
                lambda: _Protocol(connection), host, port, ssl=context, server_hostname=server_hostname or host
            ),
            timeout,
        )
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "chat/1":
            transport.close()
            raise ChatError(rpc_pb2.STATUS_CODE_UNAVAILABLE, "the server did not agree on chat/1", not_processed=True)
        return connection

    @classmethod
    async def over(cls, sock: socket.socket) -> Connection:
        """A connection over a connected socket without TLS (the tests' scripted peers)."""
        connection = cls()
        await asyncio.get_running_loop().create_connection(lambda: _Protocol(connection), sock=sock)
        return connection

    def _connection_made(self, transport: asyncio.Transport) -> None:
        """Writes the preface and this client's SETTINGS at once: the transport may hand over the server's first
        frames (its SETTINGS, a PING) in the same turn, and the answers to them must come after the preface."""
        self._transport = transport
        settings = struct.pack(
            ">HIHI", INITIAL_WINDOW_SIZE, STREAM_WINDOW, CONNECTION_WINDOW, RECEIVE_CONNECTION_WINDOW
        )
        transport.write(PREFACE + encode_frame(FrameType.SETTINGS, 0, 0, settings))

    @property
    def buffered_bytes(self) -> int:
        """Bytes of received messages no caller has consumed yet, all streams."""
        return sum(stream.buffered for stream in self._streams.values())

    @property
    def open_streams(self) -> int:
        """Calls open on the connection now."""
        return len(self._streams)

    @property
    def is_usable(self) -> bool:
        """False once the server said GOAWAY or the connection closed: new calls go to a new connection."""
        return self._going_away is None and self._closed is None

    async def close(self) -> None:
        """Closes the connection; calls still open fail with UNAVAILABLE."""
        self._fail_all(ChatError(rpc_pb2.STATUS_CODE_UNAVAILABLE, "the connection was closed"))
        self._flush()
        if self._transport is not None:
            self._transport.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._lost), 5)

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
            if self._transport is not None:
                self._transport.close()
            return False
        finally:
            self._pings.pop(payload, None)

    # MARK: calls

    async def call(self, header: rpc_pb2.CallHeader, request: bytes) -> AsyncGenerator[bytes, None]:
        """Opens a stream for `header`, sends `request`, and yields each response message's bytes; ends at TRAILERS
        OK and raises `ChatError` for any other status. Leaving the iteration early cancels the call (CANCEL)."""
        stream = await self._begin(header, request)
        try:
            while True:
                item = await stream.messages.get()
                if isinstance(item, bytes):
                    # Consumed: the stream's credit goes back (flow control per stream follows the reader).
                    stream.buffered -= len(item) + 5
                    # Less what was credited while the message was still incomplete.
                    self._return_stream_credit(stream, len(item) + 5 - stream.early.popleft())
                    yield item
                elif isinstance(item, ChatError):
                    raise item
                else:
                    if item.code != rpc_pb2.STATUS_CODE_OK:
                        raise status_error(item)
                    return
        finally:
            await self._finish(stream)

    async def unary(self, header: rpc_pb2.CallHeader, request: bytes) -> bytes:
        """A unary call: `call` without the generator (the path most calls take): the response's bytes, or the
        status raised as `ChatError`."""
        stream = await self._begin(header, request)
        try:
            response: bytes | None = None
            while True:
                item = await stream.messages.get()
                if isinstance(item, bytes):
                    if response is not None:
                        raise ChatError(rpc_pb2.STATUS_CODE_INTERNAL, "the server sent two responses to a unary call")
                    stream.buffered -= len(item) + 5
                    stream.early.popleft()
                    response = item
                elif isinstance(item, ChatError):
                    raise item
                elif item.code != rpc_pb2.STATUS_CODE_OK:
                    raise status_error(item)
                elif response is None:
                    raise ChatError(rpc_pb2.STATUS_CODE_INTERNAL, "the server sent no response to a unary call")
                else:
                    return response
        finally:
            await self._finish(stream)

    async def _begin(self, header: rpc_pb2.CallHeader, request: bytes) -> _Stream:
        """Takes a stream slot, opens a stream and sends the call on it; `_finish` ends it."""
        if not self.is_usable:
            raise ChatError(
                rpc_pb2.STATUS_CODE_UNAVAILABLE, "the connection is closing; not processed", not_processed=True
            )
        await self._slots.acquire()
        try:
            stream = self._open_stream()
        except BaseException:
            self._slots.release()
            raise
        try:
            self._send_header(stream, header)
            await self._send_data(stream, encode_envelope(request))
        except BaseException:
            await self._finish(stream)
            raise
        if len(self._streams) == 1:
            # The only call: nothing to share a write with, so it goes now rather than at the end of the turn.
            self._flush()
        return stream

    async def _finish(self, stream: _Stream) -> None:
        """Cancels the stream if it has not ended, forgets it and frees its slot."""
        if not stream.ended:
            stream.ended = True
            await self._send_cancel(stream.id)
        self._streams.pop(stream.id, None)
        self._slots.release()

    def _send_header(self, stream: _Stream, header: rpc_pb2.CallHeader) -> None:
        encoded = header.SerializeToString()
        if len(encoded) > self._peer.max_header_size:
            raise ChatError(
                rpc_pb2.STATUS_CODE_RESOURCE_EXHAUSTED,
                f"the call header is {len(encoded)} bytes, over the server's {self._peer.max_header_size}",
                not_processed=True,
            )
        self._send(encode_frame(FrameType.HEADERS, 0, stream.id, encoded))

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
            if self._transport is not None and self._transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
                self._flush()
                await self._writable.wait()
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
        if self._transport is None or self._transport.is_closing():
            return
        try:
            self._transport.write(data)
        except (ConnectionError, RuntimeError, ssl.SSLError):
            pass

    # MARK: reading

    def _received(self, data: bytes) -> None:
        """The transport's bytes, handled as they come (no reader task: a response wakes its caller in the same
        turn of the event loop)."""
        if self._closed is not None:
            return
        try:
            for frame in self._decoder.feed(data):
                self._handle(frame)
        except WireError as error:
            self._send_goaway(error.code, str(error))
            self._fail_all(ChatError(rpc_pb2.STATUS_CODE_INTERNAL, f"protocol error from the server: {error}"))
            assert self._transport is not None
            self._transport.close()
            return
        transport = self._transport
        if transport is not None and transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
            # A peer that makes this side queue answers (PING acks) faster than it reads them is not read from
            # until it does.
            transport.pause_reading()

    def _connection_lost(self, error: Exception | None) -> None:
        text = "the server closed the connection" if error is None else f"the connection failed: {error}"
        self._fail_all(ChatError(rpc_pb2.STATUS_CODE_UNAVAILABLE, text))
        self._writable.set()
        if not self._lost.done():
            self._lost.set_result(None)

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
                    # The first message completed here began in the tail credited early.
                    stream.early.append(stream.tail_credited)
                    stream.tail_credited = 0
                    stream.messages.put_nowait(message)
                # A message larger than the window could never complete if its bytes were credited only once it is
                # consumed: such a message's bytes are credited as they come (bounded by MAX_MESSAGE_SIZE). One
                # that fits waits for its consumer, as the Swift client does (docs/PROTOCOL.md 6).
                tail = stream.deframer.buffered - stream.tail_credited
                pending = stream.deframer.pending_size
                if pending is not None and pending > STREAM_WINDOW and tail > 0 and not stream.ended:
                    stream.tail_credited += tail
                    stream.outstanding -= tail
                    self._send(encode_frame(FrameType.WINDOW_UPDATE, 0, stream.id, struct.pack(">I", tail)))
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
            debug = frame.payload[8:].decode("utf-8", "replace")
            last &= MAX_STREAM_ID
            self._going_away = last
            for stream in list(self._streams.values()):
                if stream.id > last and not stream.ended:
                    unprocessed = ChatError(
                        rpc_pb2.STATUS_CODE_UNAVAILABLE,
                        f"the connection is closing (GOAWAY {_error_name(code)}: {debug!r}); not processed",
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


class _Protocol(asyncio.Protocol):
    """The transport's events, handed to the connection."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.connection._connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.connection._received(data)

    def eof_received(self) -> bool:
        return False  # the transport closes; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.connection._connection_lost(exc)

    def pause_writing(self) -> None:
        self.connection._writable.clear()

    def resume_writing(self) -> None:
        self.connection._writable.set()
        transport = self.connection._transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()


def _error_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return str(code)
