"""Never flood a person: cadence per channel, coalescing, the hourly cap and quiet hours, as
they shape who is sent what and when (read back from the delivery records and the sandbox)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents import lifecycle, reports
from dispatcher.models import IncidentIn, IncidentState, Severity, SubscriberIn
from dispatcher.sandbox.server import Sandbox
from dispatcher.settings import Settings
from dispatcher.store import Delivery, utcnow
from dispatcher.subscribers import records

# Promises are shown without their day only on the day they were made, and quiet windows are laid
# around the present: the wall clock stays at midday UTC (21:00 in Tokyo), far from any midnight.
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
pytestmark = pytest.mark.time_machine(NOW, tick=False)


@pytest.fixture
def paced(settings: Settings, request: pytest.FixtureRequest) -> Iterator[Pipeline]:
    marker = request.node.get_closest_marker("settings")
    running = Pipeline(settings.model_copy(update=marker.kwargs if marker else {}))
    yield running
    running.close()


def add(pipeline: Pipeline, **fields: object) -> None:
    data = SubscriberIn.model_validate({"confirmed": True, **fields})
    records.add(pipeline.store, pipeline.registry, data)


def announce(pipeline: Pipeline, posted: lifecycle.Posted) -> int:
    pipeline.announce(posted.update_id, wait_s=0)
    return posted.incident_id


def open_incident(pipeline: Pipeline, severity: Severity = Severity.MAJOR) -> int:
    data = IncidentIn(title="Search is down", severity=severity, components=["search"])
    return announce(pipeline, lifecycle.open_incident(pipeline.store, data))


def deliveries(pipeline: Pipeline, incident_id: int) -> list[tuple[str, str, str, str]]:
    return [
        (line.update_state, line.subscriber, line.channel, line.status)
        for line in reports.deliveries(pipeline.store, incident_id)
    ]


def due_times(pipeline: Pipeline) -> dict[int, datetime]:
    with pipeline.store.session() as session:
        return {d.id: d.due_at for d in session.query(Delivery).all()}


def test_sms_carries_opening_and_end_and_the_rest_goes_by_email(
    paced: Pipeline, sandbox: Sandbox
) -> None:
    add(paced, name="both", phone="+14155550100", email="b@example.org", channels=["sms", "email"])
    add(paced, name="sms only", phone="+14155550101", channels=["sms"])
    incident_id = open_incident(paced)
    announce(paced, lifecycle.post_update(paced.store, incident_id, IncidentState.IDENTIFIED, "x"))
    announce(paced, lifecycle.resolve(paced.store, incident_id, "fixed"))

    told = deliveries(paced, incident_id)
    assert ("identified", "both", "email", "sent") in told
    assert not [t for t in told if t[0] == "identified" and t[1] == "sms only"]
    assert [(t[0], t[2]) for t in told if t[1] == "sms only"] == [
        ("investigating", "sms"),
        ("resolved", "sms"),
    ]
    assert len(sandbox.messages("sms")) == 4


def test_the_public_post_carries_changes_of_state_only(paced: Pipeline, sandbox: Sandbox) -> None:
    incident_id = open_incident(paced)
    same = lifecycle.post_update(paced.store, incident_id, IncidentState.INVESTIGATING, "more")
    announce(paced, same)
    announce(paced, lifecycle.post_update(paced.store, incident_id, IncidentState.IDENTIFIED, "y"))
    assert [t[0] for t in deliveries(paced, incident_id) if t[2] == "social"] == [
        "investigating",
        "identified",
    ]


@pytest.mark.settings(coalesce_window_s=120)
def test_a_second_message_within_the_window_waits(paced: Pipeline, sandbox: Sandbox) -> None:
    add(paced, name="a", email="a@example.org", channels=["email"])
    incident_id = open_incident(paced)
    assert [t[3] for t in deliveries(paced, incident_id)] == ["sent", "sent"], "opening: at once"
    before = utcnow()
    announce(paced, lifecycle.post_update(paced.store, incident_id, IncidentState.IDENTIFIED, "z"))
    waiting = [t for t in deliveries(paced, incident_id) if t[0] == "identified" and t[1] == "a"]
    assert waiting == [("identified", "a", "email", "queued")]
    latest_due = max(due_times(paced).values())
    assert latest_due >= before + timedelta(seconds=110)
    assert len(sandbox.messages("email")) == 1


@pytest.mark.settings(hourly_cap=2)
def test_the_hourly_cap_holds_non_critical_but_not_critical(paced: Pipeline) -> None:
    add(paced, name="a", email="a@example.org", channels=["email"])
    first = open_incident(paced)
    second = open_incident(paced)
    third = open_incident(paced)
    critical = open_incident(paced, Severity.CRITICAL)
    assert [t[3] for t in deliveries(paced, first) if t[1] == "a"] == ["sent"]
    assert [t[3] for t in deliveries(paced, second) if t[1] == "a"] == ["sent"]
    assert [t[3] for t in deliveries(paced, third) if t[1] == "a"] == ["queued"]
    assert [t[3] for t in deliveries(paced, critical) if t[1] == "a"] == ["sent"]


def _quiet_now(zone: str) -> tuple[str, str]:
    """A quiet window around the present moment in `zone`: from an hour ago to two hours on."""
    local = NOW.astimezone(ZoneInfo(zone))
    start = (local - timedelta(hours=1)).strftime("%H:%M")
    end = (local + timedelta(hours=2)).strftime("%H:%M")
    return start, end


def test_quiet_hours_hold_non_critical_until_they_end_and_let_critical_through(
    paced: Pipeline,
) -> None:
    start, end = _quiet_now("Asia/Tokyo")
    add(
        paced,
        name="sleeper",
        email="s@example.org",
        channels=["email"],
        quiet_start=start,
        quiet_end=end,
        timezone="Asia/Tokyo",
    )
    minor = open_incident(paced, Severity.MINOR)
    critical = open_incident(paced, Severity.CRITICAL)
    assert [t[3] for t in deliveries(paced, minor) if t[1] == "sleeper"] == ["queued"]
    assert [t[3] for t in deliveries(paced, critical) if t[1] == "sleeper"] == ["sent"]
    held = [d for d in due_times(paced).values() if d > utcnow()]
    assert len(held) == 1
    assert timedelta(hours=1, minutes=55) < held[0] - utcnow() <= timedelta(hours=2)


def test_held_updates_fold_into_the_latest_state_when_quiet_hours_end(
    paced: Pipeline, sandbox: Sandbox
) -> None:
    start, end = _quiet_now("UTC")
    add(
        paced,
        name="sleeper",
        email="s@example.org",
        channels=["email"],
        quiet_start=start,
        quiet_end=end,
    )
    incident_id = open_incident(paced, Severity.MINOR)
    announce(paced, lifecycle.post_update(paced.store, incident_id, IncidentState.IDENTIFIED, "x"))
    announce(paced, lifecycle.resolve(paced.store, incident_id, "Fixed at 03:05."))
    assert sandbox.messages("email") == []

    with paced.store.session() as session:  # the quiet hours are over
        for row in session.query(Delivery).filter(Delivery.status == "queued"):
            row.due_at = utcnow() - timedelta(seconds=1)
    paced.sweep(stale_s=0)
    paced.drain()

    told = [t for t in deliveries(paced, incident_id) if t[1] == "sleeper"]
    assert told == [
        ("investigating", "sleeper", "email", "superseded"),
        ("identified", "sleeper", "email", "superseded"),
        ("resolved", "sleeper", "email", "sent"),
    ]
    [message] = sandbox.messages("email")
    assert "resolved" in message["subject"].lower()
    assert "Fixed at 03:05." in message["body"]


def test_internal_notes_and_promises(paced: Pipeline, sandbox: Sandbox) -> None:
    add(paced, name="team", email="team@example.org", channels=["email"], internal=True)
    add(paced, name="customer", email="c@example.org", channels=["email"])
    promise = utcnow() + timedelta(minutes=30)
    with paced.store.session() as session:
        posted = lifecycle.create(
            session,
            IncidentIn(title="Search is down", severity=Severity.MAJOR, components=["search"]),
            extras=lifecycle.Extras(next_update_at=promise, internal_note="DB failover at 10:02"),
        )
    announce(paced, posted)
    bodies = {m["to"]: m["body"] for m in sandbox.messages("email")}
    assert "DB failover" in bodies["team@example.org"]
    assert "DB failover" not in bodies["c@example.org"]
    assert f"Next update by {promise:%H:%M}" in bodies["c@example.org"]


def test_higher_tiers_are_queued_first_across_the_whole_audience(paced: Pipeline) -> None:
    for n in range(3):
        add(paced, name=f"regular {n}", email=f"r{n}@example.org", channels=["email"])
    add(paced, name="key account", email="k@example.org", channels=["email"], tier=5)
    incident_id = open_incident(paced)
    lines = [
        line for line in reports.deliveries(paced.store, incident_id) if line.channel == "email"
    ]
    first = min(lines, key=lambda line: line.id)
    assert first.subscriber == "key account"


def row_of(pipeline: Pipeline, update_id: int) -> Delivery:
    """The one subscriber delivery of an update (the public post aside)."""
    with pipeline.store.session() as session:
        found = session.query(Delivery).filter(
            Delivery.update_id == update_id, Delivery.recipient != "public"
        )
        (row,) = found.all()
        return row


def come_due(pipeline: Pipeline, update_id: int) -> None:
    """Time moves on until this update's delivery is due; the runner looks."""
    with pipeline.store.session() as session:
        for row in session.query(Delivery).filter(Delivery.update_id == update_id):
            row.due_at = utcnow() - timedelta(seconds=1)
    pipeline.sweep(stale_s=0)
    pipeline.drain()


