"""The claim's bookkeeping in send_batch: which reclaims and retries count as possibly sent
twice, that every provider request is counted, and when a batch's retries come back. (The same
under real worker crashes: tests/test_faults.py.)"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from sqlalchemy import func, select, update

from dispatcher.delivery import operations
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.delivery.rows import claim, mark_in_flight
from dispatcher.incidents import lifecycle
from dispatcher.models import DeliveryStatus, IncidentIn, Severity, SubscriberIn
from dispatcher.sandbox.server import Sandbox
from dispatcher.settings import Settings
from dispatcher.store import Delivery, utcnow
from dispatcher.subscribers import records


def queued_email(pipeline: Pipeline, count: int = 1) -> list[int]:
    for n in range(count):
        records.add(
            pipeline.store,
            pipeline.registry,
            SubscriberIn(
                name=f"s{n}", email=f"s{n}@example.org", channels=["email"], confirmed=True
            ),
        )
    posted = lifecycle.open_incident(
        pipeline.store, IncidentIn(title="x", severity=Severity.MINOR, components=["api"])
    )
    pipeline.fan_out(posted.update_id)
    pipeline.queue.jobs.clear()  # type: ignore[attr-defined]  # the worker holding them died
    with pipeline.store.session() as session:
        return list(session.scalars(select(Delivery.id).where(Delivery.channel == "email")))


def vanished_worker(pipeline: Pipeline, ids: list[int], *, handed_over: bool) -> None:
    """As a worker leaves them when killed: claimed, lease run out, maybe already sent."""
    past = utcnow() - timedelta(seconds=1)
    with pipeline.store.session() as session:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids))
            .values(
                status=DeliveryStatus.SENDING,
                sends=1,
                lease_until=past,
                in_flight_since=past if handed_over else None,
            )
        )


def test_a_reclaimed_delivery_counts_as_unknown_only_if_it_had_gone_to_the_provider(
    pipeline: Pipeline, sandbox: Sandbox
) -> None:
    handed, never_sent = queued_email(pipeline, 2)
    vanished_worker(pipeline, [handed], handed_over=True)
    vanished_worker(pipeline, [never_sent], handed_over=False)

    assert pipeline.sweep(stale_s=60).deliveries == 2
    pipeline.drain()
    pipeline.send([handed, never_sent])  # a late duplicate of the lost task: nothing more

    with pipeline.store.session() as session:
        rows = {row.id: row for row in session.scalars(select(Delivery))}
    assert rows[handed].lease_expiries == 1 and rows[never_sent].lease_expiries == 0
    assert {rows[handed].status, rows[never_sent].status} == {DeliveryStatus.SENT}
    assert rows[handed].in_flight_since is None
    assert operations.stats(pipeline.store).lease_expiries == 1
    assert len(sandbox.messages("email")) == 2


def test_a_batchs_retries_come_back_when_the_last_of_them_is_due(
    settings: Settings, sandbox: Sandbox
) -> None:
    """A task sooner than a row's due time would find it not yet due and leave it to the
    sweep, tens of seconds later; so the batch's retry waits for its latest row."""
    slow = settings.model_copy(
        update={"delivery_backoff_s": 10.0, "delivery_backoff_max_s": 60.0, "send_attempts": 1}
    )
    pipeline = Pipeline(slow)
    try:
        ids = queued_email(pipeline, 3)
        sandbox.inject_failures(3, "503", channel="email")  # one per message: each differs

        result = pipeline.send(ids)

        assert sorted(result.retries) == sorted(ids)
        with pipeline.store.session() as session:
            latest = max(session.scalars(select(Delivery.due_at).where(Delivery.id.in_(ids))))
        assert result.retry_in_s is not None
        assert utcnow() + timedelta(seconds=result.retry_in_s) >= latest - timedelta(seconds=0.5)
    finally:
        pipeline.close()


def sms_row(pipeline: Pipeline, delivery_id: int) -> Delivery:
    with pipeline.store.session() as session:
        return session.get_one(Delivery, delivery_id)


def queued_sms(pipeline: Pipeline, count: int = 1) -> list[int]:
    for n in range(count):
        records.add(
            pipeline.store,
            pipeline.registry,
            SubscriberIn(name=f"p{n}", phone=f"+1415555{n:04d}", channels=["sms"], confirmed=True),
        )
    posted = lifecycle.open_incident(
        pipeline.store, IncidentIn(title="x", severity=Severity.MAJOR, components=["api"])
    )
    pipeline.fan_out(posted.update_id)
    pipeline.queue.jobs.clear()  # type: ignore[attr-defined]
    with pipeline.store.session() as session:
        return list(
            session.scalars(
                select(Delivery.id).where(Delivery.channel == "sms").order_by(Delivery.id)
            )
        )


