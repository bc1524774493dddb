"""Sending a batch of deliveries: claim the rows, render, hand them to the adapter, record.

The order is the guarantee. A row is claimed with one atomic UPDATE (queued and due, or a lease
that expired) before anything is sent, so two workers holding the same task cannot both send it;
the outcome is recorded after each chunk is answered. A worker that dies between the two leaves a
lease that expires and the row is sent again: we err towards a duplicate rather than a customer
never told, and count it (`lease_expiries`, incremented by the claim that takes the row back).

A channel's share of a batch goes out in chunks, each cleared first by the provider's guards
(dispatcher/delivery/guards.py): its circuit breaker, then its account's rate bucket. What they
refuse is put back without counting as a try: due later when paced, and while the circuit is open
either sent on the subscriber's next working channel (recorded as a fallback) or held until the
probe.

Just before sending, a message is dropped when a newer update of the same incident is on its way
to (or has reached) the same person: coalesced updates and those held by quiet hours go out as
the latest state once, never as a replay of stale ones (SUPERSEDED).

What happens after a failure is decided here from the adapter's classification alone: transient
goes back to the queue with a growing delay until `delivery_attempts` sends, then falls back;
permanent falls back at once to the subscriber's next channel, recording both rows. `fall_back`
is also what a provider's "undelivered" receipt uses (dispatcher/delivery/receipts.py).
"""

from __future__ import annotations

import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from sqlalchemy import and_, bindparam, case, func, or_, select, update
from sqlalchemy.orm import Session

from channels.base import Channel, Message, Outcome
from dispatcher.delivery.guards import Budget, Gate, Guards
from dispatcher.delivery.registry import ChannelRegistry
from dispatcher.links import LinkPurpose, Links
from dispatcher.logs import log_attempt
from dispatcher.models import Audience, DeliveryStatus, FailureKind, FailureReason
from dispatcher.policy.audience import Preferences, address_of, next_channel
from dispatcher.render.messages import render
from dispatcher.render.shared import Shared, render_shared, shared_key
from dispatcher.render.templates import RenderError
from dispatcher.render.views import IncidentView, RecipientView, UpdateView
from dispatcher.settings import Settings
from dispatcher.store import (
    Delivery,
    Incident,
    Store,
    Subscriber,
    Update,
    insert_ignoring_duplicates,
    utcnow,
)
from dispatcher.subscribers.suppressions import Address, suppress, suppressed

log = logging.getLogger(__name__)

_T = TypeVar("_T")


@dataclass
class SendResult:
    """What the queue must do next: send the fallbacks now, and `retries` after `retry_in_s`."""

    sent: int = 0
    fallbacks: list[int] = field(default_factory=list)
    retries: list[int] = field(default_factory=list)  # transient failures, and rows held back
    retry_in_s: float | None = None  # when every one of `retries` is due (a task sooner
    # than a row's due time would find it not yet due and leave it to the sweep)
    held: int = 0  # put back without counting as a try: paced, or the provider's circuit open

    def later(self, delivery_id: int, delay_s: float) -> None:
        self.retries.append(delivery_id)
        self.retry_in_s = max(delay_s, self.retry_in_s or 0.0)


@dataclass(frozen=True)
class Skipped:
    """Not sent, on purpose, decided just before sending: the recipient opted out or was
    removed (SUPPRESSED), or a newer update of the same incident is on its way to them or has
    reached them (SUPERSEDED: coalescing and quiet hours send the latest state, not a replay)."""

    key: int
    status: DeliveryStatus
    why: str


OPTED_OUT = "recipient opted out or was removed before sending"
NEWER_UPDATE = "a newer update of this incident was sent to them instead"
# A newer update counts as "on its way" in these states (a fell-back row has a successor row).
LIVE_STATUSES = (
    DeliveryStatus.QUEUED,
    DeliveryStatus.SENDING,
    DeliveryStatus.SENT,
    DeliveryStatus.DELIVERED,
)


class DeliveryKey(Protocol):
    """What `fall_back` reads of the delivery it replaces: an ORM row, or a claimed one."""

    @property
    def id(self) -> int: ...
    @property
    def update_id(self) -> int | None: ...
    @property
    def channel(self) -> str: ...
    @property
    def recipient(self) -> str: ...
    @property
    def priority(self) -> int: ...


