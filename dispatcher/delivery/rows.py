"""The rows of a batch under its lease: taking them (`claim`), reading what sending them needs
(`load`), and writing what their answers changed (`recorded_rows`, `Row`, `write`).

Each is one statement per batch or per chunk, never one per row: this is the hot path of a
large fan-out (why plain values rather than ORM objects: `_ClaimedSubscriber`, `Row`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, case, or_, select, tuple_, update
from sqlalchemy.orm import Session

from dispatcher.models import DeliveryStatus, FailureReason, MessageKind, WaitReason
from dispatcher.store import Delivery, Incident, Store, Subscriber, Update, utcnow


@dataclass(frozen=True, slots=True)
class _ClaimedDelivery:
    """The columns of a claimed row that do not change while it is sent: what a fallback
    reads of it (dispatcher/delivery/outcomes.py `DeliveryKey`)."""

    id: int
    kind: MessageKind
    update_id: int | None  # None: a message that belongs to no update (a confirmation, a link)
    notice: str | None  # a notice's text (MessageKind.NOTICE)
    channel: str
    recipient: str
    priority: int


@dataclass(frozen=True, slots=True)
class _ClaimedSubscriber:
    """The subscriber columns sending reads (outcomes.py `Person`, and the address columns by
    name): plain values, as building an ORM object per recipient cost more than rendering for
    them."""

    id: int
    link_secret: str | None
    name: str
    locale: str
    timezone: str
    internal: bool
    channels: list[str]
    email: str | None
    phone: str | None
    webhook_url: str | None
    webhook_secret: str | None
    email_confirmed_at: datetime | None
    phone_confirmed_at: datetime | None
    pending_email: str | None
    pending_phone: str | None
    unsubscribed_at: datetime | None


# Selected in the dataclasses' field order, so a row's slice builds one.
_DELIVERY_COLUMNS = tuple(getattr(Delivery, f.name) for f in fields(_ClaimedDelivery))


_SUBSCRIBER_COLUMNS = tuple(getattr(Subscriber, f.name) for f in fields(_ClaimedSubscriber))


@dataclass(frozen=True)
class Claimed:
    """A claimed delivery of an update with all that sending it reads, loaded by `load`."""

    delivery: _ClaimedDelivery
    update: Update
    incident: Incident
    subscriber: _ClaimedSubscriber | None


@dataclass(frozen=True)
class ClaimedNotice:
    """A claimed message of no update, its row's `kind` says which (a confirmation, a new
    link): its row and its subscriber only."""

    delivery: _ClaimedDelivery
    subscriber: _ClaimedSubscriber | None


Loaded = Claimed | ClaimedNotice  # what one send batch holds


# A row being reclaimed (its lease ran out) that its holder had handed to the provider.
_LOST_IN_FLIGHT = and_(
    Delivery.status == DeliveryStatus.SENDING, Delivery.in_flight_since.is_not(None)
)


# A claimed row: its id, and its `sends` as the claim left it (the claim's fencing token: a row
# taken back from this holder by another claim has a different one).
Claims = dict[int, int]


def claim(store: Store, delivery_ids: Sequence[int], lease_s: float) -> Claims:
    """Atomically take the rows that are due, or whose holder's lease ran out; such a row that
    its holder had handed to the provider is counted (`lease_expiries`): it may have gone. A
    queued row keeps its mark of an earlier answer left unknown, for its next send to count."""
    now = utcnow()
    statement = (
        update(Delivery)
        .where(
            Delivery.id.in_(list(delivery_ids)),
            or_(
                and_(Delivery.status == DeliveryStatus.QUEUED, Delivery.due_at <= now),
                and_(Delivery.status == DeliveryStatus.SENDING, Delivery.lease_until < now),
            ),
        )
        .values(
            status=DeliveryStatus.SENDING,
            lease_until=now + timedelta(seconds=lease_s),
            sends=Delivery.sends + 1,
            lease_expiries=Delivery.lease_expiries + case((_LOST_IN_FLIGHT, 1), else_=0),
            in_flight_since=case((_LOST_IN_FLIGHT, None), else_=Delivery.in_flight_since),
            updated_at=now,
        )
        .returning(Delivery.id, Delivery.sends)
    )
    with store.session() as session:
        # On the connection, as Core: through the session, the ORM would also look for the rows
        # among its objects, and a new session holds none.
        claimed = session.connection().execute(statement).all()
    return {delivery_id: sends for delivery_id, sends in claimed}


def load(store: Store, delivery_ids: list[int]) -> list[Loaded]:
    """The claimed rows, highest priority first, with what sending them reads: the rows and
    their subscribers as plain values, and each update (with its incident) loaded once for the
    batch, which nearly always has a single one."""
    split = len(_DELIVERY_COLUMNS)
    query = (
        select(*_DELIVERY_COLUMNS, *_SUBSCRIBER_COLUMNS)
        .outerjoin(Subscriber, Delivery.subscriber_id == Subscriber.id)
        .where(Delivery.id.in_(delivery_ids))
        .order_by(Delivery.priority.desc(), Delivery.id)
    )
    with store.session() as session:
        rows = session.connection().execute(query).all()  # as Core: plain rows
        updates = {
            update_row.id: (update_row, incident)
            for update_row, incident in session.execute(
                select(Update, Incident)
                .join(Incident, Update.incident_id == Incident.id)
                .where(Update.id.in_({row.update_id for row in rows if row.update_id}))
            )
        }
    claimed: list[Loaded] = []
    for row in rows:
        delivery = _ClaimedDelivery(*row[:split])
        subscriber = _ClaimedSubscriber(*row[split:]) if row[split] is not None else None
        if delivery.kind is not MessageKind.UPDATE:
            claimed.append(ClaimedNotice(delivery, subscriber))
            continue
        found = updates.get(delivery.update_id or 0)
        if found is None:  # as the inner join it replaces: never, with the foreign key
            continue
        claimed.append(Claimed(delivery, found[0], found[1], subscriber))
    return claimed


class Row:
    """One delivery row while its outcome is recorded: read fresh when its chunk is answered
    (`recorded_rows`), then read and set by recording (dispatcher/delivery/outcomes.py) as the
    ORM object it replaces would be. What is set is kept in `changes` and written for the whole
    chunk by `write`: loading ORM objects and flushing one UPDATE per row was most of what
    recording cost."""

    id: int
    channel: str
    status: DeliveryStatus
    sends: int
    attempts: int
    ambiguous_retries: int
    provider_id: str | None
    last_error: str | None
    # Only ever set here (reading them before would raise AttributeError):
    error_reason: FailureReason | None
    sent_at: datetime | None
    receipt_due_at: datetime | None
    due_at: datetime
    wait_reason: WaitReason | None
    lease_until: datetime | None
    in_flight_since: datetime | None

    # What recording reads of a row, and its log line reports: columns in the constructor's order.
    COLUMNS = (
        Delivery.id,
        Delivery.channel,
        Delivery.status,
        Delivery.sends,
        Delivery.attempts,
        Delivery.ambiguous_retries,
        Delivery.provider_id,
        Delivery.last_error,
    )
    NAMES = tuple(column.key for column in COLUMNS)

    changes: dict[str, Any]  # column name -> the value to write

    def __init__(self, *values: object) -> None:
        """A row as read: `COLUMNS`' values, in order (not changes)."""
        self.__dict__.update(zip(self.NAMES, values, strict=True))
        self.__dict__["changes"] = {}

    def __setattr__(self, name: str, value: object) -> None:
        self.changes[name] = value
        super().__setattr__(name, value)


