"""`SyncClient`: the synchronous facade for scripts and notebooks. The same calls as `Client` (every stub, the same
retries), each blocking until it ends; server streams are plain generators. One event loop runs them, on a thread of
the facade's own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Mapping
from typing import Any, TypeVar

from google.protobuf.message import Message

from chatd_client.client import Client
from chatd_client.method import Method
from chatd_client.stubs import SyncStubs

RequestT = TypeVar("RequestT", bound=Message)
ResponseT = TypeVar("ResponseT", bound=Message)
T = TypeVar("T")


class SyncClient(SyncStubs):
    """`with SyncClient(host, port, ca=..., token=...) as client: client.create_thread(...)`. Takes `Client`'s
    arguments; `client.client` is the `Client` underneath."""

    def __init__(self, host: str, port: int, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chatd-client", daemon=True)
        self._thread.start()
        self._client = Client(host, port, **options)

    @property
    def client(self) -> Client:
        return self._client

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def run(self, work: Callable[[Client], Awaitable[T]]) -> T:
        """Runs a coroutine of the underlying `Client` on the facade's loop and returns its result:
        `client.run(lambda c: batch.export_learner(c, learner, path, reason=...))`."""
        result: T = self._run(lambda: work(self._client))
        return result

    def _run(self, make: Callable[[], Any]) -> Any:
        async def run() -> Any:
            return await make()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result()

    def call_unary(
        self,
        method: Method[RequestT, ResponseT],
        request: RequestT,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, bytes] | None = None,
        idempotency_key: bytes | None = None,
    ) -> ResponseT:
        """`Client.call_unary`, blocking."""
        response: ResponseT = self._run(
            lambda: self._client.call_unary(
                method, request, timeout=timeout, metadata=metadata, idempotency_key=idempotency_key
            )
        )
        return response

    def call_stream(
        self,
        method: Method[RequestT, ResponseT],
        request: RequestT,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, bytes] | None = None,
        resume: bool = True,
    ) -> Generator[ResponseT, None, None]:
        """`Client.call_stream` as a generator (resuming as it does); leaving it early (`break`, or closing it)
        cancels the call."""
        return self._iterate(
            self._client.call_stream(method, request, timeout=timeout, metadata=metadata, resume=resume)
        )

    def _iterate(self, responses: AsyncGenerator[ResponseT, None]) -> Generator[ResponseT, None, None]:
        try:
            while True:
                try:
                    item: ResponseT = self._run(responses.__anext__)
                except StopAsyncIteration:
                    return
                yield item
        finally:
            self._run(responses.aclose)

    def unary(
        self,
        method: str,
        request: Message,
        response_type: type[ResponseT],
        *,
        timeout: float | None = None,
        idempotency_key: bytes | None = None,
        metadata: Mapping[str, bytes] | None = None,
    ) -> ResponseT:
        """`Client.unary` (by path), blocking."""
        response: ResponseT = self._run(
            lambda: self._client.unary(
                method, request, response_type, timeout=timeout, idempotency_key=idempotency_key, metadata=metadata
            )
        )
        return response

    def stream(
        self,
        method: str,
        request: Message,
        response_type: type[ResponseT],
        *,
        timeout: float | None = None,
        metadata: Mapping[str, bytes] | None = None,
    ) -> Generator[ResponseT, None, None]:
        """`Client.stream` (by path) as a generator."""
        return self._iterate(self._client.stream(method, request, response_type, timeout=timeout, metadata=metadata))

    def close(self) -> None:
        """Closes the connection and stops the facade's thread."""
        if self._thread.is_alive():
            self._run(self._client.close)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