class Person(Preferences, Protocol):
    """What `fall_back` reads of a subscriber (and `address_of` their addresses): an ORM row,
    or a claimed delivery's."""

    @property
    def id(self) -> int: ...


@dataclass(frozen=True, slots=True)
class _ClaimedDelivery:
    """The columns of a claimed row that do not change while it is sent (`DeliveryKey`)."""

    id: int
    update_id: int
    channel: str
    recipient: str
    priority: int


@dataclass(frozen=True, slots=True)
class _ClaimedSubscriber:
    """The subscriber columns sending reads (`Person`, and the address columns by name):
    plain values, as building an ORM object per recipient cost more than rendering for them."""

    id: int
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
    unsubscribed_at: datetime | None


# Selected in the dataclasses' field order, so a row's slice builds one.
_DELIVERY_COLUMNS = tuple(getattr(Delivery, f.name) for f in fields(_ClaimedDelivery))
_SUBSCRIBER_COLUMNS = tuple(getattr(Subscriber, f.name) for f in fields(_ClaimedSubscriber))


@dataclass(frozen=True)
class _Claimed:
    delivery: _ClaimedDelivery
    update: Update
    incident: Incident
    subscriber: _ClaimedSubscriber | None


@dataclass(frozen=True)
class _Context:
    store: Store
    registry: ChannelRegistry
    settings: Settings
    links: Links
    guards: Guards
    # One rendering per (channel, update, language, zone, links) for the whole batch, shared by
    # its recipients (dispatcher/render/shared.py `render_shared`); None: render each on its own.
    renders: dict[tuple[object, ...], Shared | RenderError | None] = field(default_factory=dict)


def send_batch(
    store: Store,
    registry: ChannelRegistry,
    settings: Settings,
    links: Links,
    delivery_ids: Sequence[int],
    *,
    guards: Guards,
) -> SendResult:
    claimed = _claim(store, delivery_ids, settings.lease_s)
    result = SendResult()
    if not claimed:
        return result
    budget = Budget(time.monotonic() + settings.lease_s / 2, settings.pace_max_wait_s)
    context = _Context(store, registry, settings, links, guards)
    by_channel: dict[str, list[_Claimed]] = defaultdict(list)
    for item in _load(store, claimed):
        by_channel[item.delivery.channel].append(item)
    for channel_name, items in by_channel.items():
        _send_chunks(context, channel_name, items, budget, result)
    return result


# A row being reclaimed (its lease ran out) that its holder had handed to the provider.
_LOST_IN_FLIGHT = and_(
    Delivery.status == DeliveryStatus.SENDING, Delivery.in_flight_since.is_not(None)
)


def _claim(store: Store, delivery_ids: Sequence[int], lease_s: float) -> list[int]:
    """Atomically take the rows that are due, or whose holder's lease ran out; such a row that
    its holder had handed to the provider is counted (`lease_expiries`): it may have gone."""
    now = utcnow()
    claim = (
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
            in_flight_since=None,
            updated_at=now,
        )
        .returning(Delivery.id)
    )
    with store.session() as session:
        # On the connection, as Core: through the session, the ORM would also look for the rows
        # among its objects, and a new session holds none.
        claimed = session.connection().scalars(claim).all()
    return list(claimed)


def _load(store: Store, delivery_ids: list[int]) -> list[_Claimed]:
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
                .where(Update.id.in_({row.update_id for row in rows}))
            )
        }
    claimed: list[_Claimed] = []
    for row in rows:
        delivery = _ClaimedDelivery(*row[:split])
        found = updates.get(delivery.update_id)
        if found is None:  # as the inner join it replaces: never, with the foreign key
            continue
        subscriber = _ClaimedSubscriber(*row[split:]) if row[split] is not None else None
        claimed.append(_Claimed(delivery, found[0], found[1], subscriber))
    return claimed


