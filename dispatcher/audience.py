"""Which subscribers an update concerns, and on which channel each hears first.

Streams plain rows (not ORM objects) a chunk at a time, so a fan-out to 100,000 people costs the
memory of one chunk. Filtering on JSON lists is done here in Python, the same way on SQLite and
PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from dispatcher.models import Severity
from dispatcher.registry import ChannelRegistry
from dispatcher.store import ADDRESS_COLUMNS, Incident, Subscriber

STREAM_CHUNK = 1000


class SubscriberFields(Protocol):
    """What the audience rules read of a subscriber: an ORM object or a plain row."""

    @property
    def channels(self) -> Sequence[str]: ...
    @property
    def components(self) -> Sequence[str]: ...
    @property
    def min_severity(self) -> str: ...


@dataclass(frozen=True)
class Recipient:
    subscriber_id: int
    channel: str
    priority: int


def address_of(subscriber: object, address_field: str | None) -> str | None:
    """The address a channel sends to, by the adapter's declared `address_field`."""
    column = ADDRESS_COLUMNS.get(address_field or "")
    return getattr(subscriber, column) if column else None


def concerns(subscriber: SubscriberFields, incident: Incident) -> bool:
    """A subscriber hears of an incident on a component they follow, at their severity or above."""
    if not Severity(incident.severity).at_least(Severity(subscriber.min_severity)):
        return False
    return not subscriber.components or bool(set(subscriber.components) & set(incident.components))


def next_channel(
    subscriber: SubscriberFields, registry: ChannelRegistry, after: str | None = None
) -> str | None:
    """The subscriber's first usable channel after `after` (or their first one): installed, with
    an address on file. The same rule picks the first channel and the fallback."""
    preferences = list(subscriber.channels)
    start = preferences.index(after) + 1 if after in preferences else 0
    for name in preferences[start:]:
        factory = registry.factories.get(name)
        if factory is not None and address_of(subscriber, factory.address_field):
            return name
    return None


def recipients(
    session: Session, incident: Incident, registry: ChannelRegistry
) -> Iterator[Recipient]:
    """Every active, confirmed subscriber the incident concerns, with their first channel."""
    priority = Severity(incident.severity).rank
    query = (
        select(
            Subscriber.id,
            Subscriber.channels,
            Subscriber.components,
            Subscriber.min_severity,
            Subscriber.email,
            Subscriber.phone,
            Subscriber.webhook_url,
        )
        .where(Subscriber.unsubscribed_at.is_(None), Subscriber.confirmed.is_(True))
        .order_by(Subscriber.id)
        .execution_options(yield_per=STREAM_CHUNK)
    )
    for row in session.execute(query):
        if not concerns(row, incident):
            continue
        channel = next_channel(row, registry)
        if channel is not None:
            yield Recipient(row.id, channel, priority)
