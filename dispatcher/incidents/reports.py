"""Read-only views of incidents and deliveries for the CLI and the API."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dispatcher.incidents.lifecycle import IncidentNotFound
from dispatcher.models import DeliveryStatus, WaitReason
from dispatcher.store import (
    MAX_ID,
    PUBLIC_RECIPIENT,
    Delivery,
    Heartbeat,
    Incident,
    Store,
    Subscriber,
    Update,
    utcnow,
)

# How recent a runner's last pass must be for it to count as running (it passes every second).
RUNNER_ALIVE_S = 10.0


@dataclass(frozen=True)
class DeliveryLine:
    """One delivery as an operator inspects it."""

    id: int
    update_id: int | None  # None: a confirmation
    update_state: str
    subscriber: str
    channel: str
    status: DeliveryStatus
    attempts: int
    provider_id: str | None
    last_error: str | None
    fallback_of: int | None
    sends: int = 0  # rounds through the queue: more than one is a retry
    lease_expiries: int = 0  # taken back from a vanished worker: maybe sent twice
    ambiguous_retries: int = 0  # sent again after a timeout or a 5xx: maybe sent twice

    @property
    def possibly_sent_twice(self) -> int:
        return self.lease_expiries + self.ambiguous_retries


def incident(store: Store, incident_id: int) -> tuple[Incident, list[Update]]:
    with store.session() as session:
        found = session.get(Incident, incident_id) if 0 < incident_id <= MAX_ID else None
        if found is None:
            raise IncidentNotFound(incident_id)
        updates = session.scalars(
            select(Update).where(Update.incident_id == incident_id).order_by(Update.id)
        ).all()
        return found, list(updates)


def incidents(store: Store) -> list[Incident]:
    with store.session() as session:
        return list(session.scalars(select(Incident).order_by(Incident.id.desc())))


def delivery_summary(store: Store, incident_id: int) -> dict[str, Counter[str]]:
    """Counts per channel and status, for `incident show`."""
    with store.session() as session:
        rows = session.execute(
            select(Delivery.channel, Delivery.status, func.count())
            .join(Update, Delivery.update_id == Update.id)
            .where(Update.incident_id == incident_id)
            .group_by(Delivery.channel, Delivery.status)
        ).all()
    summary: dict[str, Counter[str]] = {}
    for channel, status, count in rows:
        summary.setdefault(channel, Counter())[status] = count
    return summary


def deliveries(
    store: Store,
    incident_id: int | None,
    status: DeliveryStatus | None = None,
    limit: int | None = None,
) -> list[DeliveryLine]:
    """An incident's deliveries (every delivery, newest first, when None: confirmations too),
    of one status."""
    query = (
        select(Delivery, Update.state, Subscriber.name)
        .outerjoin(Update, Delivery.update_id == Update.id)
        .outerjoin(Subscriber, Delivery.subscriber_id == Subscriber.id)
    )
    if incident_id is not None:
        query = query.where(Update.incident_id == incident_id).order_by(
            Delivery.update_id, Delivery.recipient, Delivery.id
        )
    else:
        query = query.order_by(Delivery.id.desc())
    if status is not None:
        query = query.where(Delivery.status == status)
    with store.session() as session:
        rows = session.execute(query.limit(limit)).all()
    return [
        DeliveryLine(
            id=row.id,
            update_id=row.update_id,
            update_state=state or row.kind.value,
            subscriber=name or ("(public)" if row.recipient == PUBLIC_RECIPIENT else "(removed)"),
            channel=row.channel,
            status=row.status,
            attempts=row.attempts,
            provider_id=row.provider_id,
            last_error=row.last_error,
            fallback_of=row.fallback_of,
            sends=row.sends,
            lease_expiries=row.lease_expiries,
            ambiguous_retries=row.ambiguous_retries,
        )
        for row, state, name in rows
    ]


@dataclass(frozen=True)
class Waiting:
    """Queued deliveries held for one reason: how many, until when, and why."""

    count: int
    until: datetime
    reason: str  # a WaitReason's value, or "due" (due now, waiting for a runner)

    def as_dict(self) -> dict[str, object]:
        return {"count": self.count, "until": self.until, "reason": self.reason}


def waiting(store: Store, incident_id: int | None = None) -> list[Waiting]:
    """What is still queued (of one incident, or of everything), grouped by why it waits,
    soonest first: what a command that leaves messages behind tells the operator."""
    query = select(Delivery.wait_reason, func.count(), func.max(Delivery.due_at)).where(
        Delivery.status == DeliveryStatus.QUEUED
    )
    if incident_id is not None:
        query = query.join(Update, Delivery.update_id == Update.id).where(
            Update.incident_id == incident_id
        )
    now = utcnow()
    with store.session() as session:
        rows = session.execute(query.group_by(Delivery.wait_reason)).all()
    found = [
        Waiting(count, _aware(until) or now, WaitReason(reason).value if reason else "due")
        for reason, count, until in rows
    ]
    return sorted(found, key=lambda held: held.until)


@dataclass(frozen=True)
class InFlight:
    """An incident's messages not done with yet: being sent, queued (and the soonest due), and
    updates whose delivery rows are not all written."""

    sending: int
    queued: int
    next_due: datetime | None
    unfanned: int

    @property
    def any(self) -> bool:
        return bool(self.sending or self.queued or self.unfanned)

    def due_before(self, moment: datetime) -> bool:
        """Whether anything may still move before `moment` (what is being sent or fanned out
        moves now)."""
        if self.sending or self.unfanned:
            return True
        return self.next_due is not None and self.next_due <= moment


def in_flight(store: Store, incident_id: int) -> InFlight:
    """What `incident show --follow` waits for, in two queries."""
    queued = Delivery.status == DeliveryStatus.QUEUED
    with store.session() as session:
        sending, waiting, next_due = session.execute(
            select(
                func.count().filter(Delivery.status == DeliveryStatus.SENDING),
                func.count().filter(queued),
                func.min(Delivery.due_at).filter(queued),
            )
            .select_from(Delivery)
            .join(Update, Delivery.update_id == Update.id)
            .where(Update.incident_id == incident_id)
        ).one()
        unfanned = session.scalar(
            select(func.count()).where(
                Update.incident_id == incident_id, Update.fanned_out_at.is_(None)
            )
        )
    return InFlight(sending, waiting, _aware(next_due), unfanned or 0)


def runners_alive(session: Session) -> list[str]:
    """The embedded runners that passed within RUNNER_ALIVE_S (`outage serve`, `outage worker`
    without a broker), by host:pid."""
    since = utcnow().timestamp() - RUNNER_ALIVE_S
    beats = session.scalars(select(Heartbeat)).all()
    return sorted(beat.name for beat in beats if beat.at.timestamp() >= since)


def _aware(moment: datetime | None) -> datetime | None:
    """max() over SQLite bypasses the column type: a naive UTC datetime (or None)."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=utcnow().tzinfo)
    return moment