def _send_chunks(
    context: _Context,
    channel_name: str,
    items: list[_Claimed],
    budget: Budget,
    result: SendResult,
) -> None:
    """Send one channel's share in the chunks its guards allow, recording each chunk as soon as
    it is answered, so a crash leaves at most one chunk's outcome unknown.

    A chunk is prepared (opt-outs checked again, newer updates looked for, messages rendered)
    before the guards are asked, so its requests leave as soon as the rate bucket grants them:
    asked first, a cold process's first chunk (templates compiled, the adapter built) reached the
    provider a quarter of a second after its grant, together with the next grant's chunk. Only
    messages to send take tokens; what is skipped is recorded with the chunk."""
    channel = context.registry.get(channel_name)
    pending = items
    while pending:
        window = pending[: context.guards.chunk_size(channel_name, len(pending))]
        outcomes, messages = _prepare(context, channel, window)
        sending: list[Message] = []
        if messages:
            gate = context.guards.gate(channel_name, len(messages), budget)
            if not gate.take:
                _hold(context, pending, gate, result)
                return
            sending = messages[: gate.take]
        decided = {message.key for message in sending} | outcomes.keys()
        chunk = [item for item in window if item.delivery.id in decided]
        pending = [i for i in window if i.delivery.id not in decided] + pending[len(window) :]
        if sending:
            _mark_in_flight(context.store, [message.key for message in sending])
            outcomes.update((answer.key, answer) for answer in channel.send(sending))
        context.guards.report(channel_name, outcomes.values())
        circuit_open = any(
            isinstance(o, Outcome) and o.failure is FailureKind.TRANSIENT for o in outcomes.values()
        ) and not context.guards.usable(channel_name)
        with context.store.session() as session:
            rows = _recorded_rows(session, chunk)
            for item in chunk:
                outcome = outcomes[item.delivery.id]
                row = rows[item.delivery.id]
                _record(session, context, row, item, outcome, circuit_open, result)
                _log(context, item, row, outcome)
            _write(session, rows.values())


