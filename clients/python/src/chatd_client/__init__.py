"""A client for chatd's chat/1 protocol.

`Client` makes calls over one TLS 1.3 connection (`chatd_client.connection`), every method of the contract a method
of it (`chatd_client.stubs`), with idempotency keys, retries (`chatd_client.retry`) and streams that resume
(`chatd_client.resume`); `SyncClient` is the same, blocking. Errors are `ChatError` and its subclass per status code
(`chatd_client.errors`). Batch jobs: `chatd_client.batch`. The message classes generated from chatd's contract
(`proto/chat/v1`) are in `chatd_client.proto`, e.g. `from chatd_client import rpc_pb2, threads_pb2`. The framing of
docs/PROTOCOL.md is in `chatd_client.wire`.
"""

from chatd_client.client import Client
from chatd_client.errors import ChatError
from chatd_client.retry import RetryBudget, RetryPolicy
from chatd_client.sync import SyncClient
from chatd_client.proto import (
    common_pb2,
    events_pb2,
    health_pb2,
    live_pb2,
    messages_pb2,
    privacy_pb2,
    rpc_pb2,
    threads_pb2,
)

__all__ = [
    "ChatError",
    "Client",
    "RetryBudget",
    "RetryPolicy",
    "SyncClient",
    "common_pb2",
    "events_pb2",
    "health_pb2",
    "live_pb2",
    "messages_pb2",
    "privacy_pb2",
    "rpc_pb2",
    "threads_pb2",
]
__version__ = "0.1.0"