def two_held_updates(pipeline: Pipeline) -> tuple[int, int]:
    """One told of an incident, then two updates held by the coalescing window; their ids."""
    add(pipeline, name="a", email="a@example.org", channels=["email"])
    incident_id = open_incident(pipeline)
    older = lifecycle.post_update(pipeline.store, incident_id, IncidentState.IDENTIFIED, "older")
    announce(pipeline, older)
    newer = lifecycle.post_update(pipeline.store, incident_id, IncidentState.MONITORING, "newer")
    announce(pipeline, newer)
    assert row_of(pipeline, older.update_id).status == "queued"
    assert row_of(pipeline, newer.update_id).status == "queued"
    return older.update_id, newer.update_id


@pytest.mark.settings(coalesce_window_s=120)
def test_an_update_is_superseded_only_once_the_newer_one_is_sent(
    paced: Pipeline, sandbox: Sandbox
) -> None:
    older, newer = two_held_updates(paced)
    come_due(paced, older)  # the newer one is still held: the older waits behind it
    waiting = row_of(paced, older)
    assert waiting.status == "queued"
    assert waiting.wait_reason == "newer_update"
    assert waiting.sends == 0, "waiting behind the newer one is not a try"
    assert waiting.due_at > row_of(paced, newer).due_at

    come_due(paced, newer)
    assert row_of(paced, newer).status == "sent"
    come_due(paced, older)
    assert row_of(paced, older).status == "superseded"
    bodies = [m["body"] for m in sandbox.messages("email")]
    assert len(bodies) == 2 and "newer" in bodies[-1] and "older" not in " ".join(bodies)


@pytest.mark.settings(coalesce_window_s=120)
def test_both_due_together_send_the_newer_and_supersede_the_older_at_once(
    paced: Pipeline, sandbox: Sandbox
) -> None:
    older, newer = two_held_updates(paced)
    with paced.store.session() as session:  # the window is over for both
        for row in session.query(Delivery).filter(Delivery.status == "queued"):
            row.due_at = utcnow() - timedelta(seconds=1)
    paced.sweep(stale_s=0)
    paced.drain()
    assert (row_of(paced, older).status, row_of(paced, newer).status) == ("superseded", "sent")


@pytest.mark.settings(coalesce_window_s=120)
def test_when_the_newer_update_fails_for_good_the_older_one_is_sent(
    paced: Pipeline, sandbox: Sandbox
) -> None:
    older, newer = two_held_updates(paced)
    come_due(paced, older)
    assert row_of(paced, older).wait_reason == "newer_update"
    sandbox.inject_recipient_failure("a@example.org")  # the provider refuses the newer one
    come_due(paced, newer)
    assert row_of(paced, newer).status == "failed"
    sandbox.clear_faults()
    come_due(paced, older)
    assert row_of(paced, older).status == "sent"
    assert "older" in sandbox.messages("email")[-1]["body"]
