"""Every service through the generated stubs against the real chatd, and retries that keep one effect."""

from __future__ import annotations

import asyncio
import contextlib
import os

import pytest

from chatd_client import events_pb2, health_pb2, live_pb2, messages_pb2, privacy_pb2, threads_pb2
from chatd_client import Client
from chatd_client.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    NotFoundError,
    UnauthenticatedError,
    UnavailableError,
)
from chatd_client.retry import RetryBudget, RetryPolicy
from chatd_client.stubs import METHODS
from support import CA, LEARNER, SECOND_LEARNER, Instance, address, client, sync_client


def test_the_method_listing_is_what_the_stubs_were_generated_from() -> None:
    async def run() -> None:
        async with client() as c:
            listing = await c.list_methods()
            assert {m.name: m.idempotent for m in listing.methods} == {p: m.idempotent for p, m in METHODS.items()}
            assert {m.name for m in listing.methods if m.kind == 2} == {p for p, m in METHODS.items() if m.streaming}

    asyncio.run(run())


def test_threads_messages_and_live_through_the_stubs() -> None:
    async def run() -> None:
        async with client() as c:
            assert (await c.health_check()).status == health_pb2.SERVING_STATUS_SERVING
            async with contextlib.aclosing(c.health_watch()) as health:
                assert (await anext(health)).status == health_pb2.SERVING_STATUS_SERVING
            # No idempotency key given: the client makes one (SendMessage needs a key: the header's does).
            thread = (await c.create_thread(threads_pb2.CreateThreadRequest(learner_id=LEARNER, title="stubs"))).thread
            assert (await c.get_thread(threads_pb2.GetThreadRequest(thread_id=thread.id))).thread.title == "stubs"
            renamed = await c.update_thread(threads_pb2.UpdateThreadRequest(thread_id=thread.id, title="renamed"))
            assert renamed.thread.title == "renamed"
            listed = await c.list_threads(threads_pb2.ListThreadsRequest(learner_id=LEARNER))
            assert thread.id in [t.id for t in listed.threads]
            sent = await c.send_message(messages_pb2.SendMessageRequest(thread_id=thread.id, body="one"))
            seq = sent.message.seq
            got = await c.get_message(messages_pb2.GetMessageRequest(thread_id=thread.id, seq=seq))
            assert got.message.body == "one"
            await c.edit_message(messages_pb2.EditMessageRequest(thread_id=thread.id, seq=seq, body="uno"))
            edits = await c.list_message_edits(messages_pb2.ListMessageEditsRequest(thread_id=thread.id, seq=seq))
            assert [e.body for e in edits.edits][-1:] in (["one"], ["uno"])
            assert (await c.mark_read(messages_pb2.MarkReadRequest(thread_id=thread.id, up_to_seq=seq))).read_seq == seq
            page = await c.list_messages(messages_pb2.ListMessagesRequest(thread_id=thread.id))
            assert [m.body for m in page.messages] == ["uno"]
            kinds: list[str] = []
            async with contextlib.aclosing(c.watch_thread(live_pb2.WatchThreadRequest(thread_id=thread.id))) as events:
                async for response in events:
                    kinds.append(response.event.WhichOneof("event") or "")
                    if response.event.HasField("message"):
                        break
            assert kinds[0] == "head" and kinds[-1] == "message"
            async with contextlib.aclosing(c.watch_inbox(live_pb2.WatchInboxRequest(learner_id=LEARNER))) as inbox:
                inboxed = await anext(inbox)
                assert inboxed.event.HasField("head") and inboxed.event.head.cursor
            await c.delete_message(messages_pb2.DeleteMessageRequest(thread_id=thread.id, seq=seq))
            await c.delete_thread(threads_pb2.DeleteThreadRequest(thread_id=thread.id))
            with pytest.raises(NotFoundError):
                await c.get_thread(threads_pb2.GetThreadRequest(thread_id=thread.id))
        async with client("service") as service:
            async with contextlib.aclosing(service.subscribe_events(events_pb2.SubscribeEventsRequest())) as outbox:
                published = await anext(outbox)
                assert published.event.cursor and published.event.tenant_id

    asyncio.run(run())


