"""Fan-out: one Delivery row per (update, channel, recipient), then batches of their ids.

Idempotent by construction: rows are inserted with ON CONFLICT DO NOTHING on the unique delivery
key, so a fan-out task that runs twice (a redelivered message, the sweep racing the first run)
writes nothing new and the batches it hands on find their rows already claimed or done.

Streamed, so that a large audience is told at once and in order: subscribers are read a chunk at
a time, each chunk's rows are committed, and their batches handed on straight away, while the
next chunk is still being read. The first message (the public post, then the key accounts) leaves
while the last rows are not yet written, and memory is that of one chunk however many people are
told. `fanned_out_at` is set once every row is written; a fan-out cut short is run again by the
sweep and writes only what is missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from more_itertools import chunked
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dispatcher.delivery.registry import ChannelRegistry
from dispatcher.models import Audience, DeliveryStatus, UpdateKind, WaitReason
from dispatcher.policy.audience import Recipient, public_was_told, recipients
from dispatcher.policy.pacing import Pacing, carries, update_kind
from dispatcher.store import (
    PUBLIC_RECIPIENT,
    Delivery,
    Incident,
    Store,
    Update,
    insert_ignoring_duplicates,
    utcnow,
)

INSERT_CHUNK = 1000
BROADCAST_PRIORITY = 100  # the public post goes out before the first subscriber message

Written = tuple[int, str, int]  # a delivery row: id, channel, priority


def fan_out(
    store: Store, registry: ChannelRegistry, update_id: int, batch_size: int
) -> Iterator[list[int]]:
    """Write the deliveries of one update (once), handing on their ids in send batches as each
    chunk is committed: every batch a single channel, the highest priority first within a chunk
    (so the public post first of all). An update fanned out before yields what is still queued.

    Batches of the base priority are held back until they are full (or the audience ends), so a
    provider that takes 1,000 recipients a request gets 1,000; those of a higher priority (key
    accounts, the public post), and everything of the first chunk, go on with their chunk."""
    with store.session() as reader:
        update_row = reader.get(Update, update_id)
        if update_row is None:
            return
        if update_row.fanned_out_at is None:
            incident = reader.get_one(Incident, update_row.incident_id)
            batches = _Batcher(registry, batch_size)
            complete = True
            rows = _rows(reader, incident, update_row, registry)
            for number, chunk in enumerate(chunked(rows, INSERT_CHUNK)):
                with store.session() as writer:
                    written = _insert_deliveries(writer, chunk)
                complete = complete and len(written) == len(chunk)
                yield from batches.add(written, flush_all=number == 0)
            yield from batches.flush()
            with store.session() as writer:
                writer.execute(
                    update(Update).where(Update.id == update_id).values(fanned_out_at=utcnow())
                )
            if complete:
                return
    # Fanned out before, or partly (an earlier run was cut short): whatever is still queued.
    yield from queued_batches(store, registry, update_id, batch_size)


def queued_batches(
    store: Store, registry: ChannelRegistry, update_id: int, batch_size: int
) -> list[list[int]]:
    """The update's deliveries still waiting, grouped by channel into batches the adapter takes,
    highest priority first."""
    with store.session() as session:
        rows = session.execute(
            select(Delivery.id, Delivery.channel, Delivery.priority)
            .where(Delivery.update_id == update_id, Delivery.status == DeliveryStatus.QUEUED)
            .order_by(Delivery.priority.desc(), Delivery.id)
        ).all()
    batches = _Batcher(registry, batch_size)
    return [*batches.add([(row[0], row[1], row[2]) for row in rows]), *batches.flush()]


class _Batcher:
    """Groups written rows into batches of one channel and one priority, the highest first."""

    def __init__(self, registry: ChannelRegistry, batch_size: int) -> None:
        self._registry = registry
        self._batch_size = batch_size
        self._open: dict[tuple[int, str], list[int]] = {}
        self._lowest: int | None = None

    def add(self, rows: Iterable[Written], *, flush_all: bool = True) -> Iterator[list[int]]:
        """Full batches, and with `flush_all` (or above the lowest priority seen) the rest."""
        for delivery_id, channel, priority in rows:
            self._open.setdefault((priority, channel), []).append(delivery_id)
            self._lowest = priority if self._lowest is None else min(self._lowest, priority)
        for key in sorted(self._open, key=lambda k: -k[0]):
            ids = self._open[key]
            size = min(self._batch_size, self._registry.factory(key[1]).max_batch)
            while len(ids) >= size:
                yield ids[:size]
                del ids[:size]
            if ids and (flush_all or key[0] > (self._lowest or 0)):
                yield list(ids)
                ids.clear()
            if not ids:
                del self._open[key]

    def flush(self) -> Iterator[list[int]]:
        return self.add((), flush_all=True)


@dataclass(frozen=True)
class Planned:
    """One message an update's fan-out writes: to a subscriber, or the public post (None)."""

    channel: str
    recipient: Recipient | None
    priority: int
    due: datetime
    reason: WaitReason | None = None


