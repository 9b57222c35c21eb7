"""`Client`: calls chatd over one chat/1 connection (opened on first use, replaced when the server closes or drains
it), with a bearer token given once or by a callable, deadlines, mTLS, typed stubs for every method
(`chatd_client.stubs`), idempotency keys on mutations and retries under a budget (`chatd_client.retry`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import ssl
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

from google.protobuf.message import Message

from chatd_client.connection import Connection
from chatd_client.errors import ChatError
from chatd_client.method import Method
from chatd_client.proto import rpc_pb2
from chatd_client.resume import Position, position, should_resume
from chatd_client.retry import RetryBudget, RetryPolicy, retry_delay
from chatd_client.stubs import METHODS, AsyncStubs

RequestT = TypeVar("RequestT", bound=Message)
ResponseT = TypeVar("ResponseT", bound=Message)

#: Bytes of the idempotency key the client makes for a mutation called without one.
IDEMPOTENCY_KEY_BYTES = 16


class Client(AsyncStubs):
    """A chatd client. `async with Client(...) as client:` closes the connection at the end. Every method of the
    contract is a method of the client (`await client.create_thread(...)`, `async for e in client.watch_thread(...)`).

    - `ca`: PEM CA file the server's certificate is verified with (the system's trust store when None);
    - `certificate`, `key`: a client certificate for mTLS;
    - `token`: `"<JWT>"` or a callable returning a fresh one before each call (without `Bearer `);
    - `retry`: how failed attempts are retried (`RetryPolicy(max_attempts=1)`: never); `retry_budget`: the tokens
      that cap retries when the server keeps failing (one per client unless given);
    - `stream_retry`: the backoff between attempts to resume a stream, and how many failed attempts in a row end it
      (20 by default, about a minute and a half of waiting); resumes do not spend the retry budget (one request
      per backoff, not a multiplier of the load);
    - `metadata`: entries sent with every call (a call's own `metadata` adds to them, and wins on a key), e.g.
      `{"tenant-id": b"<uuid>"}` for a service that authenticates with its certificate;
    - `stall_timeout`, `ping_timeout`: a stream silent for `stall_timeout` seconds (the server's heartbeats come
      every 15 s) probes its connection with a PING, and closes it without an answer within `ping_timeout`.
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
        retry: RetryPolicy | None = None,
        retry_budget: RetryBudget | None = None,
        stream_retry: RetryPolicy | None = None,
        stall_timeout: float = 45.0,
        ping_timeout: float = 10.0,
        metadata: Mapping[str, bytes] | None = None,
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
        self.retry = retry or RetryPolicy()
        self.retry_budget = retry_budget or RetryBudget()
        self.stream_retry = stream_retry or RetryPolicy(max_attempts=20, initial_backoff=0.1, max_backoff=5.0)
        self.stall_timeout = stall_timeout
        self.metadata = dict(metadata or {})
        self.ping_timeout = ping_timeout
        self._rng = random.Random()
        #: Attempts this client made again (all calls), for a caller's metrics.
        self.retries = 0
        #: How the client waits between attempts (a test records the waits instead).
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def _usable_connection(self) -> Connection:
        connection = self._connection
        if connection is not None and connection.is_usable:
            return connection
        async with self._connecting:
            if self._connection is None or not self._connection.is_usable:
                if self._connection is not None:
                    old = self._connection
                    if old.open_streams == 0:
                        asyncio.ensure_future(old.close())
                    else:
                        # Calls still open on it finish there (the server ends them when it drains); it is closed
                        # after a minute at the latest, so replaced connections do not pile up.
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
        metadata: Mapping[str, bytes] | None,
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
        merged = {**self.metadata, **metadata} if metadata else self.metadata
        for key, value in merged.items():
            header.metadata.add(key=key, value=value)
        return header

    async def call_unary(
        self,
        method: Method[RequestT, ResponseT],
        request: RequestT,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, bytes] | None = None,
        idempotency_key: bytes | None = None,
    ) -> ResponseT:
        """Calls a unary method and returns its response, retrying what `chatd_client.retry` says is safe and useful
        within `timeout` (seconds, for all attempts together). A mutation without `idempotency_key` gets a fresh
        16-byte key, the same on every attempt, so that it has one effect however often it is retried.

        Raises the `ChatError` subclass of the last attempt's status: DEADLINE_EXCEEDED when `timeout` passes first
        (the call is cancelled on the server), UNAVAILABLE when no connection could be made.
        """
        if method.streaming:
            raise TypeError(f"{method.path} is a server stream: use call_stream")
        if idempotency_key is None and not method.idempotent:
            idempotency_key = os.urandom(IDEMPOTENCY_KEY_BYTES)
        payload = request.SerializeToString()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        attempt = 0
        while True:
            remaining = None if deadline is None else deadline - loop.time()
            try:
                response = await self._unary_attempt(
                    method, payload, remaining, idempotency_key, metadata, attempt, timeout
                )
            except ChatError as error:
                delay = self._retry_delay(error, attempt, method.idempotent or idempotency_key is not None)
                if not await self._wait_to_retry(delay, deadline):
                    raise
                attempt += 1
                continue
            self.retry_budget.record_success()
            return response

    def _retry_delay(self, error: ChatError, attempt: int, safe_to_repeat: bool) -> float | None:
        return retry_delay(
            error,
            retry=attempt + 1,
            safe_to_repeat=safe_to_repeat,
            policy=self.retry,
            budget=self.retry_budget,
            rng=self._rng,
        )

    async def _wait_to_retry(self, delay: float | None, deadline: float | None) -> bool:
        """Waits `delay` before another attempt; False (no wait) when there is none or it would pass `deadline`."""
        if delay is None or (deadline is not None and asyncio.get_running_loop().time() + delay >= deadline):
            return False
        self.retries += 1
        await self._sleep(delay)
        return True

    async def _unary_attempt(
        self,
        method: Method[RequestT, ResponseT],
        payload: bytes,
        remaining: float | None,
        idempotency_key: bytes | None,
        metadata: Mapping[str, bytes] | None,
        attempt: int,
        timeout: float | None,
    ) -> ResponseT:
        async def run() -> ResponseT:
            connection = await self._usable_connection()
            header = self._header(method.path, remaining, idempotency_key, metadata, attempt)
            return method.response_type.FromString(await connection.unary(header, payload))

        if remaining is None:
            return await run()
        try:
            return await asyncio.wait_for(run(), max(0.0, remaining))
        except asyncio.TimeoutError:
            raise ChatError(rpc_pb2.STATUS_CODE_DEADLINE_EXCEEDED, f"no answer within {timeout} s") from None

    def call_stream(
        self,
        method: Method[RequestT, ResponseT],
        request: RequestT,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, bytes] | None = None,
        resume: bool = True,
    ) -> AsyncGenerator[ResponseT, None]:
        """Calls a server-streaming method and yields its responses as they come; the server's status ends the
        iteration (raised as `ChatError` unless OK). Reading slowly holds the server back (flow control): the client
        buffers at most one stream window of messages. Leave early with `contextlib.aclosing` (or `break` inside
        it): the call is cancelled on the server.

        A resumable stream (WatchThread, WatchInbox, SubscribeEvents, ExportLearnerData: `chatd_client.resume`)
        that ends because the server went away, drained, found the client too slow or saw its token expire (with a
        token callable) is opened again right after the last response the caller got, with backoff between failed
        attempts (`stream_retry`), so the caller sees every response once. `resume=False` ends it instead. Other
        streams are retried only until their first response, as a unary call would be.

        A stream quiet for `stall_timeout` seconds gets its connection probed with a PING; no answer within
        `ping_timeout` closes the connection, which ends (and so resumes) the streams on it.
        """
        if not method.streaming:
            raise TypeError(f"{method.path} is unary: use call_unary")
        tracker = position(method.path, request) if resume else None
        return self._stream(method, request, tracker, timeout, metadata)

    async def _stream(
        self,
        method: Method[RequestT, ResponseT],
        request: RequestT,
        tracker: Position[Any] | None,
        timeout: float | None,
        metadata: Mapping[str, bytes] | None,
    ) -> AsyncGenerator[ResponseT, None]:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        attempt = 0
        failures = 0
        received = False
        while True:
            payload = (request if tracker is None else tracker.request()).SerializeToString()
            progressed = False
            try:
                async with contextlib.aclosing(
                    self._stream_attempt(method, payload, deadline, timeout, metadata, attempt)
                ) as responses:
                    async for response in responses:
                        progressed = True
                        if not received:
                            received = True
                            self.retry_budget.record_success()
                        if tracker is None or tracker.observe(response):
                            yield response
                return
            except ChatError as error:
                failures = 0 if progressed else failures + 1
                delay: float | None
                if tracker is not None:
                    resumes = should_resume(error, fresh_token=callable(self._token))
                    delay = self.stream_retry.backoff(max(1, failures), self._rng) if resumes else None
                    if failures >= self.stream_retry.max_attempts:
                        delay = None
                    if delay is not None and (after := error.retry_after_ms) is not None:
                        delay = max(delay, after / 1000)
                elif received:
                    raise
                else:
                    delay = self._retry_delay(error, attempt, method.idempotent)
                if not await self._wait_to_retry(delay, deadline):
                    raise
                attempt += 1

    async def _stream_attempt(
        self,
        method: Method[RequestT, ResponseT],
        payload: bytes,
        deadline: float | None,
        timeout: float | None,
        metadata: Mapping[str, bytes] | None,
        attempt: int,
    ) -> AsyncGenerator[ResponseT, None]:
        loop = asyncio.get_running_loop()
        remaining = None if deadline is None else max(0.0, deadline - loop.time())
        connection = await self._usable_connection()
        header = self._header(method.path, remaining, None, metadata, attempt)
        async with contextlib.aclosing(connection.call(header, payload)) as messages:
            # Quiet for longer than heartbeats allow: is the connection alive? If not, the probe closes it and the
            # read fails with UNAVAILABLE. A timer, not a timeout per read: a busy stream pays one clock read a
            # message.
            watchdog = _Watchdog(loop, self.stall_timeout, lambda: connection.ping(self.ping_timeout))
            try:
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
                    watchdog.last = loop.time()
                    yield method.response_type.FromString(data)
            finally:
                watchdog.cancel()

    # MARK: by path

    async def unary(
        self,
        method: str,
        request: Message,
        response_type: type[ResponseT],
        *,
        timeout: float | None = None,
        idempotency_key: bytes | None = None,
        metadata: Mapping[str, bytes] | None = None,
    ) -> ResponseT:
        """`call_unary` by path (`/chat.v1.Service/Method`), for a method this package's stubs do not know yet
        (which is then treated as a mutation)."""
        return await self.call_unary(
            _method(method, False, request, response_type),
            request,
            timeout=timeout,
            metadata=metadata,
            idempotency_key=idempotency_key,
        )

    def stream(
        self,
        method: str,
        request: Message,
        response_type: type[ResponseT],
        *,
        timeout: float | None = None,
        metadata: Mapping[str, bytes] | None = None,
        resume: bool = True,
    ) -> AsyncGenerator[ResponseT, None]:
        """`call_stream` by path."""
        return self.call_stream(
            _method(method, True, request, response_type), request, timeout=timeout, metadata=metadata, resume=resume
        )


def _method(path: str, streaming: bool, request: Message, response_type: type[ResponseT]) -> Method[Message, ResponseT]:
    known = METHODS.get(path)
    return Method(
        path,
        streaming=streaming,
        idempotent=known.idempotent if known is not None else False,
        request_type=type(request),
        response_type=response_type,
    )


class _Watchdog:
    """Runs `probe` when nothing was read for `interval` seconds (`last` is the time of the last read), then again
    after every further `interval` of silence; cancelled with the stream."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, interval: float, probe: Callable[[], Awaitable[object]]
    ) -> None:
        self.loop = loop
        self.interval = interval
        self.probe = probe
        self.last = loop.time()
        self.task: asyncio.Task[object] | None = None
        self.handle = loop.call_later(interval, self._check)

    def _check(self) -> None:
        idle = self.loop.time() - self.last
        if idle < self.interval:
            self.handle = self.loop.call_later(self.interval - idle, self._check)
            return
        if self.task is None or self.task.done():

            async def run() -> object:
                return await self.probe()

            self.task = self.loop.create_task(run())
        self.last = self.loop.time()
        self.handle = self.loop.call_later(self.interval, self._check)

    def cancel(self) -> None:
        self.handle.cancel()
        if self.task is not None:
            self.task.cancel()
