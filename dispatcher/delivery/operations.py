"""What an operator does with deliveries beyond reading them one by one: the figures of
`outage delivery stats`, and putting failed deliveries back in the queue (`outage delivery retry`).

The figures come from the database alone (the source of truth), so any process can print them:
breaker states are the last transition each circuit recorded in the audit trail.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, TypeVarTuple

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from dispatcher import audit
from dispatcher.delivery.breaker import AUDIT_PREFIX
from dispatcher.errors import OutageError
from dispatcher.incidents.lifecycle import IncidentNotFound
from dispatcher.models import DeliveryStatus
from dispatcher.store import AuditEvent, Delivery, Incident, Receipt, Store, Update, utcnow

AUDITED_IDS = 100  # a retry's audit event lists at most this many delivery ids

Columns = TypeVarTuple("Columns")


class DeliveryError(OutageError):
    """An operator's request about deliveries that cannot be carried out; says which part."""


@dataclass(frozen=True)
class Circuit:
    state: str  # the last transition's target: closed, open, half_open
    transitions: int
    since: datetime


@dataclass(frozen=True)
class DeliveryStats:
    by_channel: dict[str, dict[str, int]]  # channel -> status -> deliveries
    total: int
    retried: int  # deliveries that needed more than one send through the queue
    retries: int  # the extra sends, all together
    provider_requests: int  # requests made to providers, retries inside a send included
    fallbacks: int  # deliveries made because another channel failed (or its circuit was open)
    lease_expiries: int  # deliveries taken back from a vanished worker: possibly sent twice
    # Requests made after a timeout or a 5xx left it unknown whether the provider had the
    # message (inside a send or through the queue): each possibly sent it twice.
    ambiguous_retries: int
    queued: int
    oldest_queued_s: float | None  # how long the oldest delivery not yet sent has waited
    sending: int = 0  # claimed by a worker now
    sending_past_lease: int = 0  # of those, left by a worker that is gone (the sweep takes them)
    receipts: dict[str, int] = field(default_factory=dict)  # our receipt status -> events
    circuits: dict[str, Circuit] = field(default_factory=dict)  # provider account -> breaker

    @property
    def possibly_sent_twice(self) -> int:
        """Every message that may have reached its provider more than once."""
        return self.lease_expiries + self.ambiguous_retries

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "possibly_sent_twice": self.possibly_sent_twice}


def stats(store: Store, incident_id: int | None = None) -> DeliveryStats:
    """Counts per channel and status, retries, fallbacks, possible duplicates, the backlog's
    age (queued, and left in sending past a lease), receipts and breakers; of one incident, or
    of everything."""
    with store.session() as session:
        if incident_id is not None and session.get(Incident, incident_id) is None:
            raise IncidentNotFound(incident_id)
        by_channel: dict[str, dict[str, int]] = {}
        for channel, status, count in session.execute(
            _of(select(Delivery.channel, Delivery.status, func.count()), incident_id).group_by(
                Delivery.channel, Delivery.status
            )
        ):
            by_channel.setdefault(channel, {})[status.value] = count
        totals = session.execute(
            _of(
                select(
                    func.count(),
                    func.count().filter(Delivery.sends > 1),
                    func.coalesce(func.sum(Delivery.sends - 1).filter(Delivery.sends > 1), 0),
                    func.coalesce(func.sum(Delivery.attempts), 0),
                    func.count(Delivery.fallback_of),
                    func.coalesce(func.sum(Delivery.lease_expiries), 0),
                    func.coalesce(func.sum(Delivery.ambiguous_retries), 0),
                ),
                incident_id,
            )
        ).one()
        now = utcnow()
        sending, past_lease = session.execute(
            _of(
                select(func.count(), func.count().filter(Delivery.lease_until < now)).where(
                    Delivery.status == DeliveryStatus.SENDING
                ),
                incident_id,
            )
        ).one()
        queued, oldest = session.execute(
            _of(
                select(func.count(), func.min(Delivery.created_at)).where(
                    Delivery.status == DeliveryStatus.QUEUED
                ),
                incident_id,
            )
        ).one()
        return DeliveryStats(
            by_channel=by_channel,
            total=totals[0],
            retried=totals[1],
            retries=int(totals[2]),
            provider_requests=int(totals[3]),
            fallbacks=totals[4],
            lease_expiries=int(totals[5]),
            ambiguous_retries=int(totals[6]),
            queued=queued,
            oldest_queued_s=_age_s(oldest),
            sending=sending,
            sending_past_lease=past_lease,
            receipts=_receipts(session, incident_id),
            circuits=circuits(session),
        )


