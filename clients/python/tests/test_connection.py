"""The connection against a scripted peer over a socket pair (no TLS, no server): a server that ignores the
client's flow-control window is stopped at the window, not buffered without bound."""

import asyncio
import contextlib
import socket
import struct

import pytest

from chatd_client import ChatError, rpc_pb2
from chatd_client.connection import STREAM_WINDOW, Connection
from chatd_client.wire import PREFACE, ErrorCode, FrameDecoder, FrameType, encode_envelope, encode_frame


def test_a_server_past_the_stream_window_is_a_flow_control_error() -> None:
    def peer(server: socket.socket) -> int | None:
        """Floods stream 1 past the window from a plain socket, then reads what the client sent until its GOAWAY
        (the client closes the connection after it, which may cut the flood short)."""
        server.settimeout(5)
        received = b""
        while len(received) < len(PREFACE):
            received += server.recv(len(PREFACE) - len(received))
        # A large frame size, so that a few frames overrun the 1 MiB window.
        server.sendall(encode_frame(FrameType.SETTINGS, 0, 0, struct.pack(">HI", 0x3, 1 << 20)))
        message = encode_envelope(b"x" * 200_000)
        with contextlib.suppress(OSError):
            for _ in range(8):  # about 1.6 MB on one stream, nothing credited back (the caller does not read)
                server.sendall(encode_frame(FrameType.DATA, 0, 1, message))
        decoder = FrameDecoder(max_frame_size=1 << 20)
        with contextlib.suppress(OSError):
            while data := server.recv(1 << 16):
                for frame in decoder.feed(data):
                    if frame.kind == FrameType.GOAWAY:
                        code: int = struct.unpack(">I", frame.payload[4:8])[0]
                        return code
        return None

    async def run() -> None:
        client_socket, server_socket = socket.socketpair()
        connection = await Connection.over(client_socket)
        connection._decoder.max_frame_size = 1 << 20
        calls = connection.call(rpc_pb2.CallHeader(method="/t.T/M"), b"")
        first = asyncio.ensure_future(calls.__anext__())
        await asyncio.sleep(0)
        goaway = asyncio.ensure_future(asyncio.to_thread(peer, server_socket))
        # What fit in the window arrives; the frame that overran it ends the connection, with the caller reading
        # nothing more meanwhile.
        assert len(await asyncio.wait_for(first, 5)) == 200_000
        for _ in range(500):
            if not connection.is_usable:
                break
            assert connection.buffered_bytes <= STREAM_WINDOW
            await asyncio.sleep(0.01)
        assert not connection.is_usable
        received = 1
        with pytest.raises(ChatError) as ended:
            while True:
                await asyncio.wait_for(calls.__anext__(), 5)
                received += 1
        assert received < 8, "the messages past the window were not delivered"
        assert "FLOW_CONTROL_ERROR" in ended.value.message
        assert not connection.is_usable
        # The client told the server why.
        assert await asyncio.wait_for(goaway, 10) == ErrorCode.FLOW_CONTROL_ERROR
        await connection.close()
        server_socket.close()

    asyncio.run(run())


def test_a_message_larger_than_the_stream_window_arrives_whole() -> None:
    """A peer that keeps to the window: the client credits an incomplete message's bytes as they come, or a
    message over the window (chatd may send up to MAX_MESSAGE_SIZE, 4 MiB) could never complete."""

    async def run() -> None:
        client_socket, server_socket = socket.socketpair()
        server_reader, server_writer = await asyncio.open_connection(sock=server_socket)
        connection = await Connection.over(client_socket)
        assert await server_reader.readexactly(len(PREFACE)) == PREFACE
        envelope = encode_envelope(bytes(range(256)) * (3 * 4096))  # 3 MiB
        window = STREAM_WINDOW
        credit = asyncio.Event()

        async def read_credit() -> None:
            nonlocal window
            decoder = FrameDecoder(max_frame_size=1 << 20)
            while data := await server_reader.read(1 << 16):
                for frame in decoder.feed(data):
                    if frame.kind == FrameType.WINDOW_UPDATE and frame.stream == 1:
                        window += struct.unpack(">I", frame.payload)[0]
                        credit.set()

        async def send() -> None:
            nonlocal window
            offset = 0
            while offset < len(envelope):
                if window == 0:
                    credit.clear()
                    await asyncio.wait_for(credit.wait(), 5)
                    continue
                size = min(16_384, window, len(envelope) - offset)
                server_writer.write(encode_frame(FrameType.DATA, 0, 1, envelope[offset : offset + size]))
                offset += size
                window -= size
                await server_writer.drain()
            status = rpc_pb2.CallStatus(code=rpc_pb2.STATUS_CODE_OK).SerializeToString()
            server_writer.write(encode_frame(FrameType.TRAILERS, 0, 1, status))

        credits = asyncio.ensure_future(read_credit())
        calls = connection.call(rpc_pb2.CallHeader(method="/t.T/M"), b"")
        first = asyncio.ensure_future(calls.__anext__())
        await asyncio.sleep(0)
        await send()
        message = await asyncio.wait_for(first, 10)
        assert message == envelope[5:]
        with pytest.raises(StopAsyncIteration):
            await calls.__anext__()
        assert connection.buffered_bytes == 0
        credits.cancel()
        await connection.close()
        server_writer.close()

    asyncio.run(run())
