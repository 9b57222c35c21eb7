"""Retries: which failed attempts are retried, after how long, and the budget that stops a client from multiplying
its load on a server that is failing. Plain values; `Client` applies them.

- A call the server did not process (`not_processed`) had no effect: UNAVAILABLE and RESOURCE_EXHAUSTED ones are
  retried whatever the method does (docs/PROTOCOL.md 4.4; the other codes would only fail again).
- A call that may have run is retried only when a retry cannot have a second effect: the method is idempotent in the
  contract, or it is a unary mutation carrying the first attempt's idempotency key (`Client` gives every unary
  mutation one). Then UNAVAILABLE (the outcome is unknown), ABORTED (a concurrent attempt with the key is still
  running) and RESOURCE_EXHAUSTED with a `RetryInfo` (shed load) are retried.
- The wait is exponential backoff with full jitter, and never shorter than the server's `RetryInfo`.
- The budget is gRPC's retry throttling: each failed attempt costs a token, each success returns a fraction of one;
  below half the tokens no retries are made, so a client facing a failing server sends at most about 1 + ratio
  attempts per call instead of `max_attempts`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from chatd_client.errors import ChatError
from chatd_client.proto import rpc_pb2


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry. `RetryPolicy(max_attempts=1)` turns retries off."""

    #: Attempts in all, the first included.
    max_attempts: int = 5
    #: The first retry waits up to this long (seconds), each later one up to `multiplier` times longer.
    initial_backoff: float = 0.05
    max_backoff: float = 5.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts: at least 1")
        if not 0 < self.initial_backoff <= self.max_backoff:
            raise ValueError("initial_backoff: more than 0 and at most max_backoff")
        if self.multiplier < 1:
            raise ValueError("multiplier: at least 1")

    def backoff(self, retry: int, rng: random.Random) -> float:
        """The wait before retry number `retry` (1 for the first): uniform in [0, the capped exponential]."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        return rng.uniform(0, ceiling)


class RetryBudget:
    """Tokens for retries, shared by the calls of one client (gRPC's retryThrottling: `max_tokens` 10, ratio 0.1)."""

    def __init__(self, max_tokens: float = 10.0, token_ratio: float = 0.1) -> None:
        if max_tokens <= 0 or token_ratio <= 0:
            raise ValueError("max_tokens and token_ratio: more than 0")
        self.max_tokens = max_tokens
        self.token_ratio = token_ratio
        self.tokens = max_tokens

    def record_success(self) -> None:
        self.tokens = min(self.max_tokens, self.tokens + self.token_ratio)

    def record_failure(self) -> None:
        self.tokens = max(0.0, self.tokens - 1)

    @property
    def allows_retry(self) -> bool:
        return self.tokens > self.max_tokens / 2


def is_retryable(error: ChatError, *, safe_to_repeat: bool) -> bool:
    """Whether another attempt can help and cannot do harm. `safe_to_repeat`: the method is idempotent, or the call
    is a unary mutation carrying an idempotency key."""
    if error.code in (rpc_pb2.STATUS_CODE_UNAVAILABLE, rpc_pb2.STATUS_CODE_RESOURCE_EXHAUSTED) and error.not_processed:
        return True
    if not safe_to_repeat:
        return False
    if error.code in (rpc_pb2.STATUS_CODE_UNAVAILABLE, rpc_pb2.STATUS_CODE_ABORTED):
        return True
    # A processed RESOURCE_EXHAUSTED without RetryInfo is a limit of the request (a message too large): it would
    # fail again.
    return error.code == rpc_pb2.STATUS_CODE_RESOURCE_EXHAUSTED and error.retry_after_ms is not None


def retry_delay(
    error: ChatError,
    *,
    retry: int,
    safe_to_repeat: bool,
    policy: RetryPolicy,
    budget: RetryBudget,
    rng: random.Random,
) -> float | None:
    """Seconds to wait before retry number `retry` after `error`, or None when the call must fail with it. Records
    the failure in `budget`."""
    budget.record_failure()
    if retry >= policy.max_attempts or not is_retryable(error, safe_to_repeat=safe_to_repeat):
        return None
    if not budget.allows_retry:
        return None
    delay = policy.backoff(retry, rng)
    if (after := error.retry_after_ms) is not None:
        # At least the server's delay, spread a little so that the clients it refused do not all come back at once.
        floor = after / 1000
        delay = max(delay, floor + rng.uniform(0, floor * 0.2))
    return delay