def test_privacy_through_the_stubs() -> None:
    async def run() -> None:
        async with client() as admin:
            thread = await admin.create_thread(threads_pb2.CreateThreadRequest(learner_id=SECOND_LEARNER, title="p"))
            await admin.send_message(messages_pb2.SendMessageRequest(thread_id=thread.thread.id, body="to erase"))
        async with client("privacy_officer") as c:
            await c.place_legal_hold(privacy_pb2.PlaceLegalHoldRequest(learner_id=SECOND_LEARNER, reason="case 1"))
            holds = await c.list_legal_holds()
            assert SECOND_LEARNER in [h.learner_id for h in holds.holds]
            with pytest.raises(FailedPreconditionError) as held:
                await c.erase_learner_data(privacy_pb2.EraseLearnerDataRequest(learner_id=SECOND_LEARNER, reason="x"))
            assert [p.type for p in held.value.precondition_failures] == ["LEGAL_HOLD"]
            await c.release_legal_hold(privacy_pb2.ReleaseLegalHoldRequest(learner_id=SECOND_LEARNER, reason="done"))
            await c.set_retention_policy(privacy_pb2.SetRetentionPolicyRequest(message_retention_days=3650))
            assert (await c.get_retention_policy()).policy.message_retention_days == 3650
            sweeps = [r async for r in c.run_retention_sweep(privacy_pb2.RunRetentionSweepRequest())]
            assert sweeps and sweeps[-1].done
            records = [
                r.record.WhichOneof("record")
                async for r in c.export_learner_data(
                    privacy_pb2.ExportLearnerDataRequest(learner_id=SECOND_LEARNER, reason="subject access")
                )
            ]
            assert records[0] == "thread" and "message" in records and records[-1] == "summary"
            erased = await c.erase_learner_data(
                privacy_pb2.EraseLearnerDataRequest(learner_id=SECOND_LEARNER, reason="art. 17")
            )
            assert erased.receipt.removed.messages >= 1
            audit = await c.list_audit_records(privacy_pb2.ListAuditRecordsRequest(learner_id=SECOND_LEARNER))
            assert len(audit.records) >= 4
            assert (await c.verify_audit_trail()).intact

    asyncio.run(run())


def test_a_retried_mutation_has_the_first_attempts_outcome() -> None:
    async def run() -> None:
        async with client() as c:
            key = os.urandom(16)
            request = threads_pb2.CreateThreadRequest(learner_id=LEARNER, title="once")
            first = await c.create_thread(request, idempotency_key=key)
            again = await c.create_thread(request, idempotency_key=key)
            assert again == first
            with pytest.raises(AlreadyExistsError):
                await c.create_thread(threads_pb2.CreateThreadRequest(learner_id=LEARNER, title="other"),
                                      idempotency_key=key)

    asyncio.run(run())


def test_calls_refused_by_the_rate_limit_are_retried_after_retry_info_with_one_effect_each() -> None:
    title = f"rate-{os.urandom(4).hex()}"
    with Instance(["--rate-per-user", "20"]) as instance:

        async def run() -> None:
            retry = RetryPolicy(max_attempts=30, max_backoff=1.0)
            async with client(port=instance.port, retry=retry, retry_budget=RetryBudget(1000)) as c:
                request = threads_pb2.CreateThreadRequest(learner_id=LEARNER, title=title)
                created = await asyncio.gather(*(c.create_thread(request) for _ in range(60)))
                assert len({r.thread.id for r in created}) == 60
                # The burst is 40: at least 20 calls were refused (RESOURCE_EXHAUSTED, not processed) and retried.
                assert c.retries >= 20
                found: list[str] = []
                page = threads_pb2.ListThreadsRequest(learner_id=LEARNER)
                page.page.page_size = 200
                while True:
                    listed = await c.list_threads(page)
                    found += [t.id for t in listed.threads if t.title == title]
                    if not listed.page.next_page_token:
                        break
                    page.page.page_token = listed.page.next_page_token
                assert sorted(found) == sorted(r.thread.id for r in created)

        asyncio.run(run())


def test_the_sync_facade_has_every_stub() -> None:
    with sync_client() as c:
        thread = c.create_thread(threads_pb2.CreateThreadRequest(learner_id=LEARNER, title="sync stubs")).thread
        c.send_message(messages_pb2.SendMessageRequest(thread_id=thread.id, body="s"))
        bodies = []
        for response in c.watch_thread(live_pb2.WatchThreadRequest(thread_id=thread.id)):
            if response.event.HasField("message"):
                bodies.append(response.event.message.message.body)
                break
        assert bodies == ["s"]
        with pytest.raises(NotFoundError):
            c.get_thread(threads_pb2.GetThreadRequest(thread_id="00000000-0000-4000-8000-00000000cafe"))


def test_mutual_tls_a_service_certificate_is_the_caller() -> None:
    tls = os.path.dirname(os.environ["CHATD_TEST_CA"])
    tenant = {"tenant-id": os.environ["CHATD_TEST_TENANT"].encode()}
    with Instance(["--tls-client-ca", f"{tls}/ca.pem"]) as instance:

        async def run() -> None:
            host, _ = address()
            certified = Client(
                host, instance.port, ca=CA, certificate=f"{tls}/client.pem", key=f"{tls}/client.key", metadata=tenant
            )
            async with certified:
                listed = await certified.list_threads(threads_pb2.ListThreadsRequest(learner_id=LEARNER))
                assert listed.threads
            # No certificate and no token: nobody.
            async with Client(host, instance.port, ca=CA, metadata=tenant) as anonymous:
                with pytest.raises(UnauthenticatedError):
                    await anonymous.list_threads()
            # A certificate from another CA fails the handshake: UNAVAILABLE, nothing sent.
            rogue = Client(
                host,
                instance.port,
                ca=CA,
                certificate=f"{tls}/rogue-client.pem",
                key=f"{tls}/rogue-client.key",
                metadata=tenant,
                retry=RetryPolicy(max_attempts=1),
            )
            async with rogue:
                with pytest.raises(UnavailableError):
                    await rogue.list_threads()

        asyncio.run(run())
