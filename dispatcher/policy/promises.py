"""Keeping promises: updates the clock asks for, posted by the sweep.

- When an update promised the next one by a time and it is about to pass, the team is reminded
  (an internal update) `reminder_lead_s` ahead; if it passes with no update and holding updates
  are on, a holding update goes out ("we are still working on this, next update in …") with a
  new promise of the same interval, so customers are never left wondering.
- Planned maintenance is announced when scheduled, reminded `maintenance_notices_s` ahead, and
  announced again when it starts and when it ends; after a reschedule, for the new window
  (dispatcher/incidents/maintenance.py).

Every such update is posted once: a milestone is unique per incident, and a reminder marks the
update it reminds of.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dispatcher.incidents import lifecycle, maintenance
from dispatcher.incidents.lifecycle import Extras
from dispatcher.models import Audience, IncidentState
from dispatcher.settings import Settings
from dispatcher.store import Incident, Store, Update, utcnow


def due_updates(store: Store, settings: Settings) -> list[int]:
    """Post what the clock asks for now; the ids to fan out."""
    now = utcnow()
    return [*_promises(store, settings, now), *_maintenance(store, settings, now)]


def clock(moment: datetime) -> str:
    return moment.strftime("%H:%M UTC")


def _promises(store: Store, settings: Settings, now: datetime) -> list[int]:
    posted: list[int] = []
    with store.session() as session:
        for incident, promise in _latest_promises(session):
            deadline = promise.next_update_at
            assert deadline is not None  # selected for having one
            if settings.holding_updates and now >= deadline:
                interval = deadline - promise.created_at
                message = (
                    "We are still working on this and have nothing new to report yet. "
                    f"Next update in {_minutes(interval)}."
                )
                extras = Extras(next_update_at=now + interval)
                posted.append(
                    lifecycle.add_update(
                        session, incident, incident.state, message, extras
                    ).update_id
                )
            elif promise.reminded_at is None and now >= deadline - timedelta(
                seconds=settings.reminder_lead_s
            ):
                promise.reminded_at = now
                message = (
                    f"Reminder: an update on #{incident.id} '{incident.title}' was promised for "
                    f"{clock(deadline)}. Post one with `outage incident update {incident.id}`."
                )
                posted.append(
                    lifecycle.add_update(
                        session, incident, incident.state, message, audience=Audience.INTERNAL
                    ).update_id
                )
    return posted


def _latest_promises(session: Session) -> list[tuple[Incident, Update]]:
    """Open, published incidents whose latest public update promised the next one."""
    latest = (
        select(Update.incident_id, func.max(Update.id).label("update_id"))
        .where(Update.audience == Audience.EVERYONE)
        .group_by(Update.incident_id)
        .subquery()
    )
    rows = session.execute(
        select(Incident, Update)
        .join(latest, latest.c.incident_id == Incident.id)
        .join(Update, Update.id == latest.c.update_id)
        .where(
            Incident.resolved_at.is_(None),
            Incident.draft.is_(False),
            Incident.state != IncidentState.SCHEDULED,
            Update.next_update_at.is_not(None),
        )
    ).all()
    return [(incident, update) for incident, update in rows]


def _maintenance(store: Store, settings: Settings, now: datetime) -> list[int]:
    posted: list[int] = []
    with store.session() as session:
        windows = session.scalars(
            select(Incident).where(
                Incident.state == IncidentState.SCHEDULED, Incident.resolved_at.is_(None)
            )
        ).all()
        for incident in windows:
            assert incident.ends_at is not None  # scheduled maintenance always has an end
            revision, announced_at = maintenance.window_revision(session, incident)
            due, message = _maintenance_milestone(incident, settings, now, announced_at or now)
            if due is None:
                continue
            try:
                with session.begin_nested():
                    if due == "completed":  # closing it takes it out of this query
                        posted.append(lifecycle.close(session, incident, message).update_id)
                    else:
                        posted.append(
                            lifecycle.add_update(
                                session,
                                incident,
                                IncidentState.SCHEDULED,
                                message,
                                milestone=maintenance.milestone(due, revision),
                            ).update_id
                        )
            except IntegrityError:
                continue  # already posted (by this sweep earlier, or another worker's)
    return posted


def _maintenance_milestone(
    incident: Incident, settings: Settings, now: datetime, announced_at: datetime
) -> tuple[str | None, str]:
    """The notice due now, if any: the latest of those whose time has come, skipping those
    whose time had already come when the window was (re)announced (the announcement said it)."""
    assert incident.ends_at is not None
    if now >= incident.ends_at:
        return "completed", "The planned maintenance is complete. Thank you for your patience."
    if now >= incident.started_at:
        if announced_at >= incident.started_at:
            return None, ""
        return (
            "started",
            f"The planned maintenance has started; it ends by {clock(incident.ends_at)}.",
        )
    for lead in sorted(settings.maintenance_notices_s):
        notice_at = incident.started_at - timedelta(seconds=lead)
        if announced_at < notice_at <= now:
            return f"notice-{int(lead)}", (
                f"Reminder: planned maintenance starts at {clock(incident.started_at)} "
                f"and ends by {clock(incident.ends_at)}."
            )
    return None, ""


def _minutes(interval: timedelta) -> str:
    minutes = max(1, round(interval.total_seconds() / 60))
    return f"{minutes} minutes" if minutes < 120 else f"{round(minutes / 60)} hours"
