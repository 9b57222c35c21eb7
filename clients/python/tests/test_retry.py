"""Retries as values (which errors, how long, the budget) and the client's retry loop with scripted attempts (no
server): one idempotency key for every attempt of a mutation, none for a read, nothing retried that could do harm."""

import asyncio
import random
from collections.abc import AsyncGenerator, Mapping

import pytest
from google.protobuf.message import Message

from chatd_client import ChatError, Client, rpc_pb2, threads_pb2
from chatd_client.errors import (
    AbortedError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
)
from chatd_client.method import Method, RequestT, ResponseT
from chatd_client.retry import RetryBudget, RetryPolicy, is_retryable, retry_delay
from chatd_client.stubs import METHODS, LiveService, ThreadService

UNAVAILABLE = rpc_pb2.STATUS_CODE_UNAVAILABLE
EXHAUSTED = rpc_pb2.STATUS_CODE_RESOURCE_EXHAUSTED


def retry_info(ms: int) -> list[rpc_pb2.StatusDetail]:
    return [rpc_pb2.StatusDetail(retry_info=rpc_pb2.RetryInfo(retry_after_ms=ms))]


def test_errors_are_typed_by_code_and_carry_their_details() -> None:
    error = ChatError(EXHAUSTED, "slow down", retry_info(250), not_processed=True)
    assert isinstance(error, ResourceExhaustedError) and isinstance(error, ChatError)
    assert error.retry_after_ms == 250 and error.not_processed
    assert str(error) == "STATUS_CODE_RESOURCE_EXHAUSTED: slow down"
    violation = rpc_pb2.StatusDetail(field_violation=rpc_pb2.FieldViolation(field="title", description="too long"))
    invalid = ChatError(rpc_pb2.STATUS_CODE_INVALID_ARGUMENT, "bad", [violation])
    assert isinstance(invalid, InvalidArgumentError)
    assert [v.field for v in invalid.field_violations] == ["title"]
    assert type(ChatError(99, "from a newer server")) is ChatError


def test_which_errors_are_retried() -> None:
    # Not processed: had no effect, whatever the method does; only UNAVAILABLE and RESOURCE_EXHAUSTED can get better.
    assert is_retryable(ChatError(UNAVAILABLE, "x", not_processed=True), safe_to_repeat=False)
    assert is_retryable(ChatError(EXHAUSTED, "x", not_processed=True), safe_to_repeat=False)
    denied = ChatError(rpc_pb2.STATUS_CODE_PERMISSION_DENIED, "x", not_processed=True)
    assert not is_retryable(denied, safe_to_repeat=True)
    # Processed (the outcome may be an effect): only when a repeat cannot have a second one.
    assert not is_retryable(ChatError(UNAVAILABLE, "outcome unknown"), safe_to_repeat=False)
    assert is_retryable(ChatError(UNAVAILABLE, "outcome unknown"), safe_to_repeat=True)
    assert is_retryable(ChatError(rpc_pb2.STATUS_CODE_ABORTED, "key in use", retry_info(100)), safe_to_repeat=True)
    assert is_retryable(ChatError(EXHAUSTED, "shedding load", retry_info(50)), safe_to_repeat=True)
    # A limit of the request itself (no RetryInfo) would fail again.
    assert not is_retryable(ChatError(EXHAUSTED, "message over 1 MiB"), safe_to_repeat=True)
    for code in (rpc_pb2.STATUS_CODE_INVALID_ARGUMENT, rpc_pb2.STATUS_CODE_NOT_FOUND, rpc_pb2.STATUS_CODE_INTERNAL,
                 rpc_pb2.STATUS_CODE_DEADLINE_EXCEEDED, rpc_pb2.STATUS_CODE_UNAUTHENTICATED):
        assert not is_retryable(ChatError(code, "x"), safe_to_repeat=True)


def test_backoff_is_jittered_capped_and_never_shorter_than_retry_info() -> None:
    policy = RetryPolicy(max_attempts=10, initial_backoff=0.1, max_backoff=1.0, multiplier=2.0)
    rng = random.Random(7)
    waits = [policy.backoff(retry, rng) for retry in range(1, 9) for _ in range(50)]
    assert all(0 <= wait <= 1.0 for wait in waits)
    assert max(policy.backoff(1, rng) for _ in range(200)) <= 0.1
    assert len({round(wait, 6) for wait in waits}) > 300, "not jittered"
    error = ChatError(EXHAUSTED, "rate", retry_info(400), not_processed=True)
    delays = [retry_delay(error, retry=1, safe_to_repeat=False, policy=policy, budget=RetryBudget(1000), rng=rng)
              for _ in range(100)]
    assert all(d is not None and 0.4 <= d <= 0.48 for d in delays)
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


def test_the_budget_stops_retries_against_a_failing_server_and_recovers_with_successes() -> None:
    budget = RetryBudget(max_tokens=10, token_ratio=0.1)
    error = ChatError(UNAVAILABLE, "x", not_processed=True)
    policy = RetryPolicy(max_attempts=100)
    rng = random.Random(1)
    allowed = 0
    while retry_delay(error, retry=1, safe_to_repeat=True, policy=policy, budget=budget, rng=rng) is not None:
        allowed += 1
    assert allowed == 4  # 10 tokens: retries stop once they are down to half
    for _ in range(20):
        budget.record_success()
    assert retry_delay(error, retry=1, safe_to_repeat=True, policy=policy, budget=budget, rng=rng) is not None
    # And never past max_attempts.
    assert retry_delay(error, retry=100, safe_to_repeat=True, policy=policy, budget=RetryBudget(), rng=rng) is None


