"""`Client`: calls chatd over one chat/1 connection (opened on first use, replaced when the server closes or drains
it), with a bearer token given once or by a callable, deadlines, mTLS and typed messages."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncGenerator, Callable
from typing import TypeVar

from google.protobuf.message import Message

from chatd_client.connection import Connection
from chatd_client.errors import ChatError
from chatd_client.proto import rpc_pb2

ResponseT = TypeVar("ResponseT", bound=Message)


class Client:
    """A chatd client. `async with Client(...) as client:` closes the connection at the end.

    - `ca`: PEM CA file the server's certificate is verified with (the system's trust store when None);
    - `certificate`, `key`: a client certificate for mTLS;
    - `token`: `"<JWT>"` or a callable returning a fresh one before each call (without `Bearer `).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ca: str | None = None,
        certificate: str | None = None,
        key: str | None = None,
        token: str | Callable[[], str] | None = None,
        server_hostname: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._context = ssl.create_default_context(cafile=ca)
        if certificate is not None:
            self._context.load_cert_chain(certificate, key)
        self._token = token
        self._server_hostname = server_hostname
        self._connection: Connection | None = None
        self._connecting = asyncio.Lock()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def _usable_connection(self) -> Connection:
        async with self._connecting:
            if self._connection is None or not self._connection.is_usable:
                if self._connection is not None:
                    old = self._connection
                    # Calls still open on it finish there; it closes when the server closes it.
                    asyncio.get_running_loop().call_later(60, lambda: asyncio.ensure_future(old.close()))
                try:
                    self._connection = await Connection.open(
                        self.host, self.port, self._context, server_hostname=self._server_hostname
                    )
                except (OSError, asyncio.TimeoutError, ssl.SSLError) as error:
                    raise ChatError(
                        rpc_pb2.STATUS_CODE_UNAVAILABLE,
                        f"cannot connect to {self.host}:{self.port}: {error}",
                        not_processed=True,
                    ) from error
            return self._connection

    def _header(
        self,
        method: str,
        timeout: float | None,
        idempotency_key: bytes | None,
        metadata: dict[str, bytes] | None,
        attempt: int = 0,
    ) -> rpc_pb2.CallHeader:
        header = rpc_pb2.CallHeader(method=method, attempt=attempt)
        if timeout is not None:
            header.timeout_us = max(1, int(timeout * 1_000_000))
        token = self._token() if callable(self._token) else self._token
        if token:
            header.authorization = f"Bearer {token}"
        if idempotency_key:
            header.idempotency_key = idempotency_key
        for key, value in (metadata or {}).items():
            header.metadata.add(key=key, value=value)
        return header

    async def unary(
        self,
        method: str,
        request: Message,
        response_type: type[ResponseT],
        *,
        timeout: float | None = None,
        idempotency_key: bytes | None = None,
        metadata: dict[str, bytes] | None = None,
    ) -> ResponseT:
        """Calls a unary method (`/chat.v1.Service/Method`) and returns its response.

        Raises `ChatError`: the server's status, DEADLINE_EXCEEDED when `timeout` (seconds) passes first (the call is
        cancelled on the server), UNAVAILABLE when the connection fails.
        """

        async def run() -> ResponseT:
            connection = await self._usable_connection()
            header = self._header(method, timeout, idempotency_key, metadata)
            response: ResponseT | None = None
            async with contextlib.aclosing(connection.call(header, request.SerializeToString())) as messages:
                async for data in messages:
                    if response is not None:
                        raise ChatError(rpc_pb2.STATUS_CODE_INTERNAL, "the server sent two responses to a unary call")
                    response = response_type.FromString(data)
            if response is None:
                raise ChatError(rpc_pb2.STATUS_CODE_INTERNAL, "the server sent no response to a unary call")
            return response

        if timeout is None:
            return await run()
        try:
            return await asyncio.wait_for(run(), timeout)
        except asyncio.TimeoutError:
            raise ChatError(rpc_pb2.STATUS_CODE_DEADLINE_EXCEEDED, f"no answer within {timeout} s") from None

    async def stream(
        self,
        method: str,
        request: Message,
        response_type: type[ResponseT],
        *,
        timeout: float | None = None,
        metadata: dict[str, bytes] | None = None,
    ) -> AsyncGenerator[ResponseT, None]:
        """Calls a server-streaming method and yields its responses as they come; the server's status ends the
        iteration (raised as `ChatError` unless OK). Reading slowly holds the server back (flow control): the client
        buffers at most one stream window. Leave early with `contextlib.aclosing` (or `break` inside it): the call is
        cancelled on the server.
        """
        connection = await self._usable_connection()
        header = self._header(method, timeout, None, metadata)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        async with contextlib.aclosing(connection.call(header, request.SerializeToString())) as messages:
            iterator = messages.__aiter__()
            while True:
                try:
                    if deadline is None:
                        data = await iterator.__anext__()
                    else:
                        data = await asyncio.wait_for(iterator.__anext__(), max(0.0, deadline - loop.time()))
                except StopAsyncIteration:
                    return
                except asyncio.TimeoutError:
                    raise ChatError(
                        rpc_pb2.STATUS_CODE_DEADLINE_EXCEEDED, f"the stream did not end within {timeout} s"
                    ) from None
                yield response_type.FromString(data)
