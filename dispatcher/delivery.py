"""Sending a batch of deliveries: claim the rows, render, hand them to the adapter, record.

The order is the guarantee. A row is claimed with one atomic UPDATE (queued and due, or a lease
that expired) before anything is sent, so two workers holding the same task cannot both send it;
the outcome is recorded after. A worker that dies between the two leaves a lease that expires and
the row is sent again: we err towards a duplicate rather than a customer never told.

What happens after a failure is decided here from the adapter's classification alone: transient
goes back to the queue with a growing delay until `delivery_attempts` sends, then falls back;
permanent falls back at once to the subscriber's next channel, recording both rows.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from channels.base import Channel, Message, Outcome
from dispatcher.audience import address_of, next_channel
from dispatcher.links import LinkPurpose, Links
from dispatcher.models import DeliveryStatus, FailureKind
from dispatcher.registry import ChannelRegistry
from dispatcher.render import (
    IncidentView,
    RecipientView,
    RenderError,
    UpdateView,
    render,
)
from dispatcher.settings import Settings
from dispatcher.store import Delivery, Incident, Store, Subscriber, Update, utcnow
from dispatcher.suppressions import Address, suppress, suppressed

log = logging.getLogger(__name__)


@dataclass
class SendResult:
    """What the queue must do next: send the fallbacks now, and the retries after a delay."""

    sent: int = 0
    fallbacks: list[int] = field(default_factory=list)
    retries: list[int] = field(default_factory=list)
    retry_in_s: float | None = None


@dataclass(frozen=True)
class Suppressed:
    """Not sent, on purpose: the recipient opted out or was removed after it was queued."""

    key: int


@dataclass(frozen=True)
class _Claimed:
    delivery: Delivery
    update: Update
    incident: Incident
    subscriber: Subscriber | None


def send_batch(
    store: Store,
    registry: ChannelRegistry,
    settings: Settings,
    links: Links,
    delivery_ids: Sequence[int],
) -> SendResult:
    claimed = _claim(store, delivery_ids, settings.lease_s)
    result = SendResult()
    if not claimed:
        return result
    by_channel: dict[str, list[_Claimed]] = defaultdict(list)
    for item in _load(store, claimed):
        by_channel[item.delivery.channel].append(item)
    for channel_name, items in by_channel.items():
        outcomes = _send_channel(store, registry, settings, links, channel_name, items)
        with store.session() as session:
            for item in items:
                _record(
                    session,
                    store.dialect,
                    registry,
                    settings,
                    item,
                    outcomes[item.delivery.id],
                    result,
                )
    return result


def _claim(store: Store, delivery_ids: Sequence[int], lease_s: float) -> list[int]:
    """Atomically take the rows that are due (or whose holder's lease ran out)."""
    now = utcnow()
    with store.session() as session:
        claimed = session.scalars(
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
                updated_at=now,
            )
            .returning(Delivery.id)
        ).all()
    return list(claimed)


def _load(store: Store, delivery_ids: list[int]) -> list[_Claimed]:
    with store.session() as session:
        rows = session.execute(
            select(Delivery, Update, Incident, Subscriber)
            .join(Update, Delivery.update_id == Update.id)
            .join(Incident, Update.incident_id == Incident.id)
            .outerjoin(Subscriber, Delivery.subscriber_id == Subscriber.id)
            .where(Delivery.id.in_(delivery_ids))
            .order_by(Delivery.priority.desc(), Delivery.id)
        ).all()
        return [_Claimed(*row) for row in rows]


def _send_channel(
    store: Store,
    registry: ChannelRegistry,
    settings: Settings,
    links: Links,
    channel_name: str,
    items: list[_Claimed],
) -> dict[int, Outcome | Suppressed]:
    channel = registry.get(channel_name)
    field = channel.address_field
    with store.session() as session:  # opt-outs are checked again now, not only when queued
        blocked = suppressed(
            session, [(field, address_of(i.subscriber, field) or "") for i in items if field]
        )
    outcomes: dict[int, Outcome | Suppressed] = {}
    messages: list[Message] = []
    for item in items:
        prepared = _message(channel, settings, links, item, blocked)
        if isinstance(prepared, Message):
            messages.append(prepared)
        else:
            outcomes[item.delivery.id] = prepared
    if messages:
        for outcome in channel.send(messages):
            outcomes[outcome.key] = outcome
    return outcomes


