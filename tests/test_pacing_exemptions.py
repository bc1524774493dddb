"""What pacing never holds, with the default coalescing window: a resolution, the team, and a
person who has not been told anything yet (the window counts from what was really sent)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents import lifecycle, reports
from dispatcher.models import IncidentIn, IncidentState, Severity, SubscriberIn
from dispatcher.sandbox.server import Sandbox
from dispatcher.settings import Settings
from dispatcher.subscribers import records

DEFAULT_WINDOW_S = Settings.model_fields["coalesce_window_s"].default


@pytest.fixture
def defaults(settings: Settings) -> Iterator[Pipeline]:
    """The test pipeline with the shipped coalescing window and hourly cap (the shared fixture
    turns the window off)."""
    assert DEFAULT_WINDOW_S > 0
    running = Pipeline(
        settings.model_copy(
            update={
                "coalesce_window_s": DEFAULT_WINDOW_S,
                "delivery_backoff_s": 300,
                "delivery_backoff_max_s": 300,
            }
        )
    )
    yield running
    running.close()


def add(pipeline: Pipeline, name: str, **fields: object) -> None:
    data = SubscriberIn.model_validate({"name": name, "confirmed": True, **fields})
    records.add(pipeline.store, pipeline.registry, data)


def told(pipeline: Pipeline, incident_id: int, who: str) -> list[tuple[str, str]]:
    return [
        (line.update_state, line.status)
        for line in reports.deliveries(pipeline.store, incident_id)
        if line.subscriber == who
    ]


def open_incident(pipeline: Pipeline) -> int:
    data = IncidentIn(title="Search is down", severity=Severity.MAJOR, components=["search"])
    posted = lifecycle.open_incident(pipeline.store, data)
    pipeline.announce(posted.update_id, wait_s=0)
    return posted.incident_id


def test_a_resolution_seconds_after_the_opening_goes_at_once(
    defaults: Pipeline, sandbox: Sandbox
) -> None:
    add(defaults, "a", phone="+14155550100", channels=["sms"])
    incident_id = open_incident(defaults)
    resolved = lifecycle.resolve(defaults.store, incident_id, "Fixed.")
    defaults.announce(resolved.update_id, wait_s=0)
    assert sorted(told(defaults, incident_id, "a")) == [
        ("investigating", "sent"),
        ("resolved", "sent"),
    ]
    assert [m["body"] for m in sandbox.messages("sms")][-1].count("Fixed.") == 1


def test_the_team_is_not_held_by_the_window_customers_are(defaults: Pipeline) -> None:
    add(defaults, "team", email="team@example.org", channels=["email"], internal=True)
    add(defaults, "customer", email="c@example.org", channels=["email"])
    incident_id = open_incident(defaults)
    posted = lifecycle.post_update(defaults.store, incident_id, IncidentState.IDENTIFIED, "x")
    defaults.announce(posted.update_id, wait_s=0)
    assert ("identified", "sent") in told(defaults, incident_id, "team")
    assert ("identified", "queued") in told(defaults, incident_id, "customer")


def test_the_window_counts_from_a_message_sent_not_one_still_queued(
    defaults: Pipeline, sandbox: Sandbox
) -> None:
    """The opening failed and waits for its retry: the next update is the first this person
    hears, so it goes at once, and the opening is dropped when its retry comes (superseded)."""
    add(defaults, "a", email="a@example.org", channels=["email"])
    sandbox.inject_failures(3, "503", channel="email")  # every try inside the first send
    incident_id = open_incident(defaults)
    assert told(defaults, incident_id, "a") == [("investigating", "queued")]
    posted = lifecycle.post_update(defaults.store, incident_id, IncidentState.IDENTIFIED, "x")
    defaults.announce(posted.update_id, wait_s=0)
    assert ("identified", "sent") in told(defaults, incident_id, "a")
