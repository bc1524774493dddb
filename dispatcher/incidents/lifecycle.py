"""The incident state machine: every change is an Update row, written with the incident in one
transaction, and only then handed to the queue for fan-out.

If the process dies between the commit and the enqueue, the update's `fanned_out_at` stays NULL
and the sweep hands it to the queue later: an accepted update is never lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from dispatcher.audit import record
from dispatcher.errors import OutageError
from dispatcher.models import (
    Audience,
    FollowUpIn,
    IncidentIn,
    IncidentState,
    ReopenIn,
    Scope,
    SegmentNote,
)
from dispatcher.store import MAX_ID, Incident, Store, Update, utcnow


class IncidentError(OutageError):
    """An operation an operator asked for that cannot be done; the message says why. Mostly the
    incident's state is in the way (resolved, not a draft), hence the API's 409 Conflict."""

    http_status = 409


class IncidentNotFound(IncidentError):
    """No incident with this id."""

    http_status = 404

    def __init__(self, incident_id: int) -> None:
        super().__init__(f"no incident with id {incident_id}")


# Which states an open incident may move to with an ordinary update. Any open state may be
# revisited (an "identified" cause can turn out wrong), but a resolved incident only reopens.
UPDATE_STATES = (IncidentState.INVESTIGATING, IncidentState.IDENTIFIED, IncidentState.MONITORING)


@dataclass(frozen=True)
class Extras:
    """What an operator may add to any update: the promise of the next one, an estimated
    resolution (kept on the incident and shown in every message until changed), a note for
    the team that customers never see, with a resolution the service credit offered (its own
    paragraph in subscribers' messages, never in the public post), a new scope (who it affects,
    by subscriber attribute; `{}` is everyone it concerns, None leaves it as it was), `public`
    to show a scoped incident on the public page, feed and X account, and notes for segments
    only."""

    next_update_at: datetime | None = None
    eta: datetime | None = None
    internal_note: str | None = None
    credit_note: str | None = None
    scope: Scope | None = None
    public: bool = False
    notes: Sequence[SegmentNote] = ()

    @classmethod
    def of(cls, data: FollowUpIn) -> Extras:
        """The extras of validated input (a promise and an estimate are still to come)."""
        return cls(
            next_update_at=data.next_update_at,
            eta=data.eta,
            internal_note=data.internal_note,
            # A resolution's input (UpdateIn) carries the credit note; other updates none.
            credit_note=getattr(data, "credit_note", None),
        )


NO_EXTRAS = Extras()


@dataclass(frozen=True)
class Posted:
    """What an operation wrote: the incident and the update the subscribers will hear about."""

    incident_id: int
    update_id: int


def open_incident(store: Store, data: IncidentIn) -> Posted:
    with store.session() as session:
        return create(session, data)


def create(
    session: Session,
    data: IncidentIn,
    *,
    source: str = "operator",
    source_key: str | None = None,
    draft: bool = False,
    extras: Extras | None = None,
) -> Posted:
    """A new incident in the caller's transaction (the operator's, or a monitoring event's);
    its first update carries the input's extras unless `extras` says otherwise, and its scope,
    publicity and segment notes come with `data`."""
    incident = Incident(
        title=data.title,
        severity=data.severity,
        state=IncidentState.INVESTIGATING,
        components=list(dict.fromkeys(data.components)),
        source=source,
        source_key=source_key,
        draft=draft,
        started_at=utcnow(),
        scope={},
        private=False,
    )
    session.add(incident)
    session.flush()
    record(session, source, "incident_opened", incident_id=incident.id, draft=draft)
    extras = Extras.of(data) if extras is None else extras
    extras = replace(
        extras,
        scope=data.affects or None,
        public=data.public or extras.public,
        notes=[*data.notes, *extras.notes],
    )
    return add_update(
        session, incident, IncidentState.INVESTIGATING, data.message, extras, actor=source
    )


def post_update(
    store: Store,
    incident_id: int,
    state: IncidentState,
    message: str | None,
    extras: Extras = NO_EXTRAS,
) -> Posted:
    with store.session() as session:
        return update_in(session, incident_id, state, message, extras)


def update_in(
    session: Session,
    incident_id: int,
    state: IncidentState,
    message: str | None,
    extras: Extras = NO_EXTRAS,
) -> Posted:
    """`post_update` in the caller's transaction (a dry run rolls it back)."""
    if state not in UPDATE_STATES:
        allowed = ", ".join(s.value for s in UPDATE_STATES)
        raise IncidentError(f"state: an update moves to one of {allowed}; use resolve to close")
    incident = locked(session, incident_id)
    if is_maintenance(incident):
        raise IncidentError(
            f"incident {incident_id} is a planned maintenance, not an incident: reschedule "
            "or cancel it (outage maintenance), or open an incident if it went wrong"
        )
    if not incident.state.is_open:
        raise IncidentError(
            f"incident {incident_id} is resolved; reopen it first "
            f"(outage incident reopen {incident_id} --message …)"
        )
    return add_update(session, incident, state, message, extras)


