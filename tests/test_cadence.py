"""Keeping promises: reminders to the team, holding updates, maintenance notices and the
post-incident review, as the sweep posts them. Time is moved by editing the rows' timestamps,
never by sleeping."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents import lifecycle, maintenance, reports
from dispatcher.incidents.lifecycle import Extras
from dispatcher.models import IncidentIn, MaintenanceIn, Severity, SubscriberIn
from dispatcher.sandbox.server import Sandbox
from dispatcher.store import Incident, Update, utcnow
from dispatcher.subscribers import records

INCIDENT = IncidentIn(title="Payments fail", severity=Severity.MAJOR, components=["payments"])


def window(start: datetime, end: datetime) -> MaintenanceIn:
    return MaintenanceIn(
        title="Payments upgrade",
        severity=Severity.MAJOR,
        components=["payments"],
        starts_at=start,
        ends_at=end,
    )


@pytest.fixture
def people(pipeline: Pipeline) -> Pipeline:
    for name, internal in (("team", True), ("customer", False)):
        records.add(
            pipeline.store,
            pipeline.registry,
            SubscriberIn(
                name=name,
                email=f"{name}@example.org",
                channels=["email"],
                confirmed=True,
                internal=internal,
            ),
        )
    return pipeline


def sweep(pipeline: Pipeline) -> None:
    pipeline.sweep(stale_s=0)
    pipeline.drain()


def inbox(sandbox: Sandbox, name: str) -> list[str]:
    return [m["body"] for m in sandbox.messages("email") if m["to"] == f"{name}@example.org"]


def open_with_promise(pipeline: Pipeline, in_minutes: float) -> int:
    with pipeline.store.session() as session:
        posted = lifecycle.create(
            session,
            INCIDENT,
            extras=Extras(next_update_at=utcnow() + timedelta(minutes=in_minutes)),
        )
    pipeline.announce(posted.update_id, wait_s=0)
    return posted.incident_id


def test_the_team_is_reminded_of_a_promise_once(people: Pipeline, sandbox: Sandbox) -> None:
    incident_id = open_with_promise(people, in_minutes=2)  # within the 5-minute reminder lead
    sweep(people)
    sweep(people)
    assert len(inbox(sandbox, "team")) == 2
    assert "Reminder" in inbox(sandbox, "team")[1]
    assert len(inbox(sandbox, "customer")) == 1, "customers never see the reminder"
    _, updates = reports.incident(people.store, incident_id)
    assert [u.audience for u in updates] == ["everyone", "internal"]


def test_a_missed_promise_gets_a_holding_update(people: Pipeline, sandbox: Sandbox) -> None:
    incident_id = open_with_promise(people, in_minutes=30)
    with people.store.session() as session:  # 31 minutes later, nothing posted
        for row in session.scalars(select(Update)):
            assert row.next_update_at is not None
            row.created_at -= timedelta(minutes=31)
            row.next_update_at -= timedelta(minutes=31)
            row.reminded_at = utcnow()
    sweep(people)
    sweep(people)
    holding = inbox(sandbox, "customer")
    assert len(holding) == 2
    assert "still working on this" in holding[1]
    _, updates = reports.incident(people.store, incident_id)
    assert updates[-1].next_update_at is not None
    assert timedelta(minutes=29) < updates[-1].next_update_at - utcnow() <= timedelta(minutes=30)


def test_maintenance_is_announced_reminded_started_and_completed(
    people: Pipeline, sandbox: Sandbox
) -> None:
    start, end = utcnow() + timedelta(hours=3), utcnow() + timedelta(hours=4)
    posted = maintenance.schedule(people.store, window(start, end))
    people.announce(posted.update_id, wait_s=0)
    sweep(people)
    assert len(inbox(sandbox, "customer")) == 1, "no reminder due yet"

    def shift(hours: float) -> None:
        """Let `hours` pass: everything recorded so far moves that far into the past."""
        with people.store.session() as session:
            window = session.get_one(Incident, posted.incident_id)
            assert window.ends_at is not None
            window.started_at -= timedelta(hours=hours)
            window.ends_at -= timedelta(hours=hours)
            for row in session.scalars(select(Update)):
                row.created_at -= timedelta(hours=hours)

    shift(2.5)  # starts in 30 minutes: the one-hour reminder
    sweep(people)
    shift(1)  # started 30 minutes ago
    sweep(people)
    shift(1)  # ended 30 minutes ago
    sweep(people)
    sweep(people)

    found, updates = reports.incident(people.store, posted.incident_id)
    assert [u.milestone for u in updates] == ["announced", "notice-3600", "started", None]
    assert found.state == "resolved"
    assert len(inbox(sandbox, "customer")) == 4
    assert "complete" in inbox(sandbox, "customer")[-1]


def test_an_impossible_window_is_refused() -> None:
    soon = utcnow() + timedelta(hours=1)
    with pytest.raises(ValidationError, match="ends_at"):
        window(soon, soon)
    with pytest.raises(ValidationError, match="already over"):
        window(utcnow() - timedelta(hours=2), utcnow() - timedelta(hours=1))


def test_the_review_goes_to_those_who_were_told_once(people: Pipeline, sandbox: Sandbox) -> None:
    incident_id = open_with_promise(people, in_minutes=60)
    with pytest.raises(lifecycle.IncidentError, match="still open"):
        lifecycle.postmortem(people.store, incident_id, "https://example.org/review")
    people.announce(lifecycle.resolve(people.store, incident_id, "fixed").update_id, wait_s=0)
    records.add(  # subscribed after it was over: was never told of it
        people.store,
        people.registry,
        SubscriberIn(name="late", email="late@example.org", channels=["email"], confirmed=True),
    )
    posted = lifecycle.postmortem(people.store, incident_id, "https://example.org/review")
    people.announce(posted.update_id, wait_s=0)
    assert "https://example.org/review" in inbox(sandbox, "customer")[-1]
    review = [m for m in sandbox.messages("email") if m["to"] == "customer@example.org"][-1]
    assert review["subject"] == "[Post-incident review] Payments fail \u2014 Example Cloud"
    assert "Resolved" not in review["body"]
    assert all("example.org/review" not in body for body in inbox(sandbox, "late"))
    assert all("example.org/review" not in m["body"] for m in sandbox.messages("social"))
    with pytest.raises(lifecycle.IncidentError, match="already sent"):
        lifecycle.postmortem(people.store, incident_id, "https://example.org/review")
    with people.store.session() as session:
        milestones = session.scalars(select(Update.milestone)).all()
    assert milestones.count("postmortem") == 1


def test_a_resolution_carries_the_credit_note_apart_and_the_survey_but_not_in_public(
    people: Pipeline, sandbox: Sandbox
) -> None:
    people.settings.feedback_url = "https://example.org/survey"
    incident_id = open_with_promise(people, in_minutes=60)
    credit = "Affected accounts get a 10% credit on this month's invoice."
    extras = Extras(credit_note=credit)
    people.announce(
        lifecycle.resolve(people.store, incident_id, "Fixed.", extras).update_id, wait_s=0
    )
    body = inbox(sandbox, "customer")[-1]
    assert f"What happened: Fixed.\n\n{credit}\n\n" in body
    assert "Tell us how we handled this: https://example.org/survey" in body
    public = sandbox.messages("social")[-1]["body"]
    assert "Fixed." in public
    assert "credit" not in public
    assert "survey" not in public
