"""Streams that resume by themselves: the positions as values, the client's resume loop with scripted attempts
(every response once, the resumed request right after the last one), and the stall probe against a scripted peer."""

import asyncio
import socket
from collections.abc import AsyncGenerator, Mapping

import pytest
from google.protobuf.message import Message

from chatd_client import ChatError, Client, events_pb2, health_pb2, live_pb2, privacy_pb2, rpc_pb2
from chatd_client.connection import Connection
from chatd_client.errors import NotFoundError, UnavailableError
from chatd_client.method import Method, RequestT, ResponseT
from chatd_client.resume import position, should_resume
from chatd_client.retry import RetryPolicy
from chatd_client.wire import PREFACE, ACK, FrameDecoder, FrameType, encode_frame

UNAVAILABLE = rpc_pb2.STATUS_CODE_UNAVAILABLE


def resume_info(after_seq: int = 0, cursor: str = "") -> list[rpc_pb2.StatusDetail]:
    return [rpc_pb2.StatusDetail(resume_info=rpc_pb2.ResumeInfo(after_seq=after_seq, cursor=cursor))]


def head(seq: int = 0, cursor: str = "") -> live_pb2.WatchThreadResponse:
    event = live_pb2.WatchEvent(head=live_pb2.StreamHead(head_seq=seq, cursor=cursor))
    return live_pb2.WatchThreadResponse(event=event)


def message(seq: int) -> live_pb2.WatchThreadResponse:
    event = live_pb2.WatchEvent(seq=seq)
    event.message.message.seq = seq
    return live_pb2.WatchThreadResponse(event=event)


def test_watch_thread_resumes_after_the_last_event_and_passes_one_head_on() -> None:
    request = live_pb2.WatchThreadRequest(thread_id="t", after_seq=2)
    tracker = position("/chat.v1.LiveService/WatchThread", request)
    assert tracker is not None
    assert tracker.request().after_seq == 2
    assert tracker.observe(head(9)) is True
    assert tracker.observe(message(3)) and tracker.observe(message(4))
    heartbeat = live_pb2.WatchThreadResponse(event=live_pb2.WatchEvent(heartbeat=live_pb2.Heartbeat(server_time_us=1)))
    assert tracker.observe(heartbeat)
    assert tracker.observe(head(9)) is False, "a resumed stream's head is not passed on"
    resumed = tracker.request()
    assert resumed.after_seq == 4 and resumed.thread_id == "t"
    assert request.after_seq == 2, "the caller's request is not changed"


def test_cursor_streams_resume_from_the_newest_cursor_heartbeats_included() -> None:
    inbox = position("/chat.v1.LiveService/WatchInbox", live_pb2.WatchInboxRequest(learner_id="l"))
    assert inbox is not None and inbox.request().cursor == ""
    inbox.observe(live_pb2.WatchInboxResponse(event=live_pb2.WatchEvent(head=live_pb2.StreamHead(cursor="c0"))))
    assert inbox.request().cursor == "c0"
    inbox.observe(live_pb2.WatchInboxResponse(event=live_pb2.WatchEvent(seq=1, cursor="c1")))
    inbox.observe(
        live_pb2.WatchInboxResponse(event=live_pb2.WatchEvent(heartbeat=live_pb2.Heartbeat(), cursor="c2"))
    )
    assert inbox.request().cursor == "c2" and inbox.request().learner_id == "l"
    subscribe = events_pb2.SubscribeEventsRequest(types=[events_pb2.EVENT_TYPE_MESSAGE_CREATED])
    events = position("/chat.v1.EventService/SubscribeEvents", subscribe)
    assert events is not None
    events.observe(events_pb2.SubscribeEventsResponse(event=events_pb2.OutboxEvent(id=7, cursor="e7")))
    assert events.request().cursor == "e7"
    assert list(events.request().types) == [events_pb2.EVENT_TYPE_MESSAGE_CREATED]
    export = position(
        "/chat.v1.PrivacyService/ExportLearnerData", privacy_pb2.ExportLearnerDataRequest(learner_id="l", reason="r")
    )
    assert export is not None
    export.observe(privacy_pb2.ExportLearnerDataResponse(record=privacy_pb2.ExportRecord(resume_token="r1")))
    assert export.request().resume_token == "r1" and export.request().reason == "r"
    assert position("/chat.v1.HealthService/Watch", health_pb2.HealthCheckRequest()) is None


def test_which_endings_are_resumed() -> None:
    assert should_resume(ChatError(UNAVAILABLE, "draining", resume_info(3)), fresh_token=False)
    assert should_resume(ChatError(UNAVAILABLE, "the server closed the connection"), fresh_token=False)
    stalled = ChatError(rpc_pb2.STATUS_CODE_RESOURCE_EXHAUSTED, "read faster", resume_info(3))
    assert should_resume(stalled, fresh_token=False)
    expired = ChatError(rpc_pb2.STATUS_CODE_UNAUTHENTICATED, "token expired", resume_info(3))
    assert should_resume(expired, fresh_token=True) and not should_resume(expired, fresh_token=False)
    for code in (rpc_pb2.STATUS_CODE_NOT_FOUND, rpc_pb2.STATUS_CODE_PERMISSION_DENIED,
                 rpc_pb2.STATUS_CODE_INVALID_ARGUMENT, rpc_pb2.STATUS_CODE_DEADLINE_EXCEEDED):
        assert not should_resume(ChatError(code, "x", resume_info(3)), fresh_token=True)


