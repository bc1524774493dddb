"""Fan-out: one Delivery row per (update, channel, recipient), then batches of their ids.

Idempotent by construction: rows are inserted with ON CONFLICT DO NOTHING on the unique delivery
key, so a fan-out task that runs twice (a redelivered message, the sweep racing the first run)
writes nothing new and the batches it hands on find their rows already claimed or done.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from more_itertools import chunked
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from dispatcher.audience import recipients
from dispatcher.models import Audience, DeliveryStatus
from dispatcher.pacing import Pacing, carries, update_kind
from dispatcher.registry import ChannelRegistry
from dispatcher.store import PUBLIC_RECIPIENT, Delivery, Incident, Store, Update, utcnow

INSERT_CHUNK = 1000
BROADCAST_PRIORITY = 100  # the public post goes out before the first subscriber message


def fan_out(
    store: Store, registry: ChannelRegistry, update_id: int, batch_size: int
) -> list[list[int]]:
    """Write the deliveries of one update (once) and return their queued ids in send batches,
    highest priority first, each batch a single channel."""
    with store.session() as session:
        update_row = session.get(Update, update_id)
        if update_row is None:
            return []
        if update_row.fanned_out_at is None:
            incident = session.get_one(Incident, update_row.incident_id)
            _insert_deliveries(
                session, store.dialect, _rows(session, incident, update_row, registry)
            )
            session.execute(
                update(Update).where(Update.id == update_id).values(fanned_out_at=utcnow())
            )
    return queued_batches(store, registry, update_id, batch_size)


def queued_batches(
    store: Store, registry: ChannelRegistry, update_id: int, batch_size: int
) -> list[list[int]]:
    """The update's deliveries still waiting, grouped by channel into batches the adapter takes."""
    with store.session() as session:
        rows = session.execute(
            select(Delivery.id, Delivery.channel)
            .where(Delivery.update_id == update_id, Delivery.status == DeliveryStatus.QUEUED)
            .order_by(Delivery.priority.desc(), Delivery.id)
        ).all()
    by_channel: dict[str, list[int]] = {}
    for delivery_id, channel in rows:
        by_channel.setdefault(channel, []).append(delivery_id)
    batches: list[list[int]] = []
    for channel, ids in by_channel.items():
        size = min(batch_size, registry.factory(channel).max_batch)
        batches.extend(list(chunk) for chunk in chunked(ids, size))
    return batches


def _rows(
    session: Session, incident: Incident, update_row: Update, registry: ChannelRegistry
) -> Iterator[dict[str, Any]]:
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

    def channel_carries(channel: str) -> bool:
        return carries(settings.cadence, channel, kind)

    public = not incident.draft and update_row.audience is Audience.EVERYONE
    if public:  # a draft, a reminder, a review: not for the public post
        for channel in registry.broadcast_channels():
            if channel_carries(channel):
                yield _row(update_row.id, None, channel, PUBLIC_RECIPIENT, BROADCAST_PRIORITY, now)
    for recipient in recipients(
        session, incident, registry, channel_carries, Audience(update_row.audience)
    ):
        key = str(recipient.subscriber_id)
        due = pacing.due_at(
            key, recipient.channel, recipient.quiet_start, recipient.quiet_end, recipient.timezone
        )
        yield _row(
            update_row.id,
            recipient.subscriber_id,
            recipient.channel,
            key,
            recipient.priority,
            due,
        )


def _row(
    update_id: int,
    subscriber_id: int | None,
    channel: str,
    recipient: str,
    priority: int,
    due: datetime,
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
        "created_at": now,
        "updated_at": now,
    }


def _insert_deliveries(session: Session, dialect: str, rows: Iterable[dict[str, Any]]) -> None:
    """Bulk insert in chunks, skipping rows whose delivery key already exists."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    for chunk in chunked(rows, INSERT_CHUNK):
        session.execute(insert(Delivery).on_conflict_do_nothing(), list(chunk))
