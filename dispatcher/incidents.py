"""The incident state machine: every change is an Update row, written with the incident in one
transaction, and only then handed to the queue for fan-out.

If the process dies between the commit and the enqueue, the update's `fanned_out_at` stays NULL
and the sweep hands it to the queue later: an accepted update is never lost.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from dispatcher.models import IncidentIn, IncidentState
from dispatcher.store import Incident, Store, Update, utcnow


class IncidentError(ValueError):
    """An operation an operator asked for that cannot be done; the message says why."""


class IncidentNotFound(IncidentError):
    def __init__(self, incident_id: int) -> None:
        super().__init__(f"no incident with id {incident_id}")


# Which states an open incident may move to with an ordinary update. Any open state may be
# revisited (an "identified" cause can turn out wrong), but a resolved incident only reopens.
UPDATE_STATES = (IncidentState.INVESTIGATING, IncidentState.IDENTIFIED, IncidentState.MONITORING)


@dataclass(frozen=True)
class Posted:
    """What an operation wrote: the incident and the update the subscribers will hear about."""

    incident_id: int
    update_id: int


def open_incident(
    store: Store,
    data: IncidentIn,
    *,
    state: IncidentState = IncidentState.INVESTIGATING,
    source: str = "operator",
    source_key: str | None = None,
) -> Posted:
    with store.session() as session:
        incident = Incident(
            title=data.title,
            severity=data.severity,
            state=state,
            components=list(dict.fromkeys(data.components)),
            source=source,
            source_key=source_key,
            started_at=utcnow(),
        )
        session.add(incident)
        session.flush()
        return _add_update(session, incident, state, data.message)


def post_update(
    store: Store, incident_id: int, state: IncidentState, message: str | None
) -> Posted:
    if state not in UPDATE_STATES:
        allowed = ", ".join(s.value for s in UPDATE_STATES)
        raise IncidentError(f"state: an update moves to one of {allowed}; use resolve to close")
    with store.session() as session:
        incident = _get_for_update(session, incident_id)
        if not incident.state.is_open:
            raise IncidentError(f"incident {incident_id} is resolved; reopen it first")
        return _add_update(session, incident, state, message)


def resolve(store: Store, incident_id: int, message: str | None) -> Posted:
    with store.session() as session:
        incident = _get_for_update(session, incident_id)
        if not incident.state.is_open:
            raise IncidentError(f"incident {incident_id} is already resolved")
        incident.resolved_at = utcnow()
        return _add_update(session, incident, IncidentState.RESOLVED, message)


def reopen(store: Store, incident_id: int, message: str | None) -> Posted:
    """A resolved incident that broke again: same incident, so nobody is paged twice."""
    with store.session() as session:
        incident = _get_for_update(session, incident_id)
        if incident.state.is_open:
            raise IncidentError(f"incident {incident_id} is still open")
        incident.resolved_at = None
        return _add_update(session, incident, IncidentState.INVESTIGATING, message)


def _get_for_update(session: Session, incident_id: int) -> Incident:
    incident = session.scalars(
        select(Incident).where(Incident.id == incident_id).with_for_update()
    ).first()
    if incident is None:
        raise IncidentNotFound(incident_id)
    return incident


def _add_update(
    session: Session, incident: Incident, state: IncidentState, message: str | None
) -> Posted:
    incident.state = state
    update = Update(incident_id=incident.id, state=state, message=message, created_at=utcnow())
    session.add(update)
    session.flush()
    return Posted(incident_id=incident.id, update_id=update.id)
