"""Recovery without beat: short leases that a living worker keeps renewing, a sweep that every
worker runs, and the one part of it (posting updates) that runs in one process at a time.
The same under real worker crashes: tests/test_faults.py."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
import time_machine
from sqlalchemy import select, update

from dispatcher.delivery.exclusive import exclusive
from dispatcher.delivery.leases import Leases
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.delivery.rows import claim
from dispatcher.delivery.sweeper import Sweeper
from dispatcher.incidents import lifecycle, reports
from dispatcher.incidents.lifecycle import Extras
from dispatcher.models import DeliveryStatus, IncidentIn, Severity, SubscriberIn
from dispatcher.settings import Settings
from dispatcher.store import Delivery, Update, utcnow
from dispatcher.subscribers import records


def queued_sms(pipeline: Pipeline, count: int) -> list[int]:
    """`count` SMS deliveries written and queued, their task lost."""
    for n in range(count):
        records.add(
            pipeline.store,
            pipeline.registry,
            SubscriberIn(name=f"s{n}", phone=f"+1415555{n:04d}", channels=["sms"], confirmed=True),
        )
    posted = lifecycle.open_incident(
        pipeline.store, IncidentIn(title="x", severity=Severity.MAJOR, components=["api"])
    )
    pipeline.fan_out(posted.update_id)
    pipeline.queue.jobs.clear()  # type: ignore[attr-defined]
    with pipeline.store.session() as session:
        query = select(Delivery.id).where(Delivery.channel == "sms").order_by(Delivery.id)
        return list(session.scalars(query))


def test_the_default_lease_is_seconds_not_minutes() -> None:
    assert Settings().lease_s <= 15
    assert Settings().sweep_every_s <= Settings().lease_s / 2


def test_a_living_workers_lease_is_renewed_and_a_dead_ones_runs_out(pipeline: Pipeline) -> None:
    alive, dead = queued_sms(pipeline, 2)
    assert list(claim(pipeline.store, [alive, dead], lease_s=15)) == [alive, dead]
    keeper = Leases(pipeline.store, lease_s=15)
    keeper.hold([alive])  # the worker holding `dead` was killed: nothing renews it
    try:
        with time_machine.travel(utcnow() + timedelta(seconds=10)):
            assert keeper.renew() == 1
        with time_machine.travel(utcnow() + timedelta(seconds=20)):
            assert list(claim(pipeline.store, [alive, dead], lease_s=15)) == [dead]
    finally:
        keeper.close()


def test_a_lease_is_renewed_only_while_its_row_is_being_sent(pipeline: Pipeline) -> None:
    (delivery_id,) = queued_sms(pipeline, 1)
    claim(pipeline.store, [delivery_id], lease_s=15)
    with pipeline.store.session() as session:  # recorded: sent
        session.execute(
            update(Delivery)
            .where(Delivery.id == delivery_id)
            .values(status=DeliveryStatus.SENT, lease_until=None)
        )
    keeper = Leases(pipeline.store, lease_s=15)
    with keeper.holding([delivery_id]):
        assert keeper.renew() == 0
    with pipeline.store.session() as session:
        assert session.get_one(Delivery, delivery_id).lease_until is None
    keeper.close()


def test_a_batch_holds_its_leases_while_it_sends_and_lets_go_after(pipeline: Pipeline) -> None:
    ids = queued_sms(pipeline, 3)
    seen: list[set[int]] = []
    keeper = pipeline.leases
    original = keeper.hold

    def watch(delivery_ids: object) -> None:
        original(delivery_ids)  # type: ignore[arg-type]
        seen.append(keeper.held)

    keeper.hold = watch  # type: ignore[method-assign]
    pipeline.send(ids)
    assert seen == [set(ids)]
    assert not keeper.held


def test_a_sweep_that_fails_is_logged_once_and_the_sweeper_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []

    def sweep() -> None:
        calls.append(1)
        if len(calls) <= 3:
            raise ConnectionError("database restarting")

    sweeper = Sweeper(sweep, every_s=60)
    with caplog.at_level(logging.INFO, logger="dispatcher.delivery.sweeper"):
        assert [sweeper.run_once() for _ in range(4)] == [False, False, False, True]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "database restarting" in caplog.text
    assert any("succeed again after 3 failed" in r.getMessage() for r in caplog.records)


def test_one_sweep_at_a_time_posts_what_is_due(pipeline: Pipeline, settings: Settings) -> None:
    """Every worker sweeps; a promised update that is overdue gets one holding update, not one
    per worker that noticed at the same moment."""
    with pipeline.store.session() as session:
        posted = lifecycle.create(
            session,
            IncidentIn(title="x", severity=Severity.MAJOR, components=["api"]),
            extras=Extras(next_update_at=utcnow() - timedelta(minutes=1)),
        )
        session.execute(update(Update).values(reminded_at=utcnow()))
    other = Pipeline(settings)
    try:
        with exclusive(other.store, "sweep") as held:
            assert held
            pipeline.sweep(stale_s=0)  # another worker is sweeping: this one posts nothing
            _, updates = reports.incident(pipeline.store, posted.incident_id)
            assert len(updates) == 1
        pipeline.sweep(stale_s=0)
        _, updates = reports.incident(pipeline.store, posted.incident_id)
        assert len(updates) == 2, "the holding update, once"
    finally:
        other.close()


def test_the_sweep_lock_is_held_by_one_at_a_time(pipeline: Pipeline, settings: Settings) -> None:
    other = Pipeline(settings)
    try:
        with exclusive(pipeline.store, "sweep") as first, exclusive(other.store, "sweep") as second:
            assert (first, second) == (True, False)
        with exclusive(other.store, "sweep") as again:
            assert again, "released when its holder's block ended"
    finally:
        other.close()
