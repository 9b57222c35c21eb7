"""`Method`: one RPC of the contract, as the generated stubs (`chatd_client.stubs`) describe it; the two ways of
calling one (`AsyncCaller`, `SyncCaller`), which `Client` and `SyncClient` implement."""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, Generator, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf.message import Message

RequestT = TypeVar("RequestT", bound=Message)
ResponseT = TypeVar("ResponseT", bound=Message)


@dataclass(frozen=True)
class Method(Generic[RequestT, ResponseT]):
    """An RPC: its path, whether it streams, and whether the contract marks it safe to retry as it is
    (`idempotency_level` NO_SIDE_EFFECTS or IDEMPOTENT). A method that is not idempotent is a mutation: a retry has
    one effect only with the first attempt's idempotency key (docs/PROTOCOL.md 13.5)."""

    path: str
    streaming: bool
    idempotent: bool
    request_type: type[RequestT]
    response_type: type[ResponseT]

    @property
    def name(self) -> str:
        """`Method` of `/chat.v1.Service/Method`."""
        return self.path.rsplit("/", 1)[-1]


class AsyncCaller(abc.ABC):
    """Calls a `Method` (the generated `AsyncStubs` are built on these two)."""

    @abc.abstractmethod
    async def call_unary(
        self,
        method: Method[RequestT, ResponseT],
        request: RequestT,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, bytes] | None = None,
        idempotency_key: bytes | None = None,
    ) -> ResponseT: ...

    @abc.abstractmethod
    def call_stream(
        self,
        method: Method[RequestT, ResponseT],
        request: RequestT,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, bytes] | None = None,
        resume: bool = True,
    ) -> AsyncGenerator[ResponseT, None]: ...


class SyncCaller(abc.ABC):
    """`AsyncCaller`, blocking."""

    @abc.abstractmethod
    def call_unary(
        self,
        method: Method[RequestT, ResponseT],
        request: RequestT,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, bytes] | None = None,
        idempotency_key: bytes | None = None,
    ) -> ResponseT: ...

    @abc.abstractmethod
    def call_stream(
        self,
        method: Method[RequestT, ResponseT],
        request: RequestT,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, bytes] | None = None,
        resume: bool = True,
    ) -> Generator[ResponseT, None, None]: ...