def planned(
    session: Session,
    incident: Incident,
    update_row: Update,
    registry: ChannelRegistry,
    *,
    unscoped_view: bool = False,
) -> Iterator[Planned]:
    """What the fan-out of `update_row` writes, streamed, in the order it writes it: the public
    post (unless the incident is a draft or private, or the update is not for everyone), then
    every recipient with the moment pacing lets their message go. The fan-out and the dry run
    (dispatcher/delivery/reach.py) both read this, so a preview counts what a send writes."""
    settings = registry.settings
    now = utcnow()
    kind = update_kind(session, update_row)
    pacing = Pacing.load(
        session,
        incident,
        kind,
        now=now,
        coalesce_window_s=settings.coalesce_window_s,
        hourly_cap=settings.hourly_cap,
    )

    @cache  # asked for each subscriber's channels in turn; the answer is one per channel
    def channel_carries(channel: str, first_time: bool = False) -> bool:
        # Told for the first time (the scope widened to them): the incident opens for them.
        return carries(settings.cadence, channel, UpdateKind.OPENED if first_time else kind)

    # A draft, a private incident, a reminder, a review: not for the public post; a change to
    # what the public was told (Audience.TOLD): only if it was.
    public = (
        not incident.draft
        and not incident.private
        and (
            update_row.audience is Audience.EVERYONE
            or (update_row.audience is Audience.TOLD and public_was_told(session, incident))
        )
    )
    if public:
        for channel in registry.broadcast_channels():
            if channel_carries(channel):
                yield Planned(channel, None, BROADCAST_PRIORITY, now)
    for recipient in recipients(
        session,
        incident,
        registry,
        channel_carries,
        Audience(update_row.audience),
        update=update_row,
        unscoped=settings.unscoped,
        unscoped_view=unscoped_view,
    ):
        due, reason = pacing.due_at(
            str(recipient.subscriber_id),
            recipient.channel,
            recipient.quiet_start,
            recipient.quiet_end,
            recipient.timezone,
            internal=recipient.internal,
        )
        yield Planned(recipient.channel, recipient, recipient.priority, due, reason)


def _rows(
    session: Session, incident: Incident, update_row: Update, registry: ChannelRegistry
) -> Iterator[dict[str, Any]]:
    for item in planned(session, incident, update_row, registry):
        person = item.recipient
        yield _row(
            update_row.id,
            person.subscriber_id if person else None,
            item.channel,
            str(person.subscriber_id) if person else PUBLIC_RECIPIENT,
            item.priority,
            item.due,
            item.reason,
        )


def _row(
    update_id: int,
    subscriber_id: int | None,
    channel: str,
    recipient: str,
    priority: int,
    due: datetime,
    reason: WaitReason | None = None,
) -> dict[str, Any]:
    now = utcnow()
    return {
        "update_id": update_id,
        "subscriber_id": subscriber_id,
        "channel": channel,
        "recipient": recipient,
        "status": DeliveryStatus.QUEUED,
        "priority": priority,
        "due_at": due,
        "wait_reason": reason,
        "created_at": now,
        "updated_at": now,
    }


def _insert_deliveries(session: Session, rows: list[dict[str, Any]]) -> list[Written]:
    """Insert one chunk in one statement, skipping rows whose delivery key already exists;
    returns the rows actually written. On the session's connection, as Core: the ORM's bulk
    INSERT would process every row again for objects nobody builds."""
    result = session.connection().execute(
        insert_ignoring_duplicates(session, Delivery).returning(
            Delivery.id, Delivery.channel, Delivery.priority
        ),
        rows,
    )
    return [(row[0], row[1], row[2]) for row in result]