def _message(
    channel: Channel, settings: Settings, links: Links, item: _Claimed, blocked: set[Address]
) -> Message | Outcome | Suppressed:
    """Render one message, or say why it cannot be sent (checked now, not only when queued)."""
    delivery, subscriber = item.delivery, item.subscriber
    recipient: RecipientView | None = None
    to = channel.name
    secret: str | None = None
    unsubscribe_url: str | None = None
    if channel.address_field is not None:
        if subscriber is None or subscriber.unsubscribed_at is not None:
            return Suppressed(delivery.id)
        address = address_of(subscriber, channel.address_field)
        if (channel.address_field, address) in blocked:
            return Suppressed(delivery.id)
        if not address:
            return Outcome(
                key=delivery.id,
                failure=FailureKind.PERMANENT,
                error=f"{channel.name}: no {channel.address_field} on file",
                attempts=0,
            )
        to = address
        secret = subscriber.webhook_secret
        unsubscribe_url = links.url(LinkPurpose.UNSUBSCRIBE, subscriber.id)
        recipient = RecipientView(
            name=subscriber.name,
            locale=subscriber.locale,
            manage_url=links.url(LinkPurpose.MANAGE, subscriber.id),
            unsubscribe_url=unsubscribe_url,
        )
    try:
        rendered = render(
            channel.name,
            channel.limits,
            incident_view(item.incident, settings),
            update_view(item.update),
            recipient,
            company_name=settings.company_name,
            support_url=settings.support_url,
            sms_max_segments=settings.sms_max_segments,
        )
    except RenderError as exc:
        return Outcome(key=delivery.id, failure=FailureKind.PERMANENT, error=str(exc), attempts=0)
    return Message(
        key=delivery.id,
        to=to,
        text=rendered.text,
        subject=rendered.subject,
        html=rendered.html,
        payload=rendered.payload,
        secret=secret,
        unsubscribe_url=unsubscribe_url,
    )


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


def update_view(update_row: Update) -> UpdateView:
    return UpdateView(
        id=update_row.id,
        state=update_row.state,
        message=update_row.message,
        created_at=update_row.created_at,
    )


def _record(
    session: Session,
    dialect: str,
    registry: ChannelRegistry,
    settings: Settings,
    item: _Claimed,
    outcome: Outcome | Suppressed,
    result: SendResult,
) -> None:
    delivery = session.get_one(Delivery, item.delivery.id)
    now = utcnow()
    delivery.lease_until = None
    if isinstance(outcome, Suppressed):
        delivery.status = DeliveryStatus.SUPPRESSED
        delivery.last_error = "recipient opted out or was removed before sending"
        return
    delivery.attempts += outcome.attempts
    if outcome.ok:
        delivery.status = DeliveryStatus.SENT
        delivery.provider_id = outcome.provider_id
        delivery.sent_at = now
        delivery.last_error = None
        result.sent += 1
        return
    delivery.last_error = outcome.error
    if outcome.suppress is not None and item.subscriber is not None:
        field = registry.factory(delivery.channel).address_field
        address = address_of(item.subscriber, field)
        if field and address:
            suppress(
                session,
                field,
                address,
                outcome.suppress,
                actor=f"provider:{delivery.channel}",
                subscriber_id=item.subscriber.id,
            )
    if outcome.failure is FailureKind.TRANSIENT and delivery.sends < settings.delivery_attempts:
        delay = _backoff(settings, delivery.sends, outcome.retry_after_s)
        delivery.status = DeliveryStatus.QUEUED
        delivery.due_at = now + timedelta(seconds=delay)
        result.retries.append(delivery.id)
        result.retry_in_s = min(delay, result.retry_in_s or delay)
        return
    fallback_id = _fall_back(session, dialect, registry, item, now)
    if fallback_id is None:
        delivery.status = DeliveryStatus.FAILED
    else:
        delivery.status = DeliveryStatus.FELL_BACK
        result.fallbacks.append(fallback_id)


def _backoff(settings: Settings, sends: int, retry_after_s: float | None) -> float:
    """Exponential with jitter, so a provider that comes back is not hit by every retry at once."""
    base = min(settings.delivery_backoff_max_s, settings.delivery_backoff_s * 2.0 ** (sends - 1))
    return max(base * random.uniform(0.8, 1.2), retry_after_s or 0.0)


def _fall_back(
    session: Session,
    dialect: str,
    registry: ChannelRegistry,
    item: _Claimed,
    now: datetime,
) -> int | None:
    """Queue the update on the subscriber's next channel; None when there is none."""
    subscriber = item.subscriber
    if subscriber is None:
        return None
    blocked = suppressed(
        session,
        [(field, address_of(subscriber, field) or "") for field in ("email", "phone", "webhook")],
    )
    channel = next_channel(subscriber, registry, after=item.delivery.channel, blocked=blocked)
    if channel is None:
        return None
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return session.scalar(
        insert(Delivery)
        .values(
            update_id=item.delivery.update_id,
            subscriber_id=subscriber.id,
            channel=channel,
            recipient=item.delivery.recipient,
            status=DeliveryStatus.QUEUED,
            priority=item.delivery.priority,
            fallback_of=item.delivery.id,
            due_at=now,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing()
        .returning(Delivery.id)
    )
