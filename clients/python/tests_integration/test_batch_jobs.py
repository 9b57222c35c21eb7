"""The batch helpers against the real chatd: an export interrupted and resumed holds every record once and matches
an uninterrupted export; an erasure run sums up erased, held and failed learners; the audit trail pages."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile

import pytest

from chatd_client import messages_pb2, privacy_pb2, threads_pb2
from chatd_client.batch import audit_records, erase_learners, export_learner, export_learners
from support import LEARNER, SECOND_LEARNER, client, sync_client


class Interrupted(Exception):
    pass


def kinds_and_ids(path: str) -> list[tuple[str, str]]:
    """The export's records as (kind, identity); audit records are left out (each export adds its own)."""
    out = []
    for line in open(path, encoding="utf-8"):
        (kind, body), = json.loads(line).items()
        if kind == "message":
            out.append((kind, f"{body['thread_id']}/{body['seq']}"))
        elif kind == "thread":
            out.append((kind, body["id"]))
        elif kind in ("edits", "read_cursor"):
            out.append((kind, f"{body.get('thread_id')}/{body.get('seq', body.get('user_id'))}"))
    return out


def test_an_interrupted_export_resumes_and_holds_every_record_once() -> None:
    async def run(directory: str) -> None:
        async with client() as admin:
            # Enough records for a few checkpoints.
            thread = await admin.create_thread(threads_pb2.CreateThreadRequest(learner_id=LEARNER, title="export"))
            await asyncio.gather(*(
                admin.send_message(messages_pb2.SendMessageRequest(thread_id=thread.thread.id, body=f"e{i}"))
                for i in range(120)
            ))
        async with client("privacy_officer") as officer:
            path = os.path.join(directory, "interrupted.jsonl")
            count = 0

            def interrupt(_: privacy_pb2.ExportRecord) -> None:
                nonlocal count
                count += 1
                if count == 77:
                    raise Interrupted()

            with pytest.raises(Interrupted):
                await export_learner(officer, LEARNER, path, reason="case 7", checkpoint_every=25, on_record=interrupt)
            assert sum(1 for _ in open(path, encoding="utf-8")) == 77
            result = await export_learner(officer, LEARNER, path, reason="case 7", checkpoint_every=25)
            assert result.resumed and result.audit_id
            whole = os.path.join(directory, "whole.jsonl")
            await export_learner(officer, LEARNER, whole, reason="case 7")
            resumed, reference = kinds_and_ids(path), kinds_and_ids(whole)
            assert resumed == reference and len(set(resumed)) == len(resumed)
            assert ("thread", thread.thread.id) in resumed
            last = json.loads(open(path, encoding="utf-8").readlines()[-1])
            assert last["summary"]["audit_id"] == result.audit_id
            # The audit trail shows the one export that was resumed, and the whole one.
            exports = [
                r async for r in audit_records(officer, learner_id=LEARNER, kind=privacy_pb2.AUDIT_KIND_EXPORT)
            ]
            assert result.audit_id in [r.id for r in exports]
            # A list of learners, one file each; a finished one is not fetched again.
            many = await export_learners(officer, [LEARNER], directory, reason="case 8")
            assert many[0].path == os.path.join(directory, f"{LEARNER}.jsonl") and many[0].records > 100

    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(run(directory))


def test_an_erasure_run_sums_up_erased_held_and_failed_learners() -> None:
    async def run() -> None:
        async with client() as admin:
            thread = await admin.create_thread(
                threads_pb2.CreateThreadRequest(learner_id=SECOND_LEARNER, title="erase me")
            )
            await admin.send_message(messages_pb2.SendMessageRequest(thread_id=thread.thread.id, body="x"))
        async with client("privacy_officer") as officer:
            # LEARNER is under a hold for the run (and released after), so the run must leave it alone.
            await officer.place_legal_hold(privacy_pb2.PlaceLegalHoldRequest(learner_id=LEARNER, reason="case 9"))
            try:
                summary = await erase_learners(
                    officer, [SECOND_LEARNER, LEARNER, "not-a-uuid"], reason="art. 17", job_id="job-1"
                )
                again = await erase_learners(officer, [SECOND_LEARNER], reason="art. 17", job_id="job-1")
            finally:
                await officer.release_legal_hold(
                    privacy_pb2.ReleaseLegalHoldRequest(learner_id=LEARNER, reason="case 9 closed")
                )
            assert [r.learner_id for r in summary.erased] == [SECOND_LEARNER]
            assert summary.removed["messages"] >= 1 and summary.removed["threads"] >= 1
            assert list(summary.held) == [LEARNER] and "legal hold" in summary.held[LEARNER]
            assert list(summary.failed) == ["not-a-uuid"] and "INVALID_ARGUMENT" in summary.failed["not-a-uuid"]
            # Run again with the same job id: the same receipt (the idempotency key's outcome), not a new one.
            assert again.erased == summary.erased
        async with client() as admin:
            listed = await admin.list_threads(threads_pb2.ListThreadsRequest(learner_id=LEARNER))
            assert listed.threads, "the held learner kept its threads"

    asyncio.run(run())


def test_batch_helpers_from_synchronous_code() -> None:
    with tempfile.TemporaryDirectory() as directory, sync_client("privacy_officer") as officer:
        path = os.path.join(directory, "sync.jsonl")
        result = officer.run(lambda c: export_learner(c, LEARNER, path, reason="airflow"))
        assert result.records > 1 and open(path, encoding="utf-8").readline().startswith('{"thread"')