class Scripted(Client):
    """A client whose attempts are scripted: each takes the next outcome and records its header's key and attempt."""

    def __init__(self, outcomes: list[ChatError | Message], **options: object) -> None:
        super().__init__("127.0.0.1", 1, **options)  # type: ignore[arg-type]
        self.outcomes = outcomes
        self.attempts: list[tuple[bytes | None, int]] = []
        self.waits: list[float] = []

        async def record(delay: float) -> None:
            self.waits.append(delay)

        self._sleep = record

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
        self.attempts.append((idempotency_key, attempt))
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, ChatError):
            raise outcome
        assert isinstance(outcome, method.response_type)
        return outcome

    async def _stream_attempt(
        self,
        method: Method[RequestT, ResponseT],
        payload: bytes,
        deadline: float | None,
        timeout: float | None,
        metadata: Mapping[str, bytes] | None,
        attempt: int,
    ) -> AsyncGenerator[ResponseT, None]:
        self.attempts.append((None, attempt))
        while self.outcomes:
            outcome = self.outcomes.pop(0)
            if isinstance(outcome, ChatError):
                raise outcome
            assert isinstance(outcome, method.response_type)
            yield outcome


def test_a_mutation_keeps_one_key_across_its_retries() -> None:
    created = threads_pb2.CreateThreadResponse(thread=threads_pb2.Thread(id="t1"))
    client = Scripted([
        ChatError(UNAVAILABLE, "outcome unknown"),
        ChatError(rpc_pb2.STATUS_CODE_ABORTED, "busy", retry_info(20)),
        created,
    ])
    response = asyncio.run(client.create_thread(threads_pb2.CreateThreadRequest(learner_id="l", title="t")))
    assert response == created
    keys = {key for key, _ in client.attempts}
    assert len(keys) == 1 and len(next(iter(keys)) or b"") == 16
    assert [attempt for _, attempt in client.attempts] == [0, 1, 2]
    assert client.waits[1] >= 0.02
    # A key of the caller's is used as it is; every call gets its own.
    client = Scripted([ChatError(UNAVAILABLE, "x"), created])
    asyncio.run(client.create_thread(threads_pb2.CreateThreadRequest(), idempotency_key=b"k" * 16))
    assert [key for key, _ in client.attempts] == [b"k" * 16, b"k" * 16]
    client = Scripted([created, created])

    async def two() -> None:
        await client.create_thread()
        await client.create_thread()

    asyncio.run(two())
    assert client.attempts[0][0] != client.attempts[1][0]


def test_reads_carry_no_key_and_what_cannot_improve_is_not_retried() -> None:
    listed = threads_pb2.ListThreadsResponse()
    client = Scripted([ChatError(UNAVAILABLE, "connection lost"), listed])
    assert asyncio.run(client.list_threads()) == listed
    assert client.attempts == [(None, 0), (None, 1)]
    client = Scripted([ChatError(rpc_pb2.STATUS_CODE_NOT_FOUND, "no such thread"), listed])
    with pytest.raises(NotFoundError):
        asyncio.run(client.get_thread(threads_pb2.GetThreadRequest(thread_id="x")))
    assert len(client.attempts) == 1
    # max_attempts bounds the attempts; the last error is raised.
    client = Scripted([ChatError(UNAVAILABLE, f"down {n}", not_processed=True) for n in range(5)],
                      retry=RetryPolicy(max_attempts=3))
    with pytest.raises(UnavailableError, match="down 2"):
        asyncio.run(client.list_threads())
    assert len(client.attempts) == 3
    # A wait that would pass the deadline is not waited: the error comes at once.
    client = Scripted([ChatError(EXHAUSTED, "rate", retry_info(60_000), not_processed=True), listed])
    with pytest.raises(ResourceExhaustedError):
        asyncio.run(client.list_threads(timeout=5))
    assert len(client.attempts) == 1 and client.waits == []


def test_a_stream_is_retried_until_its_first_response_and_never_after() -> None:
    from chatd_client import live_pb2

    head = live_pb2.WatchThreadResponse(event=live_pb2.WatchEvent(head=live_pb2.StreamHead(head_seq=3)))

    async def collect(client: Client) -> list[live_pb2.WatchThreadResponse]:
        return [r async for r in client.watch_thread(live_pb2.WatchThreadRequest(thread_id="t"))]

    client = Scripted([ChatError(UNAVAILABLE, "refused", not_processed=True), head])
    assert asyncio.run(collect(client)) == [head]
    assert [attempt for _, attempt in client.attempts] == [0, 1]
    client = Scripted([head, ChatError(rpc_pb2.STATUS_CODE_PERMISSION_DENIED, "no")])
    with pytest.raises(ChatError):
        asyncio.run(collect(client))
    assert len(client.attempts) == 1


def test_the_stubs_know_every_method_and_which_are_mutations() -> None:
    assert ThreadService.CreateThread.idempotent is False
    assert ThreadService.ListThreads.idempotent is True
    assert LiveService.WatchThread.streaming is True
    assert len(METHODS) == 28
    mutations = sorted(m.name for m in METHODS.values() if not m.idempotent)
    assert mutations == sorted([
        "CreateThread", "UpdateThread", "DeleteThread", "SendMessage", "EditMessage", "DeleteMessage", "MarkRead",
        "EraseLearnerData", "PlaceLegalHold", "ReleaseLegalHold", "SetRetentionPolicy", "RunRetentionSweep",
    ])
    assert isinstance(AbortedError(rpc_pb2.STATUS_CODE_ABORTED, "x"), ChatError)