def recorded_rows(session: Session, chunk: Sequence[Loaded], claims: Claims) -> dict[int, Row]:
    """The chunk's rows as they are now (a receipt may have come), in one SELECT of the columns
    recording (or putting back) reads; only those `claims` still hold: a row another worker
    took back meanwhile (its `sends` moved on) is left to that worker."""
    ids = [item.delivery.id for item in chunk]
    query = select(*Row.COLUMNS).where(Delivery.id.in_(ids))
    rows = (Row(*row) for row in session.connection().execute(query))
    return {row.id: row for row in rows if claims.get(row.id) == row.sends}


def write(session: Session, rows: Iterable[Row]) -> None:
    """Write what recording set on each row: one executemany UPDATE by primary key per set of
    columns changed (a chunk mostly has one: all sent), `updated_at` set as the ORM would.

    A row recorded as sent keeps DELIVERED if the provider's receipt was recorded in the
    meantime, like recording a send does when the receipt came before the row was read: its status
    and receipt deadline are only written where the row is not delivered by then."""
    shapes: dict[tuple[frozenset[str], bool], list[dict[str, Any]]] = defaultdict(list)
    for row in sorted(rows, key=lambda row: row.id):  # rows locked in key order, as the ORM does
        if row.changes:
            sent = row.changes.get("status") is DeliveryStatus.SENT
            shapes[(frozenset(row.changes), sent)].append({"row_id": row.id, **row.changes})
    for (names, sent), parameters in shapes.items():
        session.execute(_update_statement(names, keep_delivered=sent), parameters)


def _update_statement(names: frozenset[str], *, keep_delivered: bool) -> Any:
    """UPDATE deliveries SET each column of `names` to the parameter of its name
    WHERE id = `row_id`."""
    table = Delivery.metadata.tables[Delivery.__tablename__]
    delivered = table.c.status == DeliveryStatus.DELIVERED
    values: dict[str, Any] = {}
    for name in sorted(names):
        column = table.c[name]
        value = bindparam(name, type_=column.type)
        guarded = keep_delivered and name in ("status", "receipt_due_at")
        values[name] = case((delivered, column), else_=value) if guarded else value
    return update(table).where(table.c.id == bindparam("row_id")).values(values)


def mark_in_flight(store: Store, claims: Claims) -> set[int]:
    """From here until its outcome is recorded, a crash leaves it unknown whether the provider
    has the message: mark it, so a reclaim after the lease counts exactly those. Its request is
    counted now (`attempts`), made whether or not this worker lives to record the answer; and
    if an earlier request's fate is still unknown (its mark was kept), this one may deliver it
    a second time: counted in `ambiguous_retries`.

    Only rows this claim still holds are marked, and only those may be sent (the ids returned):
    a holder whose lease ran out while it could not renew it (the database away) finds its rows
    taken back by another worker, which sends them; sent by both, they would be duplicates
    nobody counted."""
    unknown = Delivery.in_flight_since.is_not(None)
    with store.session() as session:
        marked = session.connection().scalars(  # as Core: the session holds no objects
            update(Delivery)
            .where(
                tuple_(Delivery.id, Delivery.sends).in_(list(claims.items())),
                Delivery.status == DeliveryStatus.SENDING,
            )
            .values(
                in_flight_since=utcnow(),
                attempts=Delivery.attempts + 1,
                ambiguous_retries=Delivery.ambiguous_retries + case((unknown, 1), else_=0),
            )
            .returning(Delivery.id)
        )
        return set(marked)