def resolve(
    store: Store,
    incident_id: int,
    message: str | None,
    extras: Extras = NO_EXTRAS,
) -> Posted:
    """Close an open incident. A service credit (`extras.credit_note`) is kept apart from the
    message: it is offered to the subscribers told of it, and never posted in public."""
    with store.session() as session:
        return resolve_in(session, incident_id, message, extras)


def resolve_in(
    session: Session, incident_id: int, message: str | None, extras: Extras = NO_EXTRAS
) -> Posted:
    """`resolve` in the caller's transaction (a dry run rolls it back)."""
    incident = locked(session, incident_id)
    if incident.state is IncidentState.CANCELLED:
        raise IncidentError(f"maintenance {incident_id} was cancelled")
    if not incident.state.is_open:
        raise IncidentError(f"incident {incident_id} is already resolved")
    if is_maintenance(incident) and incident.started_at > utcnow():
        raise IncidentError(
            f"maintenance {incident_id} has not started; cancel it instead "
            f"(outage maintenance cancel {incident_id})"
        )
    return close(session, incident, message, extras)


def close(
    session: Session,
    incident: Incident,
    message: str | None,
    extras: Extras = NO_EXTRAS,
) -> Posted:
    incident.resolved_at = utcnow()
    incident.resolve_pending_since = None
    return add_update(session, incident, IncidentState.RESOLVED, message, extras)


def postmortem(store: Store, incident_id: int, url: str) -> Posted:
    """Send the post-incident review to the people who were told of the incident, once. Its
    messages say so in each reader's language (templates `postmortem.*`, with `review_url`);
    the stored sentence is what the status page and its feed show."""
    with store.session() as session:
        incident = locked(session, incident_id)
        if incident.state is IncidentState.CANCELLED:
            raise IncidentError(f"maintenance {incident_id} was cancelled: nothing to review")
        if incident.state.is_open:
            raise IncidentError(f"incident {incident_id} is still open; resolve it first")
        if _has_milestone(session, incident_id, "postmortem"):
            raise IncidentError(f"incident {incident_id}'s review was already sent")
        message = f"Our review of what happened and what we are changing: {url}"
        return add_update(
            session,
            incident,
            IncidentState.RESOLVED,
            message,
            audience=Audience.NOTIFIED,
            milestone="postmortem",
            review_url=url,
        )


def _has_milestone(session: Session, incident_id: int, milestone: str) -> bool:
    found = session.scalar(
        select(Update.id).where(Update.incident_id == incident_id, Update.milestone == milestone)
    )
    return found is not None


def reopen(
    session: Session,
    incident: Incident,
    message: str | None,
    extras: Extras = NO_EXTRAS,
    *,
    audience: Audience = Audience.EVERYONE,
) -> Posted:
    """A resolved incident that broke again: same incident, so nobody is paged twice. Its old
    estimate is over: only a new one is shown."""
    incident.resolved_at = None
    incident.eta = None
    return add_update(
        session,
        incident,
        IncidentState.INVESTIGATING,
        message,
        extras,
        audience=audience,
        actor=incident.source,
    )