def test_a_retry_after_a_5xx_inside_the_send_counts_as_possibly_sent_twice(
    pipeline: Pipeline, sandbox: Sandbox
) -> None:
    """A 500 leaves it unknown whether Twilio took the text: the retry may deliver it twice. A
    429 says it did not: its retry is no duplicate. Every request is counted."""
    doubted, refused = queued_sms(pipeline, 2)
    sandbox.inject_failures(1, "500", channel="sms")
    pipeline.send([doubted])
    sandbox.inject_failures(1, "429", channel="sms")
    pipeline.send([refused])

    first, second = sms_row(pipeline, doubted), sms_row(pipeline, refused)
    assert (first.status, first.attempts, first.ambiguous_retries) == (DeliveryStatus.SENT, 2, 1)
    assert (second.status, second.attempts, second.ambiguous_retries) == (
        DeliveryStatus.SENT,
        2,
        0,
    )
    figures = operations.stats(pipeline.store)
    assert figures.possibly_sent_twice == 1
    assert figures.provider_requests == sandbox.stats()["requests"]["sms"] == 4


def test_a_retry_through_the_queue_after_an_unclear_answer_counts_too(
    settings: Settings, sandbox: Sandbox
) -> None:
    once = Pipeline(settings.model_copy(update={"send_attempts": 1}))
    try:
        (delivery_id,) = queued_sms(once, 1)
        sandbox.inject_failures(1, "503", channel="sms")
        once.send([delivery_id])
        assert sms_row(once, delivery_id).status is DeliveryStatus.QUEUED
        once.send([delivery_id])  # the retry, when due (no backoff in tests)

        row = sms_row(once, delivery_id)
        assert (row.status, row.sends, row.attempts) == (DeliveryStatus.SENT, 2, 2)
        assert row.ambiguous_retries == 1 and row.in_flight_since is None
        assert operations.stats(once.store).possibly_sent_twice == 1
    finally:
        once.close()


def test_requests_a_dead_worker_made_are_counted_and_what_it_held_back_is_not(
    pipeline: Pipeline, sandbox: Sandbox
) -> None:
    """Killed after handing one message to the provider and before recording it: its request
    counts in provider_requests, the reclaim counts it possibly sent twice; the message it had
    not handed over yet counts neither."""
    handed, waiting = queued_sms(pipeline, 2)
    claims = claim(pipeline.store, [handed, waiting], lease_s=15)
    assert mark_in_flight(pipeline.store, {handed: claims[handed]}) == {handed}  # and it dies
    with pipeline.store.session() as session:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_([handed, waiting]))
            .values(lease_until=utcnow() - timedelta(seconds=1))
        )
    pipeline.sweep(stale_s=60)
    pipeline.drain()

    rows = {i: sms_row(pipeline, i) for i in (handed, waiting)}
    assert {row.status for row in rows.values()} == {DeliveryStatus.SENT}
    assert (rows[handed].attempts, rows[handed].lease_expiries) == (2, 1)
    assert (rows[waiting].attempts, rows[waiting].lease_expiries) == (1, 0)
    assert operations.stats(pipeline.store).provider_requests == 3


def test_no_more_is_marked_in_flight_than_the_adapter_has_on_its_way(
    settings: Settings, sandbox: Sandbox
) -> None:
    """Two requests in flight at most: what a crash would count as possibly sent twice is the
    two on their way, not the whole burst the rate bucket granted."""
    narrow = Pipeline(settings.model_copy(update={"send_concurrency": 2}))
    try:
        ids = queued_sms(narrow, 5)
        sandbox.set_latency(300)
        sending = threading.Thread(target=narrow.send, args=(ids,))
        sending.start()
        deadline = time.monotonic() + 10
        while sandbox.stats()["in_flight"] < 2:  # bounded poll: the first two are out
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with narrow.store.session() as session:
            marked = session.scalar(
                select(func.count()).where(Delivery.in_flight_since.is_not(None))
            )
        sending.join()
        assert marked == 2
        assert {sms_row(narrow, i).status for i in ids} == {DeliveryStatus.SENT}
    finally:
        narrow.close()


def test_a_worker_whose_lease_ran_out_sends_nothing_another_has_taken_back(
    pipeline: Pipeline, sandbox: Sandbox
) -> None:
    """The database was away, the holder could not renew its lease, another worker took the
    rows back: when the first goes on, it may not send them (sent by both, they would be
    duplicates nobody counted)."""
    (delivery_id,) = queued_sms(pipeline, 1)
    first = claim(pipeline.store, [delivery_id], lease_s=15)
    with pipeline.store.session() as session:  # its lease ran out unrenewed
        session.execute(update(Delivery).values(lease_until=utcnow() - timedelta(seconds=1)))
    second = claim(pipeline.store, [delivery_id], lease_s=15)
    assert second and second != first, "taken back: a new fencing token"

    assert mark_in_flight(pipeline.store, first) == set(), "the first holder may not send it"
    assert mark_in_flight(pipeline.store, second) == {delivery_id}
