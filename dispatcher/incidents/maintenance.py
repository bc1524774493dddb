"""Planned maintenance: a lifecycle of its own beside an incident's.

    scheduled ──(its end: the sweep)──> resolved        announced once, reminded ahead, its
        │  ^                                            start and end announced by the sweep
        │  └─ rescheduled (a new window)                (dispatcher/policy/promises.py)
        └──(before it starts)──> cancelled

An incident's update never applies to it (`lifecycle.post_update` refuses: it would turn the
maintenance into an incident), nor a resolve before it starts (that is a cancellation). A change
of plan goes once to those who were told of it (Audience.TOLD: the subscribers who heard, the
team, and the public post if it carried the announcement), and to nobody who never heard of it.

Each notice is posted once per window: a milestone is unique per incident, so after a
reschedule the notices of the new window carry its revision ("notice-3600", then
"notice-3600@1"), and the reminders and start whose time had already come when the window was
(re)announced are skipped, as the announcement said it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from dispatcher.audit import record
from dispatcher.incidents.lifecycle import IncidentError, Posted, add_update, is_maintenance, locked
from dispatcher.models import (
    Audience,
    DeliveryStatus,
    IncidentState,
    MaintenanceIn,
    WindowIn,
)
from dispatcher.store import Delivery, Incident, Store, Update, utcnow

ANNOUNCED = "announced"
CANCELLED = "cancelled"
RESCHEDULED = "rescheduled"  # rescheduled-1, rescheduled-2, …: one per change of window
RESCHEDULED_MESSAGE = (
    "This maintenance has been rescheduled: the time above replaces the one we gave earlier."
)
WITHDRAWN = "the maintenance was cancelled before this was sent"


def schedule(store: Store, data: MaintenanceIn) -> Posted:
    """Announce planned maintenance now to everyone it concerns."""
    with store.session() as session:
        incident = Incident(
            title=data.title,
            severity=data.severity,
            state=IncidentState.SCHEDULED,
            components=list(dict.fromkeys(data.components)),
            source="operator",
            started_at=data.starts_at,
            ends_at=data.ends_at,
        )
        session.add(incident)
        session.flush()
        record(session, "operator", "maintenance_scheduled", incident_id=incident.id)
        return add_update(
            session, incident, IncidentState.SCHEDULED, data.message, milestone=ANNOUNCED
        )


def reschedule(store: Store, maintenance_id: int, window: WindowIn) -> Posted:
    """Move a scheduled maintenance (or give a running one a later end): the new window is
    announced to those who were told of the old one, and its notices are due again."""
    with store.session() as session:
        incident = _scheduled(session, maintenance_id)
        if (incident.started_at, incident.ends_at) == (window.starts_at, window.ends_at):
            raise IncidentError(
                f"starts_at: maintenance {maintenance_id} is already planned for that window"
            )
        revision = _revision(session, maintenance_id) + 1
        assert incident.ends_at is not None  # a maintenance always has an end
        record(
            session,
            "operator",
            "maintenance_rescheduled",
            incident_id=maintenance_id,
            starts_at=window.starts_at.isoformat(),
            ends_at=window.ends_at.isoformat(),
            was=[incident.started_at.isoformat(), incident.ends_at.isoformat()],
        )
        incident.started_at, incident.ends_at = window.starts_at, window.ends_at
        return add_update(
            session,
            incident,
            IncidentState.SCHEDULED,
            window.message or RESCHEDULED_MESSAGE,
            audience=Audience.TOLD,
            milestone=f"{RESCHEDULED}-{revision}",
        )


def cancel(store: Store, maintenance_id: int, message: str | None) -> Posted:
    """Call off a maintenance before it starts: those who were told of it hear it is off, once;
    what is still waiting to announce it is withdrawn (it would announce what will not
    happen), so nobody who never heard of it hears of it now."""
    with store.session() as session:
        incident = _scheduled(session, maintenance_id)
        if incident.started_at <= utcnow():
            raise IncidentError(
                f"maintenance {maintenance_id} has started; to end it early, resolve it "
                f"(outage incident resolve {maintenance_id})"
            )
        incident.resolved_at = utcnow()
        withdrawn = _withdraw_waiting(session, maintenance_id)
        record(
            session,
            "operator",
            "maintenance_cancelled",
            incident_id=maintenance_id,
            withdrawn=withdrawn,
        )
        return add_update(
            session,
            incident,
            IncidentState.CANCELLED,
            message,
            audience=Audience.TOLD,
            milestone=CANCELLED,
        )


def listed(store: Store, *, everything: bool = False) -> list[Incident]:
    """Planned maintenance, soonest first: what is scheduled or running, or everything
    (completed and cancelled too)."""
    query = select(Incident).where(Incident.ends_at.is_not(None))
    if not everything:
        query = query.where(Incident.state == IncidentState.SCHEDULED)
    with store.session() as session:
        return list(session.scalars(query.order_by(Incident.started_at, Incident.id)))


def window_revision(session: Session, incident: Incident) -> tuple[int, datetime | None]:
    """How often the window was moved, and when it was last (re)announced."""
    announced = or_(Update.milestone == ANNOUNCED, Update.milestone.like(f"{RESCHEDULED}-%"))
    last = session.scalars(
        select(Update.created_at)
        .where(Update.incident_id == incident.id, announced)
        .order_by(Update.created_at.desc())
        .limit(1)
    ).first()
    return _revision(session, incident.id), last


def milestone(name: str, revision: int) -> str:
    """A notice's milestone for the window's revision: unique per incident and window."""
    return f"{name}@{revision}" if revision else name


def _scheduled(session: Session, maintenance_id: int) -> Incident:
    incident = locked(session, maintenance_id)
    if not is_maintenance(incident):
        raise IncidentError(f"incident {maintenance_id} is not a planned maintenance")
    if incident.state is IncidentState.CANCELLED:
        raise IncidentError(f"maintenance {maintenance_id} was cancelled")
    if incident.state is not IncidentState.SCHEDULED:
        raise IncidentError(f"maintenance {maintenance_id} is over")
    return incident


def _revision(session: Session, incident_id: int) -> int:
    return (
        session.scalar(
            select(func.count()).where(
                Update.incident_id == incident_id, Update.milestone.like(f"{RESCHEDULED}-%")
            )
        )
        or 0
    )


def _withdraw_waiting(session: Session, incident_id: int) -> int:
    """Mark the maintenance's messages still queued as superseded; how many there were."""
    withdrawn = session.execute(
        update(Delivery)
        .where(
            Delivery.update_id.in_(select(Update.id).where(Update.incident_id == incident_id)),
            Delivery.status == DeliveryStatus.QUEUED,
        )
        .values(status=DeliveryStatus.SUPERSEDED, last_error=WITHDRAWN, updated_at=utcnow())
        .returning(Delivery.id)
    ).all()
    return len(withdrawn)