def reopen_incident(store: Store, incident_id: int, data: ReopenIn) -> Posted:
    """An operator reopens a resolved incident: those who were told of it (who heard it was
    over) hear that it is not, and the public post if it was told; nobody else is paged."""
    with store.session() as session:
        incident = locked(session, incident_id)
        if is_maintenance(incident):
            raise IncidentError(
                f"incident {incident_id} is a planned maintenance; open an incident instead"
            )
        if incident.state.is_open:
            raise IncidentError(f"incident {incident_id} is not resolved; post an update instead")
        record(session, "operator", "incident_reopened", incident_id=incident_id)
        return reopen(session, incident, data.message, Extras.of(data), audience=Audience.TOLD)


def approve(
    store: Store, incident_id: int, *, title: str | None = None, message: str | None = None
) -> Posted:
    """Publish a draft: optionally reword it, then announce its latest update to everyone it
    concerns (the team already has it; the unique delivery key keeps them from a second copy)."""
    with store.session() as session:
        incident = locked(session, incident_id)
        if not incident.draft:
            raise IncidentError(f"incident {incident_id} is not a draft; it is already public")
        incident.draft = False
        if title is not None:
            incident.title = title
        latest = session.scalars(
            select(Update).where(Update.incident_id == incident_id).order_by(Update.id.desc())
        ).first()
        assert latest is not None  # every incident is created with its first update
        if message is not None:
            latest.message = message
        latest.fanned_out_at = None
        record(
            session,
            "operator",
            "incident_approved",
            incident_id=incident_id,
            reworded=title is not None or message is not None,
        )
        return Posted(incident_id=incident_id, update_id=latest.id)


def is_maintenance(incident: Incident) -> bool:
    """Planned maintenance has a window's end; an incident never has one."""
    return incident.ends_at is not None


def locked(session: Session, incident_id: int) -> Incident:
    """The incident, locked for this transaction (two operators change it one after the
    other); IncidentNotFound for an id that names none."""
    if not 0 < incident_id <= MAX_ID:
        raise IncidentNotFound(incident_id)
    incident = session.scalars(
        select(Incident).where(Incident.id == incident_id).with_for_update()
    ).first()
    if incident is None:
        raise IncidentNotFound(incident_id)
    return incident


def add_update(
    session: Session,
    incident: Incident,
    state: IncidentState,
    message: str | None,
    extras: Extras = NO_EXTRAS,
    *,
    audience: Audience = Audience.EVERYONE,
    milestone: str | None = None,
    review_url: str | None = None,
    actor: str = "operator",
) -> Posted:
    if audience is not Audience.INTERNAL:
        incident.state = state
    if extras.eta is not None:
        incident.eta = extras.eta
    scope = _rescope(session, incident, extras, actor)
    update = Update(
        incident_id=incident.id,
        state=state,
        message=message,
        internal_note=extras.internal_note,
        credit_note=extras.credit_note,
        review_url=review_url,
        next_update_at=extras.next_update_at,
        audience=audience,
        milestone=milestone,
        scope=scope,
        notes=[note.model_dump() for note in extras.notes] or None,
        created_at=utcnow(),
    )
    session.add(update)
    session.flush()
    return Posted(incident_id=incident.id, update_id=update.id)


def _rescope(session: Session, incident: Incident, extras: Extras, actor: str) -> Scope | None:
    """Apply the update's scope and publicity to the incident; the scope it set, if it changed.

    A scoped incident is private until made public (`--public`, or a scope of everyone), and
    once public it stays so: what the public page and the X account have shown stays shown.
    Narrowing a scope is allowed and never silent: the audience rule keeps telling everyone
    who was told before (dispatcher/policy/audience.py)."""
    changed = extras.scope is not None and extras.scope != incident.scope
    if changed:
        first = session.scalar(select(Update.id).where(Update.incident_id == incident.id)) is None
        incident.private = (first or incident.private) and bool(extras.scope)
        incident.scope = dict(extras.scope or {})
        record(session, actor, "incident_scoped", incident_id=incident.id, scope=incident.scope)
    if extras.public and incident.private:
        incident.private = False
        record(session, actor, "incident_made_public", incident_id=incident.id)
    return dict(incident.scope) if changed else None
