"""`outage incident show --follow` ends by itself: when nothing is in flight, when what is left
is not due soon, or when nothing moves (nothing is running to send it). The clock is frozen and
moved by the polls' pause, never slept on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from dispatcher.cli.progress import STALL_S, follow_progress
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents import lifecycle, reports
from dispatcher.incidents.lifecycle import Posted
from dispatcher.models import IncidentIn, Severity, SubscriberIn
from dispatcher.subscribers import records

NOW = datetime(2030, 5, 20, 10, 0, tzinfo=UTC)
pytestmark = pytest.mark.time_machine(NOW, tick=False)


def subscribe_and_open(pipeline: Pipeline, **fields: object) -> Posted:
    records.add(
        pipeline.store,
        pipeline.registry,
        SubscriberIn.model_validate(
            {"name": "a", "email": "a@example.org", "channels": ["email"], "confirmed": True}
            | fields
        ),
    )
    return lifecycle.open_incident(
        pipeline.store,
        IncidentIn(title="Search is slow", severity=Severity.MINOR, components=["search"]),
    )


def never(_: float) -> None:
    raise AssertionError("it went on following what is not due soon")


def test_follow_ends_when_what_is_left_waits_for_later(pipeline: Pipeline) -> None:
    posted = subscribe_and_open(pipeline, quiet_start="09:00", quiet_end="12:00")
    pipeline.announce(posted.update_id, wait_s=0)  # the public post goes; the email waits 2 h
    stopped = follow_progress(pipeline, posted.incident_id, pause=never)
    assert stopped == "nothing more is due in the next 30 s"
    [held] = reports.waiting(pipeline.store, posted.incident_id)
    assert (held.count, held.reason) == (1, "quiet_hours")


def test_follow_ends_when_nothing_sends_what_is_due(
    pipeline: Pipeline, time_machine: time_machine.TimeMachineFixture
) -> None:
    posted = subscribe_and_open(pipeline)
    pipeline.fan_out(posted.update_id)  # due now, and nothing runs to send it
    waited: list[float] = []

    def time_passes(seconds: float) -> None:
        assert sum(waited) < 10 * STALL_S, "it never stopped"
        waited.append(seconds)
        time_machine.shift(timedelta(seconds=seconds))

    stopped = follow_progress(pipeline, posted.incident_id, pause=time_passes)
    assert stopped == "nothing has moved for 30 s"
    assert sum(waited) == pytest.approx(STALL_S)
