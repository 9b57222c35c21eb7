"""The batch export's files against a scripted export (no server): a crash after some records leaves a file that
the next run cuts back to its checkpoint and completes from the server's resume token, every record once."""

import asyncio
import json
import os
import tempfile
from collections.abc import AsyncGenerator, Mapping

import pytest

from chatd_client import Client, privacy_pb2, threads_pb2
from chatd_client.batch import ErasureSummary, export_learner
from chatd_client.method import Method, RequestT, ResponseT

RECORDS = 25


def record(index: int) -> privacy_pb2.ExportRecord:
    if index == RECORDS - 1:
        return privacy_pb2.ExportRecord(summary=privacy_pb2.ExportSummary(audit_id="audit-1", records=RECORDS))
    return privacy_pb2.ExportRecord(thread=threads_pb2.Thread(id=f"thread-{index}"), resume_token=f"t{index}")


class ScriptedExport(Client):
    """Serves RECORDS export records, continuing after the request's resume token."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1", 1)
        self.starts: list[int] = []

    async def _stream_attempt(
        self,
        method: Method[RequestT, ResponseT],
        payload: bytes,
        deadline: float | None,
        timeout: float | None,
        metadata: Mapping[str, bytes] | None,
        attempt: int,
    ) -> AsyncGenerator[ResponseT, None]:
        request = privacy_pb2.ExportLearnerDataRequest.FromString(payload)
        start = int(request.resume_token[1:]) + 1 if request.resume_token else 0
        self.starts.append(start)
        for index in range(start, RECORDS):
            response = privacy_pb2.ExportLearnerDataResponse(record=record(index))
            assert isinstance(response, method.response_type)
            yield response


class Crash(Exception):
    pass


def test_an_export_crashed_midway_resumes_from_its_checkpoint_with_every_record_once() -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "learner.jsonl")
        client = ScriptedExport()
        seen = 0

        def crash_after_ten(_: privacy_pb2.ExportRecord) -> None:
            nonlocal seen
            seen += 1
            if seen == 10:
                raise Crash()

        with pytest.raises(Crash):
            asyncio.run(export_learner(client, "l", path, reason="r", checkpoint_every=4, on_record=crash_after_ten))
        with open(path, "rb") as file:
            assert file.read().count(b"\n") == 10  # written, but only 8 are behind the checkpoint
        checkpoint = json.load(open(path + ".checkpoint"))
        assert checkpoint["records"] == 8 and checkpoint["resume_token"] == "t7" and not checkpoint["done"]
        result = asyncio.run(export_learner(client, "l", path, reason="r", checkpoint_every=4))
        assert result.resumed and result.records == RECORDS and result.audit_id == "audit-1"
        assert client.starts == [0, 8]
        lines = [json.loads(line) for line in open(path, encoding="utf-8")]
        assert [line["thread"]["id"] for line in lines[:-1]] == [f"thread-{i}" for i in range(RECORDS - 1)]
        assert lines[-1] == {"summary": {"audit_id": "audit-1", "records": str(RECORDS)}}
        # Finished: a third run reads nothing from the server.
        again = asyncio.run(export_learner(client, "l", path, reason="r"))
        assert again.records == RECORDS and client.starts == [0, 8]


def test_an_erasure_summary_adds_up_the_receipts() -> None:
    summary = ErasureSummary()
    for messages in (3, 4):
        receipt = privacy_pb2.ErasureReceipt(learner_id=f"l{messages}")
        receipt.removed.messages = messages
        receipt.removed.threads = 1
        summary.erased.append(receipt)
    assert summary.removed["messages"] == 7 and summary.removed["threads"] == 2
    assert summary.removed["read_cursors"] == 0