class Scripted(Client):
    """Each stream attempt plays the next script (responses, then an error or the end) and records its request."""

    def __init__(self, scripts: list[list[Message | ChatError]], **options: object) -> None:
        super().__init__("127.0.0.1", 1, **options)  # type: ignore[arg-type]
        self.scripts = scripts
        self.requests: list[bytes] = []
        self.waits: list[float] = []

        async def record(delay: float) -> None:
            self.waits.append(delay)

        self._sleep = record

    async def _stream_attempt(
        self,
        method: Method[RequestT, ResponseT],
        payload: bytes,
        deadline: float | None,
        timeout: float | None,
        metadata: Mapping[str, bytes] | None,
        attempt: int,
    ) -> AsyncGenerator[ResponseT, None]:
        self.requests.append(payload)
        for item in self.scripts.pop(0):
            if isinstance(item, ChatError):
                raise item
            assert isinstance(item, method.response_type)
            yield item


def watch(client: Client, after_seq: int = 0, resume: bool = True) -> list[live_pb2.WatchThreadResponse]:
    async def run() -> list[live_pb2.WatchThreadResponse]:
        request = live_pb2.WatchThreadRequest(thread_id="t", after_seq=after_seq)
        return [r async for r in client.watch_thread(request, resume=resume)]

    return asyncio.run(run())


def seqs(responses: list[live_pb2.WatchThreadResponse]) -> list[int]:
    return [r.event.seq for r in responses if r.event.HasField("message")]


def test_a_dropped_stream_resumes_with_every_event_once() -> None:
    client = Scripted([
        [head(0), message(1), message(2), ChatError(UNAVAILABLE, "the server closed the connection")],
        [ChatError(UNAVAILABLE, "connection refused", not_processed=True)],
        [ChatError(UNAVAILABLE, "connection refused", not_processed=True)],
        [head(2), message(3), ChatError(UNAVAILABLE, "draining", resume_info(3), not_processed=False)],
        [head(3), message(4)],
    ])
    responses = watch(client)
    assert seqs(responses) == [1, 2, 3, 4]
    assert sum(1 for r in responses if r.event.HasField("head")) == 1
    asked = [live_pb2.WatchThreadRequest.FromString(p).after_seq for p in client.requests]
    assert asked == [0, 2, 2, 2, 3]
    # Backoff grows with the failed attempts in a row, and starts over after progress.
    assert len(client.waits) == 4 and client.retries == 4


def test_a_wrong_request_ends_the_stream_and_resume_false_ends_it_on_a_drop() -> None:
    client = Scripted([[head(0), message(1), ChatError(rpc_pb2.STATUS_CODE_NOT_FOUND, "thread deleted")]])
    with pytest.raises(NotFoundError):
        watch(client)
    client = Scripted([[head(0), message(1), ChatError(UNAVAILABLE, "gone")]])
    with pytest.raises(UnavailableError):
        watch(client, resume=False)
    assert len(client.requests) == 1


def test_a_stream_that_cannot_be_resumed_gives_up_after_its_attempts_in_a_row() -> None:
    down: list[list[Message | ChatError]] = [
        [ChatError(UNAVAILABLE, f"refused {n}", not_processed=True)] for n in range(10)
    ]
    client = Scripted(down, stream_retry=RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.1))
    with pytest.raises(UnavailableError, match="refused 3"):
        watch(client)
    assert len(client.requests) == 4


class PairClient(Client):
    """A client whose connection is a socket pair to a scripted peer (no TLS, no server)."""

    def __init__(self, connection: Connection, **options: object) -> None:
        super().__init__("127.0.0.1", 1, **options)  # type: ignore[arg-type]
        self.pair = connection

    async def _usable_connection(self) -> Connection:
        return self.pair


def test_a_quiet_stream_probes_its_connection_and_a_dead_one_ends_it() -> None:
    async def run(answer_pings: bool) -> tuple[int, BaseException | None]:
        client_socket, server_socket = socket.socketpair()
        server_reader, server_writer = await asyncio.open_connection(sock=server_socket)
        connection = await Connection.over(client_socket)
        assert await server_reader.readexactly(len(PREFACE)) == PREFACE
        pings = 0

        async def peer() -> None:
            nonlocal pings
            decoder = FrameDecoder(max_frame_size=1 << 20)
            while data := await server_reader.read(1 << 16):
                for frame in decoder.feed(data):
                    if frame.kind == FrameType.PING and not frame.flags & ACK:
                        pings += 1
                        if answer_pings:
                            server_writer.write(encode_frame(FrameType.PING, ACK, 0, frame.payload))
                        if pings == 3:
                            # Then the stream ends: OK.
                            status = rpc_pb2.CallStatus(code=rpc_pb2.STATUS_CODE_OK).SerializeToString()
                            server_writer.write(encode_frame(FrameType.TRAILERS, 0, 1, status))

        served = asyncio.ensure_future(peer())
        client = PairClient(connection, stall_timeout=0.05, ping_timeout=0.2, retry=RetryPolicy(max_attempts=1))
        error: BaseException | None = None
        try:
            async for _ in client.health_watch():
                pass
        except ChatError as failed:
            error = failed
        served.cancel()
        server_writer.close()
        await connection.close()
        return pings, error

    # A quiet stream on a live connection stays open: each stall is one PING, answered.
    pings, error = asyncio.run(run(answer_pings=True))
    assert pings == 3 and error is None
    # No answer: the connection is closed and the stream fails with UNAVAILABLE.
    pings, error = asyncio.run(run(answer_pings=False))
    assert pings == 1 and isinstance(error, UnavailableError) and "PING" in str(error)
