"""Batch helpers for privacy jobs: export learners to JSON lines, resuming after a crash; erase a list of learners
with a summary; read the audit trail. Coroutines on a `Client`; from synchronous code (an Airflow task, a script),
`SyncClient.run(lambda client: export_learner(client, ...))`.

An export file is `<path>` (one JSON object a line, `{"<kind>": {...}}` in the export's order: threads, then per
thread its messages and edit histories, read cursors, audit records, and the summary last) and a checkpoint beside
it, `<path>.checkpoint` (JSON: bytes of the file that are final, and the resume token of the last record in them).
A checkpoint is written every `checkpoint_every` records, after the file is flushed to disk. Run again after a crash,
`export_learner` cuts the file back to the checkpoint and asks the server to continue after its token, so the file
holds every record exactly once; a finished export (its summary written) is not fetched again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field

from google.protobuf import json_format

from chatd_client.client import Client
from chatd_client.errors import ChatError, FailedPreconditionError
from chatd_client.proto import privacy_pb2, rpc_pb2


@dataclass
class ExportResult:
    """One learner's export: where it is, how many records, and the server's audit record of it."""

    learner_id: str
    path: str
    records: int
    audit_id: str
    #: True when this run continued an export an earlier run had begun.
    resumed: bool = False


@dataclass
class _Checkpoint:
    offset: int = 0
    records: int = 0
    resume_token: str = ""
    done: bool = False
    audit_id: str = ""


def _read_checkpoint(path: str) -> _Checkpoint | None:
    try:
        with open(path, encoding="utf-8") as file:
            return _Checkpoint(**json.load(file))
    except FileNotFoundError:
        return None


def _write_checkpoint(path: str, checkpoint: _Checkpoint) -> None:
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as file:
        json.dump(dataclasses.asdict(checkpoint), file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def record_json(record: privacy_pb2.ExportRecord) -> str:
    """An export record as its JSON line (without the resume token, which is the checkpoint's)."""
    kind = record.WhichOneof("record") or "unknown"
    body = json_format.MessageToDict(getattr(record, kind), preserving_proto_field_name=True)
    return json.dumps({kind: body}, ensure_ascii=False, separators=(",", ":"))


async def export_learner(
    client: Client,
    learner_id: str,
    path: str,
    *,
    reason: str,
    checkpoint_every: int = 500,
    on_record: Callable[[privacy_pb2.ExportRecord], None] | None = None,
) -> ExportResult:
    """Exports one learner's data (ExportLearnerData, GDPR Art. 15 and 20) to the JSON lines file `path`, resuming
    an export an earlier run left unfinished there (see the module). `on_record` sees each record after it is
    written (a progress bar; an exception from it ends the export as a crash would, to be resumed). Raises the
    server's `ChatError` (a learner outside the caller's scope is NOT_FOUND); what was written stays, resumable."""
    if checkpoint_every < 1:
        raise ValueError("checkpoint_every: at least 1")
    checkpoint_path = path + ".checkpoint"
    checkpoint = _read_checkpoint(checkpoint_path)
    if checkpoint is not None and checkpoint.done:
        return ExportResult(learner_id, path, checkpoint.records, checkpoint.audit_id)
    resumed = checkpoint is not None and checkpoint.records > 0
    checkpoint = checkpoint or _Checkpoint()
    request = privacy_pb2.ExportLearnerDataRequest(
        learner_id=learner_id, reason=reason, resume_token=checkpoint.resume_token
    )
    with open(path, "r+b" if os.path.exists(path) else "wb") as file:
        # Lines past the checkpoint were not known to be on disk: the server sends them again.
        file.truncate(checkpoint.offset)
        file.seek(checkpoint.offset)
        since = 0
        async with contextlib.aclosing(client.export_learner_data(request)) as responses:
            async for response in responses:
                record = response.record
                file.write(record_json(record).encode("utf-8") + b"\n")
                checkpoint.records += 1
                since += 1
                if record.HasField("summary"):
                    checkpoint.audit_id = record.summary.audit_id
                    checkpoint.done = True
                if record.resume_token:
                    checkpoint.resume_token = record.resume_token
                if since >= checkpoint_every or checkpoint.done:
                    file.flush()
                    os.fsync(file.fileno())
                    checkpoint.offset = file.tell()
                    _write_checkpoint(checkpoint_path, checkpoint)
                    since = 0
                if on_record is not None:
                    on_record(record)
    if not checkpoint.done:
        raise ChatError(
            rpc_pb2.STATUS_CODE_UNAVAILABLE,
            f"the export of {learner_id} ended without its summary; run it again to resume",
        )
    return ExportResult(learner_id, path, checkpoint.records, checkpoint.audit_id, resumed)


async def export_learners(
    client: Client,
    learner_ids: Iterable[str],
    directory: str,
    *,
    reason: str,
    checkpoint_every: int = 500,
) -> list[ExportResult]:
    """Exports each learner to `<directory>/<learner_id>.jsonl`, one after the other, resuming each as
    `export_learner` does; run again after a crash, finished learners are skipped and the unfinished one resumes.
    The first error ends the run (the files so far stay)."""
    os.makedirs(directory, exist_ok=True)
    results = []
    for learner_id in learner_ids:
        path = os.path.join(directory, f"{learner_id}.jsonl")
        results.append(
            await export_learner(client, learner_id, path, reason=reason, checkpoint_every=checkpoint_every)
        )
    return results


@dataclass
class ErasureSummary:
    """What an erasure run did: the receipts of the learners erased, the learners a legal hold kept, and the ones
    that failed with another error (the message says why)."""

    erased: list[privacy_pb2.ErasureReceipt] = field(default_factory=list)
    held: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def removed(self) -> dict[str, int]:
        """Rows removed, per store, over every learner erased."""
        totals: dict[str, int] = {}
        for receipt in self.erased:
            for descriptor in receipt.removed.DESCRIPTOR.fields:
                name = descriptor.name
                totals[name] = totals.get(name, 0) + int(getattr(receipt.removed, name))
        return totals


async def erase_learners(
    client: Client,
    learner_ids: Iterable[str],
    *,
    reason: str,
    job_id: str | None = None,
) -> ErasureSummary:
    """Erases each learner (EraseLearnerData, GDPR Art. 17) and sums up. A learner under a legal hold is not erased
    and is listed in `held`; other errors go to `failed`; the run goes on. With `job_id`, each learner's call carries
    an idempotency key made from the job and the learner, so a job run again after a crash (within the server's
    window, 24 h) gets the same receipts instead of second, empty ones."""
    summary = ErasureSummary()
    for learner_id in learner_ids:
        key = None if job_id is None else hashlib.sha256(f"erase\0{job_id}\0{learner_id}".encode()).digest()[:16]
        try:
            response = await client.erase_learner_data(
                privacy_pb2.EraseLearnerDataRequest(learner_id=learner_id, reason=reason), idempotency_key=key
            )
        except FailedPreconditionError as error:
            summary.held[learner_id] = error.message
            continue
        except ChatError as error:
            summary.failed[learner_id] = str(error)
            continue
        summary.erased.append(response.receipt)
    return summary


async def audit_records(
    client: Client,
    *,
    learner_id: str = "",
    kind: privacy_pb2.AuditKind = privacy_pb2.AUDIT_KIND_UNSPECIFIED,
    from_us: int = 0,
    to_us: int = 0,
    page_size: int = 200,
) -> AsyncIterator[privacy_pb2.AuditRecord]:
    """Every audit record that matches (ListAuditRecords, newest first), page after page."""
    request = privacy_pb2.ListAuditRecordsRequest(learner_id=learner_id, kind=kind, from_us=from_us, to_us=to_us)
    request.page.page_size = page_size
    while True:
        response = await client.list_audit_records(request)
        for record in response.records:
            yield record
        if not response.page.next_page_token:
            return
        request.page.page_token = response.page.next_page_token
