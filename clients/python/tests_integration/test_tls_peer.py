"""The connection against a scripted peer over real TLS: a server that sends its SETTINGS and a PING right after
the handshake (TLS 1.3 lets it, before the client's first bytes) still gets the client's preface first."""

from __future__ import annotations

import asyncio
import os
import ssl

from chatd_client.connection import Connection
from chatd_client.wire import ACK, PREFACE, FrameDecoder, FrameType, encode_frame
from support import CA


def test_the_preface_comes_before_the_answers_to_what_the_server_sent_first() -> None:
    tls = os.path.dirname(CA)

    async def run() -> None:
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_context.load_cert_chain(f"{tls}/server.pem", f"{tls}/server.key")
        server_context.set_alpn_protocols(["chat/1"])
        first: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        acked: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # At once, before reading anything: the client receives these with the end of the handshake.
            writer.write(encode_frame(FrameType.SETTINGS, 0, 0, b"") + encode_frame(FrameType.PING, 0, 0, b"8 bytes!"))
            await writer.drain()
            first.set_result(await reader.readexactly(len(PREFACE)))
            decoder = FrameDecoder()
            while not acked.done() and (data := await reader.read(1 << 16)):
                for frame in decoder.feed(data):
                    if frame.kind == FrameType.PING and frame.flags & ACK and frame.payload == b"8 bytes!":
                        acked.set_result(True)
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_context)
        port = server.sockets[0].getsockname()[1]
        client_context = ssl.create_default_context(cafile=CA)
        for _ in range(20):  # the race, if there were one, would not need many tries
            connection = await Connection.open("127.0.0.1", port, client_context)
            assert await asyncio.wait_for(first, 5) == PREFACE
            assert await asyncio.wait_for(acked, 5)
            await connection.close()
            first = asyncio.get_running_loop().create_future()
            acked = asyncio.get_running_loop().create_future()
        server.close()
        await server.wait_closed()

    asyncio.run(run())
