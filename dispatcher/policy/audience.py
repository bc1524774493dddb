"""Which subscribers an update concerns, and on which channel each hears first.

Streams plain rows (not ORM objects) a chunk at a time, so a fan-out to 100,000 people costs the
memory of one chunk. Filtering on JSON lists is done here in Python, the same way on SQLite and
PostgreSQL; a scoped incident's audience is chosen by the database, through the index on the
subscribers' attributes (dispatcher/policy/scope.py), so telling 10% of the subscribers reads
10% of them.

A scope may change on a later update. Whoever was told of the incident before still hears of it
however the scope changed (a narrowed scope never silently drops anyone), and a subscriber who
is told for the first time on such an update is `newcomer`: their message carries the story so
far, and reaches them on every channel that carries an incident's opening.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import ColumnElement, Select, exists, false, or_, select
from sqlalchemy.orm import Session

from dispatcher.delivery.registry import ChannelRegistry
from dispatcher.models import Audience, DeliveryStatus, Severity
from dispatcher.policy.scope import INCLUDE, sql_condition
from dispatcher.store import (
    ADDRESS_COLUMNS,
    CONFIRMATION_COLUMNS,
    PUBLIC_RECIPIENT,
    Delivery,
    Incident,
    Subscriber,
    SubscriberAttribute,
    Update,
)
from dispatcher.subscribers.suppressions import Address, all_suppressed

STREAM_CHUNK = 1000


class Preferences(Protocol):
    """What choosing a subscriber's channel reads of them (and their addresses, by the adapter's
    `address_field`): an ORM object, a plain row, or a claimed delivery's subscriber."""

    @property
    def channels(self) -> Sequence[str]: ...


class SubscriberFields(Preferences, Protocol):
    """What the audience rules read of a subscriber: an ORM object or a plain row."""

    @property
    def components(self) -> Sequence[str]: ...
    @property
    def min_severity(self) -> str: ...
    @property
    def internal(self) -> bool: ...


@dataclass(frozen=True)
class Recipient:
    subscriber_id: int
    channel: str
    priority: int
    quiet_start: str | None
    quiet_end: str | None
    timezone: str
    internal: bool  # the team: never held by coalescing or the hourly cap
    values: tuple[str | None, ...] = ()  # their value of each key of the scope, in key order
    newcomer: bool = False  # first told of the incident on this update (its scope changed)


# What counts as told of an incident: the provider has the message.
TOLD = (DeliveryStatus.SENT, DeliveryStatus.DELIVERED)
Carries = Callable[[str, bool], bool]  # (channel, told for the first time) -> carried?


def _every(_channel: str, _first: bool) -> bool:
    return True


def address_of(subscriber: object, address_field: str | None) -> str | None:
    """The address a channel sends to, by the adapter's declared `address_field`."""
    column = ADDRESS_COLUMNS.get(address_field or "")
    return getattr(subscriber, column) if column else None


def usable_address(
    subscriber: object, address_field: str | None, blocked: Collection[Address] = ()
) -> str | None:
    """The address if we may send to it: on file, confirmed where that is needed, not
    suppressed."""
    address = address_of(subscriber, address_field)
    if not address or address_field is None:
        return None
    confirmation = CONFIRMATION_COLUMNS.get(address_field)
    if confirmation is not None and getattr(subscriber, confirmation) is None:
        return None
    if (address_field, address) in blocked:
        return None
    return address


def concerns(subscriber: SubscriberFields, incident: Incident) -> bool:
    """The team hears of everything; a subscriber of an incident on a component they follow, at
    their severity or above, once it is published (not a draft)."""
    if subscriber.internal:
        return True
    if incident.draft:
        return False
    if not Severity(incident.severity).at_least(Severity(subscriber.min_severity)):
        return False
    return not subscriber.components or bool(set(subscriber.components) & set(incident.components))


def next_channel(
    subscriber: Preferences,
    registry: ChannelRegistry,
    after: str | None = None,
    blocked: Collection[Address] = (),
    carries: Callable[[str], bool] = lambda _channel: True,
) -> str | None:
    """The subscriber's first usable channel after `after` (or their first one): installed, with
    a usable address, and carrying this kind of update (an SMS-first subscriber hears of an
    intermediate update by email rather than not at all). The same rule picks the first channel
    and the fallback."""
    preferences = list(subscriber.channels)
    start = preferences.index(after) + 1 if after in preferences else 0
    for name in preferences[start:]:
        factory = registry.factories.get(name)
        if (
            factory is not None
            and carries(name)
            and usable_address(subscriber, factory.address_field, blocked)
        ):
            return name
    return None


