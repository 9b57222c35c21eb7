"""The connection against a scripted peer over a socket pair (no TLS, no server): a server that ignores the
client's flow-control window is stopped at the window, not buffered without bound."""

import asyncio
import socket
import struct

import pytest

from chatd_client import ChatError, rpc_pb2
from chatd_client.connection import STREAM_WINDOW, Connection
from chatd_client.wire import ErrorCode, FrameDecoder, FrameType, encode_envelope, encode_frame


def test_a_server_past_the_stream_window_is_a_flow_control_error() -> None:
    async def run() -> None:
        client_socket, server_socket = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=client_socket)
        server_reader, server_writer = await asyncio.open_connection(sock=server_socket)
        connection = Connection(reader, writer)
        connection._reader_task = asyncio.get_running_loop().create_task(connection._read_loop())
        # A large frame size, so that a few frames overrun the 1 MiB window.
        server_writer.write(encode_frame(FrameType.SETTINGS, 0, 0, struct.pack(">HI", 0x3, 1 << 20)))
        connection._decoder.max_frame_size = 1 << 20

        async def flood() -> None:
            message = encode_envelope(b"x" * 200_000)
            for _ in range(8):  # about 1.6 MB on one stream, nothing credited back (the caller does not read)
                server_writer.write(encode_frame(FrameType.DATA, 0, 1, message))
            await server_writer.drain()

        calls = connection.call(rpc_pb2.CallHeader(method="/t.T/M"), b"")
        first = asyncio.ensure_future(calls.__anext__())
        await asyncio.sleep(0)
        await flood()
        # What fit in the window arrives; the frame that overran it ended the connection.
        assert len(await first) == 200_000
        assert connection.buffered_bytes <= STREAM_WINDOW
        received = 1
        with pytest.raises(ChatError) as ended:
            while True:
                await asyncio.wait_for(calls.__anext__(), 5)
                received += 1
        assert received < 8, "the messages past the window were not delivered"
        assert "FLOW_CONTROL_ERROR" in ended.value.message
        assert not connection.is_usable
        # The client told the server why.
        decoder = FrameDecoder(max_frame_size=1 << 20)

        async def goaway_code() -> int | None:
            while data := await server_reader.read(1 << 16):
                for frame in decoder.feed(data):
                    if frame.kind == FrameType.GOAWAY:
                        code: int = struct.unpack(">I", frame.payload[4:8])[0]
                        return code
            return None

        assert await asyncio.wait_for(goaway_code(), 5) == ErrorCode.FLOW_CONTROL_ERROR
        await connection.close()
        server_writer.close()

    asyncio.run(run())