def _of(query: Select[*Columns], incident_id: int | None) -> Select[*Columns]:
    """Only the deliveries of `incident_id`, when given."""
    if incident_id is None:
        return query
    return query.join(Update, Delivery.update_id == Update.id).where(
        Update.incident_id == incident_id
    )


def _age_s(moment: datetime | str | None) -> float | None:
    if moment is None:
        return None
    if isinstance(moment, str):  # min() over SQLite bypasses the column type
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=utcnow().tzinfo)
    return max(0.0, (utcnow() - moment).total_seconds())


def _receipts(session: Session, incident_id: int | None) -> dict[str, int]:
    query = select(Receipt.status, func.count()).group_by(Receipt.status)
    if incident_id is not None:
        query = _of(query.join(Delivery, Receipt.delivery_id == Delivery.id), incident_id)
    return {status: count for status, count in session.execute(query)}


def circuits(session: Session) -> dict[str, Circuit]:
    """Each provider account's breaker as its recorded transitions leave it."""
    events = session.scalars(
        select(AuditEvent)
        .where(AuditEvent.actor == "system", AuditEvent.action.startswith(AUDIT_PREFIX))
        .order_by(AuditEvent.id)
    ).all()
    counts: Counter[str] = Counter()
    found: dict[str, Circuit] = {}
    for event in events:
        key = str(event.detail.get("circuit", "?"))
        counts[key] += 1
        found[key] = Circuit(event.action.removeprefix(AUDIT_PREFIX), counts[key], event.at)
    return found


def retry(
    store: Store, *, delivery_id: int | None = None, incident_id: int | None = None
) -> list[int]:
    """Put failed deliveries back in the queue as new (their send count starts again); one by
    id, or all of an incident's. Returns their ids, for the caller to enqueue."""
    if (delivery_id is None) == (incident_id is None):
        raise DeliveryError("give a delivery ID or --incident, not both or neither")
    with store.session() as session:
        if delivery_id is not None:
            rows = [_failed_delivery(session, delivery_id)]
        else:
            if session.get(Incident, incident_id) is None:
                raise IncidentNotFound(incident_id or 0)
            rows = list(
                session.scalars(
                    _of(select(Delivery), incident_id)
                    .where(Delivery.status == DeliveryStatus.FAILED)
                    .order_by(Delivery.priority.desc(), Delivery.id)
                )
            )
        now = utcnow()
        for row in rows:
            row.status = DeliveryStatus.QUEUED
            row.sends = 0
            row.due_at = now
            row.lease_until = None
        ids = [row.id for row in rows]
        if ids:
            audit.record(
                session,
                "operator",
                "deliveries_retried",
                incident_id=incident_id,
                count=len(ids),
                deliveries=ids[:AUDITED_IDS],
            )
    return ids


def _failed_delivery(session: Session, delivery_id: int) -> Delivery:
    found = session.get(Delivery, delivery_id)
    if found is None:
        raise DeliveryError(f"ID: no delivery with id {delivery_id}")
    if found.status is not DeliveryStatus.FAILED:
        raise DeliveryError(
            f"ID: delivery {delivery_id} is {found.status.value.replace('_', ' ')}; "
            "only failed deliveries are retried"
        )
    return found