def recipients(
    session: Session,
    incident: Incident,
    registry: ChannelRegistry,
    carries: Carries = _every,
    audience: Audience = Audience.EVERYONE,
    *,
    update: Update | None = None,
    unscoped: str = INCLUDE,
    unscoped_view: bool = False,
) -> Iterator[Recipient]:
    """Every active subscriber the incident concerns, with their first usable channel; higher
    tiers (key accounts, the team) get a higher send priority.

    `update` is the update being told (for who was told before it); `unscoped` is
    OUTAGE_UNSCOPED; `unscoped_view` lifts the scope (who would hear without it)."""
    severity_rank = Severity(incident.severity).rank
    blocked = all_suppressed(session)
    scope = {} if unscoped_view else dict(incident.scope or {})
    keys = sorted(scope)
    earlier = update is not None and _has_earlier(session, update)
    newcomer: ColumnElement[bool] = false()
    if update is not None and earlier and update.scope is not None:
        newcomer = _newcomer(incident, update)
    query = (
        select(
            Subscriber.id,
            Subscriber.channels,
            Subscriber.components,
            Subscriber.min_severity,
            Subscriber.internal,
            Subscriber.tier,
            Subscriber.email,
            Subscriber.phone,
            Subscriber.webhook_url,
            Subscriber.email_confirmed_at,
            Subscriber.phone_confirmed_at,
            Subscriber.quiet_start,
            Subscriber.quiet_end,
            Subscriber.timezone,
            newcomer.label("newcomer"),
            *(_value_of(key).label(f"scope_{n}") for n, key in enumerate(keys)),
        )
        .where(Subscriber.unsubscribed_at.is_(None))
        .order_by(Subscriber.tier.desc(), Subscriber.id)  # key accounts first, across everyone
        .execution_options(yield_per=STREAM_CHUNK)
    )
    if audience is Audience.INTERNAL:
        query = query.where(Subscriber.internal.is_(True))
    elif audience is Audience.NOTIFIED:
        query = query.where(Subscriber.id.in_(_notified(incident)))
    elif audience is Audience.TOLD:
        query = query.where(
            or_(Subscriber.internal.is_(True), Subscriber.id.in_(_notified(incident)))
        )
    elif scope:
        chosen = [Subscriber.internal.is_(True), sql_condition(scope, unscoped)]
        if earlier:  # a narrowed scope still reaches everyone told before
            chosen.append(Subscriber.id.in_(_told_before(incident)))
        query = query.where(or_(*chosen))
    cadence = {
        first: (lambda channel, first=first: carries(channel, first)) for first in (False, True)
    }
    # On the session's connection, as Core: plain rows, without the ORM's per-row handling.
    for row in session.connection().execute(query):
        if audience is Audience.EVERYONE and not concerns(row, incident):
            continue
        first = bool(row.newcomer)
        # The team hears of every update, whatever the channels' cadence.
        wanted = (lambda _channel: True) if row.internal else cadence[first]
        channel = next_channel(row, registry, blocked=blocked, carries=wanted)
        if channel is not None:
            yield Recipient(
                row.id,
                channel,
                priority(row.tier, severity_rank),
                row.quiet_start,
                row.quiet_end,
                row.timezone,
                row.internal,
                tuple(getattr(row, f"scope_{n}") for n in range(len(keys))),
                first,
            )


# A message counts as told once it is handed to the provider.
TOLD_STATUSES = (DeliveryStatus.SENDING, DeliveryStatus.SENT, DeliveryStatus.DELIVERED)


def _value_of(key: str) -> ColumnElement[str | None]:
    """The subscriber's value of `key`, or NULL (a lookup on the primary key)."""
    return (
        select(SubscriberAttribute.value)
        .where(SubscriberAttribute.subscriber_id == Subscriber.id, SubscriberAttribute.key == key)
        .scalar_subquery()
    )


def _has_earlier(session: Session, update: Update) -> bool:
    found = session.scalar(
        select(Update.id)
        .where(Update.incident_id == update.incident_id, Update.id < update.id)
        .limit(1)
    )
    return found is not None


def _told_before(incident: Incident) -> Select[int | None]:
    """Every subscriber with a message of the incident, sent or on its way."""
    return (
        select(Delivery.subscriber_id)
        .join(Update, Delivery.update_id == Update.id)
        .where(Update.incident_id == incident.id, Delivery.subscriber_id.is_not(None))
    )


def _newcomer(incident: Incident, update: Update) -> ColumnElement[bool]:
    """No earlier update of the incident reached the subscriber: told for the first time now."""
    return ~exists(
        select(Delivery.id)
        .join(Update, Delivery.update_id == Update.id)
        .where(
            Delivery.subscriber_id == Subscriber.id,
            Update.incident_id == incident.id,
            Update.id < update.id,
            Delivery.status.in_(TOLD),
        )
    )


def _notified(incident: Incident) -> Select[int | None]:
    """The subscribers who were told of the incident (a message handed over, sent or
    delivered); one whose message still waits has not heard of it."""
    return (
        select(Delivery.subscriber_id)
        .join(Update, Delivery.update_id == Update.id)
        .where(Update.incident_id == incident.id, Delivery.status.in_(TOLD_STATUSES))
        .distinct()
    )


def public_was_told(session: Session, incident: Incident) -> bool:
    """Whether the public post (a broadcast channel) carried any update of the incident."""
    found = session.scalar(
        select(Delivery.id)
        .join(Update, Delivery.update_id == Update.id)
        .where(
            Update.incident_id == incident.id,
            Delivery.recipient == PUBLIC_RECIPIENT,
            Delivery.status.in_(TOLD_STATUSES),
        )
        .limit(1)
    )
    return found is not None


def priority(tier: int, severity_rank: int) -> int:
    """Send order within the queue: tier first, then how severe the incident is."""
    return tier * 10 + severity_rank
