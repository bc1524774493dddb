"""Planned maintenance keeps to its own lifecycle: announced with its whole window, moved or
called off once to those who were told of it, never turned into an incident by an update.

The clock is frozen at NOW and moved with the `time_machine` fixture, never slept on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from sqlalchemy import select

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents import lifecycle, maintenance, public, reports
from dispatcher.models import (
    DeliveryStatus,
    IncidentState,
    MaintenanceIn,
    Severity,
    SubscriberIn,
    WindowIn,
)
from dispatcher.sandbox.server import Sandbox
from dispatcher.store import Delivery, Update
from dispatcher.subscribers import records

NOW = datetime(2030, 5, 20, 10, 0, tzinfo=UTC)  # a Monday
START = datetime(2030, 5, 21, 2, 0, tzinfo=UTC)
pytestmark = pytest.mark.time_machine(NOW, tick=False)


def add(pipeline: Pipeline, name: str, **fields: object) -> None:
    records.add(
        pipeline.store,
        pipeline.registry,
        SubscriberIn.model_validate(
            {"name": name, "email": f"{name}@example.org", "channels": ["email"]}
            | {"confirmed": True, **fields}
        ),
    )


def inbox(sandbox: Sandbox, name: str) -> list[str]:
    return [m["body"] for m in sandbox.messages("email") if m["to"] == f"{name}@example.org"]


def schedule(pipeline: Pipeline, start: datetime = START, hours: float = 2) -> int:
    posted = maintenance.schedule(
        pipeline.store,
        MaintenanceIn(
            title="Database upgrade",
            severity=Severity.MINOR,
            components=["payments"],
            starts_at=start,
            ends_at=start + timedelta(hours=hours),
            message="Payments pause for up to 10 minutes.",
        ),
    )
    pipeline.announce(posted.update_id, wait_s=0)
    return posted.incident_id


def sweep(pipeline: Pipeline) -> None:
    pipeline.sweep(stale_s=0)
    pipeline.drain()


def test_the_announcement_states_the_end_as_well_as_the_start(
    pipeline: Pipeline, sandbox: Sandbox
) -> None:
    add(pipeline, "ben")
    records.add(
        pipeline.store,
        pipeline.registry,
        SubscriberIn(name="ada", phone="+14155550100", channels=["sms"], confirmed=True),
    )
    schedule(pipeline)
    window = "Tue 21 May 02:00-04:00 UTC"
    [email] = inbox(sandbox, "ben")
    [sms] = [m["body"] for m in sandbox.messages("sms")]
    [post] = [m["body"] for m in sandbox.messages("social")]
    for text in (email, sms, post):
        assert window in text


def test_an_incident_update_never_turns_a_maintenance_into_an_incident(
    pipeline: Pipeline, sandbox: Sandbox
) -> None:
    add(pipeline, "ben")
    maintenance_id = schedule(pipeline)
    with pytest.raises(lifecycle.IncidentError, match="is a planned maintenance"):
        lifecycle.post_update(pipeline.store, maintenance_id, IncidentState.IDENTIFIED, "Fixed")
    with pytest.raises(lifecycle.IncidentError, match="has not started; cancel it"):
        lifecycle.resolve(pipeline.store, maintenance_id, "done")
    found, updates = reports.incident(pipeline.store, maintenance_id)
    assert found.state is IncidentState.SCHEDULED and len(updates) == 1
    assert len(inbox(sandbox, "ben")) == 1


def test_a_cancellation_reaches_those_who_were_told_once_and_nobody_else(
    pipeline: Pipeline, sandbox: Sandbox, time_machine: time_machine.TimeMachineFixture
) -> None:
    add(pipeline, "told")
    add(pipeline, "team", internal=True)
    add(pipeline, "asleep", quiet_start="09:00", quiet_end="11:00")  # it is 10:00 UTC
    maintenance_id = schedule(pipeline)
    add(pipeline, "late")  # subscribed after the announcement
    assert len(inbox(sandbox, "told")) == 1 and inbox(sandbox, "asleep") == []

    posted = maintenance.cancel(pipeline.store, maintenance_id, "We will announce a new date.")
    pipeline.announce(posted.update_id, wait_s=0)
    with pytest.raises(lifecycle.IncidentError, match="was cancelled"):
        maintenance.cancel(pipeline.store, maintenance_id, None)

    for name in ("told", "team"):
        [_, cancelled] = inbox(sandbox, name)
        assert "Tue 21 May 02:00-04:00 UTC, is cancelled" in cancelled
        assert "We will announce a new date." in cancelled
    [_, post] = [m["body"] for m in sandbox.messages("social")]
    assert post.startswith("Cancelled: the planned maintenance on payments")
    time_machine.shift(timedelta(hours=2))  # the quiet hours are over
    sweep(pipeline)
    assert inbox(sandbox, "late") == [] and inbox(sandbox, "asleep") == [], (
        "nobody who never heard of it hears of it now"
    )
    with pipeline.store.session() as session:
        withdrawn = session.scalars(
            select(Delivery.status).where(Delivery.status == DeliveryStatus.SUPERSEDED)
        ).all()
    assert len(withdrawn) == 1, "the announcement still waiting is withdrawn"

    time_machine.shift(timedelta(days=2))  # past the window: no notice of it is sent
    sweep(pipeline)
    assert len(inbox(sandbox, "told")) == 2
    found = public.incident(pipeline.store, maintenance_id)
    assert found is not None and found.state is IncidentState.CANCELLED
    assert not found.is_open and found.is_maintenance


def test_a_reschedule_tells_those_told_and_the_notices_follow_the_new_window(
    pipeline: Pipeline, sandbox: Sandbox, time_machine: time_machine.TimeMachineFixture
) -> None:
    add(pipeline, "told")
    maintenance_id = schedule(pipeline)
    add(pipeline, "late")
    later, moved_end = START + timedelta(days=1), START + timedelta(days=1, hours=1)
    posted = maintenance.reschedule(
        pipeline.store, maintenance_id, WindowIn(starts_at=later, ends_at=moved_end)
    )
    pipeline.announce(posted.update_id, wait_s=0)
    [_, moved] = inbox(sandbox, "told")
    assert "Wed 22 May 02:00-03:00 UTC" in moved and "rescheduled" in moved
    assert inbox(sandbox, "late") == [], "only those who were told of it"
    with pytest.raises(lifecycle.IncidentError, match="already planned for that window"):
        maintenance.reschedule(
            pipeline.store, maintenance_id, WindowIn(starts_at=later, ends_at=moved_end)
        )

    # The old window's day-before reminder (due at 02:00 on the 20th) had passed when it was
    # moved; the new window's notices come in turn, each once.
    for hours in (16.5, 23, 0.75, 1):  # the day before, the hour before, started, over
        time_machine.shift(timedelta(hours=hours))
        sweep(pipeline)
        sweep(pipeline)
    _, updates = reports.incident(pipeline.store, maintenance_id)
    assert [u.milestone for u in updates] == [
        "announced",
        "rescheduled-1",
        "notice-86400@1",
        "notice-3600@1",
        "started@1",
        None,
    ]
    assert len(inbox(sandbox, "told")) == 6
    assert "complete" in inbox(sandbox, "told")[-1]


def test_a_running_maintenance_can_be_given_a_later_end_without_a_second_start(
    pipeline: Pipeline, sandbox: Sandbox, time_machine: time_machine.TimeMachineFixture
) -> None:
    add(pipeline, "told")
    maintenance_id = schedule(pipeline, start=NOW - timedelta(minutes=30), hours=1)
    sweep(pipeline)  # started before it was announced: the announcement said so
    with pytest.raises(lifecycle.IncidentError, match="has started; to end it early"):
        maintenance.cancel(pipeline.store, maintenance_id, None)
    posted = maintenance.reschedule(
        pipeline.store,
        maintenance_id,
        WindowIn(starts_at=NOW - timedelta(minutes=30), ends_at=NOW + timedelta(hours=2)),
    )
    pipeline.announce(posted.update_id, wait_s=0)
    sweep(pipeline)
    time_machine.shift(timedelta(hours=3))
    sweep(pipeline)
    with pipeline.store.session() as session:
        milestones = session.scalars(
            select(Update.milestone).where(Update.incident_id == maintenance_id).order_by(Update.id)
        ).all()
    assert milestones == ["announced", "rescheduled-1", None]
    assert not any("has started" in body for body in inbox(sandbox, "told"))
    assert "complete" in inbox(sandbox, "told")[-1]


def test_maintenance_is_listed_soonest_first(pipeline: Pipeline) -> None:
    later = schedule(pipeline, start=START + timedelta(days=3))
    sooner = schedule(pipeline, start=START)
    maintenance.cancel(pipeline.store, later, None)
    assert [m.id for m in maintenance.listed(pipeline.store)] == [sooner]
    assert [m.id for m in maintenance.listed(pipeline.store, everything=True)] == [sooner, later]
