"""Errors: `ChatError` for a call that did not end OK, with a subclass per status code (`ChatError(code, ...)` makes
the subclass, so `except NotFoundError:` works), carrying the code, the message and the typed details."""

from __future__ import annotations

from typing import Any

from chatd_client.proto import rpc_pb2


class ChatError(Exception):
    """A call that ended with a status other than OK (or could not be made).

    `not_processed`: the server never started the handler, so the call had no effect (docs/PROTOCOL.md 4.4).
    """

    code: int

    def __new__(cls, code: int, *args: Any, **kwargs: Any) -> ChatError:
        if cls is ChatError:
            cls = _BY_CODE.get(code, ChatError)
        return super().__new__(cls)

    def __init__(
        self,
        code: int,
        message: str,
        details: list[rpc_pb2.StatusDetail] | None = None,
        not_processed: bool = False,
    ) -> None:
        name = rpc_pb2.StatusCode.Name(code) if code in rpc_pb2.StatusCode.values() else str(code)
        super().__init__(f"{name}: {message}")
        self.code = code
        self.message = message
        self.details = details or []
        self.not_processed = not_processed

    def __reduce__(self) -> tuple[Any, ...]:
        return (ChatError, (self.code, self.message, self.details, self.not_processed))

    @property
    def retry_after_ms(self) -> int | None:
        """The server's RetryInfo: wait at least this long before retrying."""
        for detail in self.details:
            if detail.HasField("retry_info"):
                return int(detail.retry_info.retry_after_ms)
        return None

    @property
    def resume_info(self) -> rpc_pb2.ResumeInfo | None:
        """Where a stream can resume from, when the server said."""
        for detail in self.details:
            if detail.HasField("resume_info"):
                return detail.resume_info
        return None

    @property
    def field_violations(self) -> list[rpc_pb2.FieldViolation]:
        """The request fields that failed validation (INVALID_ARGUMENT)."""
        return [detail.field_violation for detail in self.details if detail.HasField("field_violation")]

    @property
    def precondition_failures(self) -> list[rpc_pb2.PreconditionFailure]:
        """The preconditions that did not hold (FAILED_PRECONDITION), e.g. a legal hold."""
        return [detail.precondition_failure for detail in self.details if detail.HasField("precondition_failure")]

    @property
    def quota_failure(self) -> rpc_pb2.QuotaFailure | None:
        """The rate limit that refused the call (RESOURCE_EXHAUSTED): `subject` is "principal" or "tenant"."""
        for detail in self.details:
            if detail.HasField("quota_failure"):
                return detail.quota_failure
        return None

    @property
    def error_info(self) -> rpc_pb2.ErrorInfo | None:
        """The machine-readable reason, when the server gave one."""
        for detail in self.details:
            if detail.HasField("error_info"):
                return detail.error_info
        return None


class CallCancelledError(ChatError):
    """CANCELLED: the server cancelled the call (not asyncio.CancelledError, which is this side's)."""


class UnknownError(ChatError):
    """UNKNOWN."""


class InvalidArgumentError(ChatError):
    """INVALID_ARGUMENT: the request is wrong; `field_violations` says where. Do not retry."""


class DeadlineExceededError(ChatError):
    """DEADLINE_EXCEEDED: the deadline passed first."""


class NotFoundError(ChatError):
    """NOT_FOUND (also what a thread outside the caller's scope looks like)."""


class AlreadyExistsError(ChatError):
    """ALREADY_EXISTS, e.g. an idempotency key used for a different request."""


class PermissionDeniedError(ChatError):
    """PERMISSION_DENIED."""


class ResourceExhaustedError(ChatError):
    """RESOURCE_EXHAUSTED: a rate limit (`quota_failure`), load shedding, or a limit of the request."""


class FailedPreconditionError(ChatError):
    """FAILED_PRECONDITION; `precondition_failures` says which."""


class AbortedError(ChatError):
    """ABORTED: a concurrent attempt with the same idempotency key has not finished (retry after RetryInfo)."""


class OutOfRangeError(ChatError):
    """OUT_OF_RANGE."""


class UnimplementedError(ChatError):
    """UNIMPLEMENTED: the server has no such method."""


class InternalError(ChatError):
    """INTERNAL: a server fault (the message names the call id for the server's log) or a protocol error."""


class UnavailableError(ChatError):
    """UNAVAILABLE: the connection failed or the server is draining; retry, preferably on another connection."""


class DataLossError(ChatError):
    """DATA_LOSS."""


class UnauthenticatedError(ChatError):
    """UNAUTHENTICATED: no token, a bad one, or one that expired."""


_BY_CODE: dict[int, type[ChatError]] = {
    rpc_pb2.STATUS_CODE_CANCELLED: CallCancelledError,
    rpc_pb2.STATUS_CODE_UNKNOWN: UnknownError,
    rpc_pb2.STATUS_CODE_INVALID_ARGUMENT: InvalidArgumentError,
    rpc_pb2.STATUS_CODE_DEADLINE_EXCEEDED: DeadlineExceededError,
    rpc_pb2.STATUS_CODE_NOT_FOUND: NotFoundError,
    rpc_pb2.STATUS_CODE_ALREADY_EXISTS: AlreadyExistsError,
    rpc_pb2.STATUS_CODE_PERMISSION_DENIED: PermissionDeniedError,
    rpc_pb2.STATUS_CODE_RESOURCE_EXHAUSTED: ResourceExhaustedError,
    rpc_pb2.STATUS_CODE_FAILED_PRECONDITION: FailedPreconditionError,
    rpc_pb2.STATUS_CODE_ABORTED: AbortedError,
    rpc_pb2.STATUS_CODE_OUT_OF_RANGE: OutOfRangeError,
    rpc_pb2.STATUS_CODE_UNIMPLEMENTED: UnimplementedError,
    rpc_pb2.STATUS_CODE_INTERNAL: InternalError,
    rpc_pb2.STATUS_CODE_UNAVAILABLE: UnavailableError,
    rpc_pb2.STATUS_CODE_DATA_LOSS: DataLossError,
    rpc_pb2.STATUS_CODE_UNAUTHENTICATED: UnauthenticatedError,
}


def status_error(status: rpc_pb2.CallStatus) -> ChatError:
    """The error for a non-OK TRAILERS status."""
    return ChatError(status.code, status.message, list(status.details), status.not_processed)
