"""The claim's bookkeeping in send_batch: which reclaims count as unknown outcomes, and when a
batch's retries come back. (The same under real worker crashes: tests/test_faults.py.)"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from dispatcher.delivery import operations
from dispatcher.delivery.pipeline import Pipeline
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
