"""Streams that resume by themselves across a chatd restart (SIGKILL) and a drain (SIGTERM): WatchThread,
WatchInbox and SubscribeEvents on an instance of the test's own, messages sent through the shared chatd before,
while and after it is down; every stream gets every message exactly once, in order."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import pytest

from chatd_client import events_pb2, live_pb2, messages_pb2, threads_pb2
from chatd_client.errors import UnavailableError
from chatd_client.retry import RetryPolicy
from support import LEARNER, Instance, client

FAST = RetryPolicy(max_attempts=100, initial_backoff=0.05, max_backoff=0.5)


def across(down: Callable[[Instance], object]) -> None:
    with Instance() as instance:

        async def run() -> None:
            async with (
                client() as writer,
                client(port=instance.port, stream_retry=FAST) as reader,
                client("service", port=instance.port, stream_retry=FAST) as service,
            ):
                thread = (await writer.create_thread(
                    threads_pb2.CreateThreadRequest(learner_id=LEARNER, title=f"resume-{os.urandom(4).hex()}")
                )).thread.id
                expected = [f"m{i}" for i in range(30)]
                seen: dict[str, list[str]] = {"thread": [], "inbox": [], "events": []}
                heads = {"thread": asyncio.Event(), "inbox": asyncio.Event()}

                async def watch_thread() -> None:
                    async for r in reader.watch_thread(live_pb2.WatchThreadRequest(thread_id=thread)):
                        if r.event.HasField("head"):
                            heads["thread"].set()
                        elif r.event.HasField("message"):
                            seen["thread"].append(r.event.message.message.body)
                            if len(seen["thread"]) == len(expected):
                                return

                async def watch_inbox() -> None:
                    async for r in reader.watch_inbox(live_pb2.WatchInboxRequest(learner_id=LEARNER)):
                        if r.event.HasField("head"):
                            heads["inbox"].set()
                        elif r.event.HasField("message") and r.event.message.message.thread_id == thread:
                            seen["inbox"].append(r.event.message.message.body)
                            if len(seen["inbox"]) == len(expected):
                                return

                async def subscribe() -> None:
                    request = events_pb2.SubscribeEventsRequest(types=[events_pb2.EVENT_TYPE_MESSAGE_CREATED])
                    async for r in service.subscribe_events(request):
                        if r.event.thread_id == thread:
                            seen["events"].append(f"m{len(seen['events'])}")
                            if len(seen["events"]) == len(expected):
                                return

                streams = asyncio.gather(watch_thread(), watch_inbox(), subscribe())
                await asyncio.wait_for(asyncio.gather(*(h.wait() for h in heads.values())), 30)

                async def send(numbers: range) -> None:
                    for i in numbers:
                        await writer.send_message(messages_pb2.SendMessageRequest(thread_id=thread, body=f"m{i}"))

                async def until(count: int) -> None:
                    while min(len(s) for s in seen.values()) < count:
                        await asyncio.sleep(0.02)

                await send(range(0, 10))
                await asyncio.wait_for(until(10), 30)
                await asyncio.to_thread(down, instance)
                await send(range(10, 20))  # while the instance is down
                await asyncio.to_thread(instance.start)
                await send(range(20, 30))
                await asyncio.wait_for(streams, 60)
                assert seen["thread"] == expected and seen["inbox"] == expected
                assert len(seen["events"]) == len(expected)
                # The streams did end and resume (on both clients).
                assert reader.retries >= 2 and service.retries >= 1

        asyncio.run(run())


def test_streams_resume_across_a_restart_with_every_message_once() -> None:
    across(Instance.kill)


def test_streams_resume_across_a_drain_with_every_message_once() -> None:
    def drain(instance: Instance) -> None:
        assert instance.stop() == 0

    across(drain)


def test_without_resume_the_same_drop_ends_the_stream() -> None:
    # The contrast that keeps the tests above honest.
    with Instance() as instance:

        async def run() -> None:
            async with client() as writer, client(port=instance.port) as reader:
                thread = (await writer.create_thread(
                    threads_pb2.CreateThreadRequest(learner_id=LEARNER, title="no resume")
                )).thread.id
                stream = reader.watch_thread(live_pb2.WatchThreadRequest(thread_id=thread), resume=False)
                assert (await stream.__anext__()).event.HasField("head")
                await asyncio.to_thread(instance.kill)
                with pytest.raises(UnavailableError):
                    async for _ in stream:
                        pass

        asyncio.run(run())
