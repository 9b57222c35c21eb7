"""Where a resumable stream is, and how to ask for the rest of it (docs/PROTOCOL.md 11 and 12): plain values the
client's stream loop feeds every response to. A stream is resumable when the contract gives its responses a
position the request can start after:

- WatchThread: each message or thread event's `seq`, resumed as `after_seq`;
- WatchInbox: each event's `cursor` (the head's and heartbeats' too), resumed as `cursor`;
- SubscribeEvents: each event's `cursor`;
- ExportLearnerData: each record's `resume_token`.

The position is the last response handed to the caller, so a resumed stream repeats nothing the caller saw and
skips nothing it did not. A resumed live stream opens with a second `head`; the caller already had one, so it is
not passed on.
"""

from __future__ import annotations

import abc
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from chatd_client.errors import ChatError
from chatd_client.proto import live_pb2, privacy_pb2, rpc_pb2

RequestT = TypeVar("RequestT", bound=Message)


class Position(abc.ABC, Generic[RequestT]):
    """A stream's position: `observe` each response before the caller gets it (False: do not pass it on), and
    `request` for the request that resumes right after the last one observed."""

    def __init__(self, request: RequestT) -> None:
        self._request = request

    @abc.abstractmethod
    def observe(self, response: Any) -> bool: ...

    def request(self) -> RequestT:
        resumed = type(self._request)()
        resumed.CopyFrom(self._request)
        self._apply(resumed)
        return resumed

    @abc.abstractmethod
    def _apply(self, request: Any) -> None: ...


class _WatchThread(Position[live_pb2.WatchThreadRequest]):
    def __init__(self, request: live_pb2.WatchThreadRequest) -> None:
        super().__init__(request)
        self.after_seq = request.after_seq
        self._had_head = False

    def observe(self, response: Any) -> bool:
        event = response.event
        if event.HasField("head"):
            first = not self._had_head
            self._had_head = True
            return first
        if event.seq > 0:
            self.after_seq = event.seq
        return True

    def _apply(self, request: Any) -> None:
        request.after_seq = self.after_seq


class _Cursor(Position[Any]):
    """WatchInbox and SubscribeEvents: the newest cursor seen."""

    def __init__(self, request: Any) -> None:
        super().__init__(request)
        self.cursor: str = request.cursor
        self._had_head = False

    def observe(self, response: Any) -> bool:
        event = response.event
        if isinstance(event, live_pb2.WatchEvent) and event.HasField("head"):
            if event.cursor or event.head.cursor:
                self.cursor = event.cursor or event.head.cursor
            first = not self._had_head
            self._had_head = True
            return first
        if event.cursor:
            self.cursor = event.cursor
        return True

    def _apply(self, request: Any) -> None:
        request.cursor = self.cursor


class _Export(Position[privacy_pb2.ExportLearnerDataRequest]):
    def __init__(self, request: privacy_pb2.ExportLearnerDataRequest) -> None:
        super().__init__(request)
        self.resume_token = request.resume_token

    def observe(self, response: Any) -> bool:
        if response.record.resume_token:
            self.resume_token = response.record.resume_token
        return True

    def _apply(self, request: Any) -> None:
        request.resume_token = self.resume_token


_POSITIONS: dict[str, type[Position[Any]]] = {
    "/chat.v1.LiveService/WatchThread": _WatchThread,
    "/chat.v1.LiveService/WatchInbox": _Cursor,
    "/chat.v1.EventService/SubscribeEvents": _Cursor,
    "/chat.v1.PrivacyService/ExportLearnerData": _Export,
}


def position(path: str, request: Message) -> Position[Any] | None:
    """The position tracker of a resumable method, or None."""
    kind = _POSITIONS.get(path)
    return None if kind is None else kind(request)


def resumable(path: str) -> bool:
    return path in _POSITIONS


def should_resume(error: ChatError, *, fresh_token: bool) -> bool:
    """Whether a stream that ended with `error` is resumed: the server went away or is draining (UNAVAILABLE), the
    client read too slowly (RESOURCE_EXHAUSTED with ResumeInfo), or the token expired and the client can get a new
    one (UNAUTHENTICATED with ResumeInfo, `fresh_token`). A wrong request is not."""
    if error.code == rpc_pb2.STATUS_CODE_UNAVAILABLE:
        return True
    if error.code == rpc_pb2.STATUS_CODE_RESOURCE_EXHAUSTED:
        return error.resume_info is not None or error.not_processed
    if error.code == rpc_pb2.STATUS_CODE_UNAUTHENTICATED:
        return fresh_token and error.resume_info is not None
    return False
