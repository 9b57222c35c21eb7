"""Errors: one `ChatError` per call status, carrying the code, the message and the typed details."""

from __future__ import annotations

from chatd_client.proto import rpc_pb2


class ChatError(Exception):
    """A call that ended with a status other than OK (or could not be made)."""

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

    @property
    def retry_after_ms(self) -> int | None:
        """The server's RetryInfo, when it sent one."""
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


def status_error(status: rpc_pb2.CallStatus) -> ChatError:
    """The error for a non-OK TRAILERS status."""
    return ChatError(status.code, status.message, list(status.details), status.not_processed)
