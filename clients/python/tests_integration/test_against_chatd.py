"""The client against a real chatd over real TLS. Run by Tests/ChatIntegrationTests/PythonClientTests.swift, which
starts chatd and passes CHATD_TEST_ADDRESS, CHATD_TEST_CA and CHATD_TEST_TOKEN (a tenant admin's token) and
CHATD_TEST_LEARNER. Without them these tests fail: they are never skipped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

import pytest

from chatd_client import ChatError, Client, SyncClient, health_pb2, live_pb2, messages_pb2, rpc_pb2, threads_pb2
from chatd_client.connection import STREAM_WINDOW


def client() -> Client:
    host, port = os.environ["CHATD_TEST_ADDRESS"].rsplit(":", 1)
    return Client(host, int(port), ca=os.environ["CHATD_TEST_CA"], token=os.environ["CHATD_TEST_TOKEN"])


LEARNER = os.environ.get("CHATD_TEST_LEARNER", "")


async def new_thread(c: Client, title: str) -> str:
    created = await c.unary(
        "/chat.v1.ThreadService/CreateThread",
        threads_pb2.CreateThreadRequest(learner_id=LEARNER, title=title),
        threads_pb2.CreateThreadResponse,
        idempotency_key=os.urandom(16),
    )
    return created.thread.id


async def send(c: Client, thread: str, body: str) -> messages_pb2.SendMessageResponse:
    return await c.unary(
        "/chat.v1.MessageService/SendMessage",
        messages_pb2.SendMessageRequest(thread_id=thread, body=body, idempotency_key=os.urandom(8).hex()),
        messages_pb2.SendMessageResponse,
    )


def test_health_and_a_write_read_round_trip() -> None:
    async def run() -> None:
        async with client() as c:
            health = await c.unary(
                "/chat.v1.HealthService/Check", health_pb2.HealthCheckRequest(), health_pb2.HealthCheckResponse
            )
            assert health.status == health_pb2.SERVING_STATUS_SERVING
            thread = await new_thread(c, "python")
            sent = await send(c, thread, "from python")
            assert sent.message.seq == 1
            page = await c.unary(
                "/chat.v1.MessageService/ListMessages",
                messages_pb2.ListMessagesRequest(thread_id=thread),
                messages_pb2.ListMessagesResponse,
            )
            assert [m.body for m in page.messages] == ["from python"]

    asyncio.run(run())


def test_concurrent_calls_share_one_connection() -> None:
    async def run() -> None:
        async with client() as c:
            thread = await new_thread(c, "concurrent")
            sent = await asyncio.gather(*(send(c, thread, f"m{i}") for i in range(64)))
            assert sorted(s.message.seq for s in sent) == list(range(1, 65))
            assert c._connection is not None and c._connection.is_usable

    asyncio.run(run())


def test_statuses_are_typed_errors_with_details() -> None:
    async def run() -> None:
        async with client() as c:
            with pytest.raises(ChatError) as missing:
                await c.unary(
                    "/chat.v1.ThreadService/GetThread",
                    threads_pb2.GetThreadRequest(thread_id="00000000-0000-4000-8000-00000000dead"),
                    threads_pb2.GetThreadResponse,
                )
            assert missing.value.code == rpc_pb2.STATUS_CODE_NOT_FOUND
            with pytest.raises(ChatError) as invalid:
                await c.unary(
                    "/chat.v1.ThreadService/CreateThread",
                    threads_pb2.CreateThreadRequest(learner_id="not-a-uuid", title="x"),
                    threads_pb2.CreateThreadResponse,
                    idempotency_key=os.urandom(16),
                )
            assert invalid.value.code == rpc_pb2.STATUS_CODE_INVALID_ARGUMENT
            assert any(d.HasField("field_violation") for d in invalid.value.details)
            with pytest.raises(ChatError) as unknown:
                await c.unary(
                    "/chat.v1.NoSuchService/Nothing", health_pb2.HealthCheckRequest(), health_pb2.HealthCheckResponse
                )
            assert unknown.value.code == rpc_pb2.STATUS_CODE_UNIMPLEMENTED and unknown.value.not_processed

    asyncio.run(run())


def test_a_deadline_ends_a_stream_and_the_connection_goes_on() -> None:
    async def run() -> None:
        async with client() as c:
            thread = await new_thread(c, "deadline")
            started = time.monotonic()
            with pytest.raises(ChatError) as ended:
                async with contextlib.aclosing(
                    c.stream(
                        "/chat.v1.LiveService/WatchThread",
                        live_pb2.WatchThreadRequest(thread_id=thread),
                        live_pb2.WatchThreadResponse,
                        timeout=0.5,
                    )
                ) as events:
                    async for _ in events:
                        pass
            assert ended.value.code == rpc_pb2.STATUS_CODE_DEADLINE_EXCEEDED
            assert time.monotonic() - started < 10
            # Cancelled, not broken: the next call works on the same connection.
            assert (await send(c, thread, "after")).message.seq == 1

    asyncio.run(run())


def test_a_slow_reader_holds_the_server_back_and_then_reads_everything() -> None:
    async def run() -> None:
        async with client() as c:
            thread = await new_thread(c, "backpressure")
            body = "x" * 3000
            for start in range(0, 600, 50):
                await asyncio.gather(*(send(c, thread, f"{i} {body}") for i in range(start, start + 50)))
            # 600 messages of about 3 KB: nearly twice the 1 MiB stream window.
            seen = 0
            connection = c._connection
            assert connection is not None
            async with contextlib.aclosing(
                c.stream(
                    "/chat.v1.LiveService/WatchThread",
                    live_pb2.WatchThreadRequest(thread_id=thread),
                    live_pb2.WatchThreadResponse,
                )
            ) as events:
                async for response in events:
                    if seen == 0:
                        # Not reading: the server may fill the window, no more.
                        deadline = time.monotonic() + 10
                        while connection.buffered_bytes < STREAM_WINDOW * 0.9 and time.monotonic() < deadline:
                            await asyncio.sleep(0.05)
                        assert connection.buffered_bytes >= STREAM_WINDOW * 0.9
                        await asyncio.sleep(0.5)
                        assert connection.buffered_bytes <= STREAM_WINDOW
                    if response.event.HasField("message"):
                        seen += 1
                        if seen == 600:
                            break
            assert seen == 600

    asyncio.run(run())


def test_the_synchronous_facade() -> None:
    host, port = os.environ["CHATD_TEST_ADDRESS"].rsplit(":", 1)
    token = os.environ["CHATD_TEST_TOKEN"]
    with SyncClient(host, int(port), ca=os.environ["CHATD_TEST_CA"], token=lambda: token) as c:
        created = c.unary(
            "/chat.v1.ThreadService/CreateThread",
            threads_pb2.CreateThreadRequest(learner_id=LEARNER, title="sync"),
            threads_pb2.CreateThreadResponse,
            idempotency_key=os.urandom(16),
        )
        for i in range(3):
            c.unary(
                "/chat.v1.MessageService/SendMessage",
                messages_pb2.SendMessageRequest(thread_id=created.thread.id, body=f"s{i}", idempotency_key=f"s{i}"),
                messages_pb2.SendMessageResponse,
            )
        seqs: list[int] = []
        for response in c.stream(
            "/chat.v1.LiveService/WatchThread",
            live_pb2.WatchThreadRequest(thread_id=created.thread.id),
            live_pb2.WatchThreadResponse,
        ):
            if response.event.HasField("message"):
                seqs.append(response.event.message.message.seq)
                if len(seqs) == 3:
                    break  # cancels the stream on the server
        assert seqs == [1, 2, 3]
        with pytest.raises(ChatError) as missing:
            c.unary(
                "/chat.v1.ThreadService/GetThread",
                threads_pb2.GetThreadRequest(thread_id="00000000-0000-4000-8000-00000000beef"),
                threads_pb2.GetThreadResponse,
            )
        assert missing.value.code == rpc_pb2.STATUS_CODE_NOT_FOUND