class _Row:
    """One delivery row while its outcome is recorded: read fresh when its chunk is answered
    (`_recorded_rows`), then read and set by `_record` as the ORM object it replaces would be.
    What is set is kept in `changes` and written for the whole chunk by `_write`: loading ORM
    objects and flushing one UPDATE per row was most of what recording cost."""

    id: int
    channel: str
    status: DeliveryStatus
    sends: int
    attempts: int
    provider_id: str | None
    last_error: str | None
    # Only ever set here (reading them before would raise AttributeError):
    error_reason: FailureReason | None
    sent_at: datetime | None
    receipt_due_at: datetime | None
    due_at: datetime
    lease_until: datetime | None
    in_flight_since: datetime | None

    # What `_record` reads of a row, and `_log` reports: columns in the constructor's order.
    COLUMNS = (
        Delivery.id,
        Delivery.channel,
        Delivery.status,
        Delivery.sends,
        Delivery.attempts,
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


def _recorded_rows(session: Session, chunk: list[_Claimed]) -> dict[int, _Row]:
    """The chunk's rows as they are now (a receipt may have come, another worker may have taken
    one back), in one SELECT of the columns recording (or putting back) reads."""
    ids = [item.delivery.id for item in chunk]
    query = select(*_Row.COLUMNS).where(Delivery.id.in_(ids))
    return {row[0]: _Row(*row) for row in session.connection().execute(query)}


def _write(session: Session, rows: Iterable[_Row]) -> None:
    """Write what `_record` set on each row: one executemany UPDATE by primary key per set of
    columns changed (a chunk mostly has one: all sent), `updated_at` set as the ORM would.

    A row recorded as sent keeps DELIVERED if the provider's receipt was recorded in the
    meantime, like `_record_sent` does when the receipt came before the row was read: its status
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


def _log(context: _Context, item: _Claimed, recorded: _Row, outcome: Outcome | Skipped) -> None:
    """One structured line per delivery attempt (dispatcher/logs.py masks the address)."""
    field = context.registry.factory(recorded.channel).address_field
    log_attempt(
        incident_id=item.incident.id,
        update_id=item.delivery.update_id,
        delivery_id=recorded.id,
        channel=recorded.channel,
        status=recorded.status,
        to=address_of(item.subscriber, field) if item.subscriber and field else None,
        provider_id=recorded.provider_id,
        duration_s=outcome.duration_s if isinstance(outcome, Outcome) else None,
        attempts=recorded.attempts,
        reason=None if isinstance(outcome, Skipped) or outcome.ok else outcome.reason,
        error=recorded.last_error,
    )


def _mark_in_flight(store: Store, delivery_ids: list[int]) -> None:
    """From here until its outcome is recorded, a crash leaves it unknown whether the provider
    has the message: mark it, so a reclaim after the lease counts exactly those."""
    with store.session() as session:
        session.connection().execute(  # as Core: the session holds no objects to update
            update(Delivery).where(Delivery.id.in_(delivery_ids)).values(in_flight_since=utcnow())
        )


def _hold(context: _Context, items: list[_Claimed], gate: Gate, result: SendResult) -> None:
    """Put what the guards refused back, not counted as a try: on the subscriber's next working
    channel while the provider's circuit is open, else queued until the gate says."""
    now = utcnow()
    with context.store.session() as session:
        # One SELECT and one bulk UPDATE, as when recording: paced, most of a batch comes back.
        rows = _recorded_rows(session, items)
        for item in items:
            delivery = rows[item.delivery.id]
            delivery.sends -= 1  # this round sent nothing
            delivery.lease_until = None
            if gate.circuit_open and _divert(session, context, delivery, item, result, gate.reason):
                continue
            delivery.status = DeliveryStatus.QUEUED
            delivery.due_at = now + timedelta(seconds=gate.wait_s)
            result.held += 1
            result.later(delivery.id, gate.wait_s)
        _write(session, rows.values())
    log.info("%s: %d deliveries put back (%s)", items[0].delivery.channel, len(items), gate.reason)


def _prepare(
    context: _Context, channel: Channel, items: list[_Claimed]
) -> tuple[dict[int, Outcome | Skipped], list[Message]]:
    """The messages to send of `items`, and the outcomes of those that will not be sent (opted
    out, superseded by a newer update, unrenderable), by delivery id."""
    field = channel.address_field
    with context.store.session() as session:  # opt-outs are checked again now, not only when queued
        blocked = suppressed(
            session, [(field, address_of(i.subscriber, field) or "") for i in items if field]
        )
        newest = _newest_updates(session, items)
    outcomes: dict[int, Outcome | Skipped] = {}
    messages: list[Message] = []
    for item in items:
        if newest.get((item.incident.id, item.delivery.recipient), 0) > item.update.id:
            outcomes[item.delivery.id] = Skipped(
                item.delivery.id, DeliveryStatus.SUPERSEDED, NEWER_UPDATE
            )
            continue
        prepared = _message(channel, context, item, blocked)
        if isinstance(prepared, Message):
            messages.append(prepared)
        else:
            outcomes[item.delivery.id] = prepared
    return outcomes, messages


def _newest_updates(session: Session, items: list[_Claimed]) -> dict[tuple[int, str], int]:
    """For each (incident, recipient) of the chunk, the newest public update with a live
    delivery to them, where it is newer than the chunk's oldest: one query per chunk.

    Only a newer update can supersede a message, so only those are read: while the chunk's
    update is the latest (nearly always) the query reads no delivery at all, where reading every
    live one of the incident for every chunk made a fan-out's cost grow with its square."""
    public = [i for i in items if i.update.audience is Audience.EVERYONE]
    if not public:
        return {}
    rows = session.execute(
        select(Update.incident_id, Delivery.recipient, func.max(Update.id))
        .join(Update, Delivery.update_id == Update.id)
        .where(
            Update.id > min(i.update.id for i in public),
            Update.incident_id.in_({i.incident.id for i in public}),
            Delivery.recipient.in_({i.delivery.recipient for i in public}),
            Update.audience == Audience.EVERYONE,
            Delivery.status.in_(LIVE_STATUSES),
        )
        .group_by(Update.incident_id, Delivery.recipient)
    ).all()
    return {(incident_id, recipient): newest for incident_id, recipient, newest in rows}


def _message(
    channel: Channel, context: _Context, item: _Claimed, blocked: set[Address]
) -> Message | Outcome | Skipped:
    """Render one message, or say why it cannot be sent (checked now, not only when queued)."""
    links = context.links
    delivery, subscriber = item.delivery, item.subscriber
    recipient: RecipientView | None = None
    to = channel.name
    secret: str | None = None
    unsubscribe_url: str | None = None
    if channel.address_field is not None:
        address = address_of(subscriber, channel.address_field) if subscriber else None
        if (
            subscriber is None
            or subscriber.unsubscribed_at is not None
            or (channel.address_field, address) in blocked
        ):
            return Skipped(delivery.id, DeliveryStatus.SUPPRESSED, OPTED_OUT)
        if not address:
            return Outcome(
                key=delivery.id,
                failure=FailureKind.PERMANENT,
                error=f"{channel.name}: no {channel.address_field} on file",
                attempts=0,
                reason=FailureReason.RENDER,
            )
        to = address
        secret = subscriber.webhook_secret
        unsubscribe_url = links.url(LinkPurpose.UNSUBSCRIBE, subscriber.id)
        recipient = RecipientView(
            name=subscriber.name,
            locale=subscriber.locale,
            manage_url=links.url(LinkPurpose.MANAGE, subscriber.id),
            unsubscribe_url=unsubscribe_url,
            timezone=subscriber.timezone,
        )
    substitutions: dict[str, str] = {}
    try:
        shared = _shared(channel, context, item, recipient)
        if shared is None:
            rendered = _render_with(render, channel, context, item, recipient)
        elif channel.substitutes:  # the provider fills in each recipient's own values
            rendered, substitutions = shared.rendered, shared.substitutions(recipient)
        else:
            rendered = shared.personal(recipient)
    except RenderError as exc:
        return Outcome(
            key=delivery.id,
            failure=FailureKind.PERMANENT,
            error=str(exc),
            attempts=0,
            reason=FailureReason.RENDER,
        )
    return Message(
        key=delivery.id,
        to=to,
        text=rendered.text,
        subject=rendered.subject,
        html=rendered.html,
        payload=rendered.payload,
        secret=secret,
        unsubscribe_url=unsubscribe_url,
        substitutions=substitutions,
    )


def _shared(
    channel: Channel, context: _Context, item: _Claimed, recipient: RecipientView | None
) -> Shared | None:
    """The batch's one rendering for everyone like `recipient` (made on first use, failures
    included: a template that fails for one fails for all of them); None: not shareable."""
    key = (channel.name, item.update.id, _internal(item), shared_key(recipient))
    if key not in context.renders:
        try:
            context.renders[key] = _render_with(render_shared, channel, context, item, recipient)
        except RenderError as exc:
            context.renders[key] = exc
    found = context.renders[key]
    if isinstance(found, RenderError):
        raise found
    return found


def _render_with(
    function: Callable[..., _T],
    channel: Channel,
    context: _Context,
    item: _Claimed,
    recipient: RecipientView | None,
) -> _T:
    """`render` or `render_shared` of this delivery's update for `recipient` on `channel`."""
    settings = context.settings
    return function(
        channel.name,
        channel.limits,
        incident_view(item.incident, settings),
        update_view(item.update, item.incident, internal=_internal(item)),
        recipient,
        company_name=settings.company_name,
        support_url=settings.support_url,
        sms_max_segments=settings.sms_max_segments,
    )


def _internal(item: _Claimed) -> bool:
    """The team sees the update's internal note; customers never do."""
    return item.subscriber is not None and item.subscriber.internal


def incident_view(incident: Incident, settings: Settings) -> IncidentView:
    return IncidentView(
        id=incident.id,
        title=incident.title,
        severity=incident.severity,
        state=incident.state,
        components=tuple(incident.components),
        started_at=incident.started_at,
        resolved_at=incident.resolved_at,
        url=f"{settings.public_url.rstrip('/')}/incidents/{incident.id}",
    )


def update_view(update_row: Update, incident: Incident, *, internal: bool = False) -> UpdateView:
    """The update as a recipient sees it: the team also sees the internal note, which customers
    never do; the incident's current ETA travels with every update."""
    message = update_row.message
    if internal and update_row.internal_note:
        message = f"{message or ''}\n[Internal note] {update_row.internal_note}".strip()
    return UpdateView(
        id=update_row.id,
        state=update_row.state,
        message=message,
        created_at=update_row.created_at,
        next_update_at=update_row.next_update_at,
        eta=incident.eta,
    )


def _record(
    session: Session,
    context: _Context,
    delivery: _Row,
    item: _Claimed,
    outcome: Outcome | Skipped,
    circuit_open: bool,
    result: SendResult,
) -> None:
    """Write one outcome onto `delivery` (the row as read, written by `_write`)."""
    delivery.lease_until = None
    delivery.in_flight_since = None
    if isinstance(outcome, Skipped):
        delivery.status = outcome.status
        delivery.last_error = outcome.why
        return
    delivery.attempts += outcome.attempts
    if outcome.ok:
        _record_sent(delivery, outcome, context.settings)
        result.sent += 1
        return
    delivery.last_error = outcome.error
    # Kept after a later success: metrics count why sends failed, not only what finally failed.
    delivery.error_reason = outcome.reason
    _suppress_if_asked(session, context.registry, item, outcome)
    settings = context.settings
    if outcome.failure is FailureKind.TRANSIENT and delivery.sends < settings.delivery_attempts:
        reason = f"{delivery.channel}: provider failing, circuit open"
        if circuit_open and _divert(session, context, delivery, item, result, reason):
            return
        delay = (
            settings.breaker_open_s
            if circuit_open
            else _backoff(settings, delivery.sends, outcome.retry_after_s)
        )
        delivery.status = DeliveryStatus.QUEUED
        delivery.due_at = utcnow() + timedelta(seconds=delay)
        result.later(delivery.id, delay)
        return
    if not _divert(session, context, delivery, item, result):
        delivery.status = DeliveryStatus.FAILED


def _record_sent(delivery: _Row, outcome: Outcome, settings: Settings) -> None:
    now = utcnow()
    delivery.provider_id = outcome.provider_id
    delivery.sent_at = now
    delivery.last_error = None
    if delivery.status is DeliveryStatus.DELIVERED:
        return  # the provider's receipt arrived before this record
    delivery.status = DeliveryStatus.SENT
    if settings.receipt_timeout_s and delivery.channel in settings.receipt_channels:
        delivery.receipt_due_at = now + timedelta(seconds=settings.receipt_timeout_s)


def _suppress_if_asked(
    session: Session, registry: ChannelRegistry, item: _Claimed, outcome: Outcome
) -> None:
    """The provider said never to send to this address again (STOP, 410 Gone)."""
    if outcome.suppress is None or item.subscriber is None:
        return
    field = registry.factory(item.delivery.channel).address_field
    address = address_of(item.subscriber, field)
    if field and address:
        suppress(
            session,
            field,
            address,
            outcome.suppress,
            actor=f"provider:{item.delivery.channel}",
            subscriber_id=item.subscriber.id,
        )


def _backoff(settings: Settings, sends: int, retry_after_s: float | None) -> float:
    """Exponential with jitter, so a provider that comes back is not hit by every retry at once."""
    base = min(settings.delivery_backoff_max_s, settings.delivery_backoff_s * 2.0 ** (sends - 1))
    return max(base * random.uniform(0.8, 1.2), retry_after_s or 0.0)


def _divert(
    session: Session,
    context: _Context,
    delivery: _Row,
    item: _Claimed,
    result: SendResult,
    reason: str | None = None,
) -> bool:
    """Mark `delivery` fell back and queue its fallback, if the subscriber has a working next
    channel; False (nothing changed) when there is none."""
    fallback_id = fall_back(
        session, context.registry, item.delivery, item.subscriber, context.guards.usable
    )
    if fallback_id is None:
        return False
    delivery.status = DeliveryStatus.FELL_BACK
    if reason:
        delivery.last_error = reason
    result.fallbacks.append(fallback_id)
    return True


def _any_channel(_: str) -> bool:
    return True


def fall_back(
    session: Session,
    registry: ChannelRegistry,
    delivery: DeliveryKey,
    subscriber: Person | None,
    usable: Callable[[str], bool] = _any_channel,
) -> int | None:
    """Queue the update on the subscriber's next channel that is `usable` (its provider's
    circuit not open) and has a usable address; the new row's id, or None when there is none.

    Idempotent: a fallback row that already exists (a duplicated task, a repeated receipt) is
    found, not written twice."""
    if subscriber is None:
        return None
    blocked = suppressed(
        session,
        [(field, address_of(subscriber, field) or "") for field in ("email", "phone", "webhook")],
    )
    channel = next_channel(subscriber, registry, after=delivery.channel, blocked=blocked)
    while channel is not None and not usable(channel):
        channel = next_channel(subscriber, registry, after=channel, blocked=blocked)
    if channel is None:
        return None
    now = utcnow()
    created: int | None = session.scalar(
        insert_ignoring_duplicates(session, Delivery)
        .values(
            update_id=delivery.update_id,
            subscriber_id=subscriber.id,
            channel=channel,
            recipient=delivery.recipient,
            status=DeliveryStatus.QUEUED,
            priority=delivery.priority,
            fallback_of=delivery.id,
            due_at=now,
            created_at=now,
            updated_at=now,
        )
        .returning(Delivery.id)
    )
    if created is not None:
        return created
    existing: int | None = session.scalar(
        select(Delivery.id).where(
            Delivery.update_id == delivery.update_id,
            Delivery.channel == channel,
            Delivery.recipient == delivery.recipient,
        )
    )
    return existing
