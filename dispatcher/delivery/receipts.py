"""Delivery receipts: what a provider later says became of a message it accepted.

"Sent" only means the provider took the message. Twilio's status callbacks and SendGrid's event
webhook say what happened next; each provider's events module, beside its adapter
(channels/sms_events.py, channels/email_events.py), puts that in our words (`ProviderEvent`, an
unknown word UNKNOWN: stored, nothing done; anymail's `event_types`). This module acts on them,
the same whichever provider spoke:

    DELIVERED                  the delivery is confirmed; nothing more is tried for it
    UNDELIVERED, BOUNCED       the update goes to the subscriber's next channel (`fall_back`, the
                               same code a failed send uses), a hard bounce also suppresses the
                               address
    COMPLAINED, UNSUBSCRIBED   the address is suppressed (it was delivered; nothing is re-sent)

Each event is applied once: it is stored under the provider's own event id (SendGrid's
`sg_event_id`, Twilio's `I-Twilio-Idempotency-Token`) before anything else, so a callback the
provider retries, or sends twice, changes nothing the second time.

Receipts can also fail to come. With `receipt_timeout_s` set, a delivery on a channel that gives
receipts (`receipt_channels`) carries a due time; `expire` (run by the sweep) sends the update on
the next channel once it passes with no word. The last channel stays "sent": nothing else to try.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from channels.events import ProviderEvent
from dispatcher.delivery.outcomes import fall_back
from dispatcher.delivery.registry import ChannelRegistry
from dispatcher.models import DeliveryStatus, ReceiptStatus, SuppressionReason
from dispatcher.store import (
    Delivery,
    Receipt,
    Store,
    Subscriber,
    insert_ignoring_duplicates,
    utcnow,
)
from dispatcher.subscribers.suppressions import suppress

log = logging.getLogger(__name__)

SUPPRESSING = {
    ReceiptStatus.BOUNCED: SuppressionReason.BOUNCE,
    ReceiptStatus.COMPLAINED: SuppressionReason.SPAM_REPORT,
    ReceiptStatus.UNSUBSCRIBED: SuppressionReason.UNSUBSCRIBED,
}


@dataclass
class Applied:
    """What a batch of events did; `fallbacks` are new deliveries for the queue to send."""

    applied: int = 0
    duplicates: int = 0  # seen before (same event id): nothing done
    unmatched: int = 0  # no delivery of ours: stored, nothing done
    fallbacks: list[int] = field(default_factory=list)


def _any_channel(_: str) -> bool:
    return True


def apply(
    store: Store,
    registry: ChannelRegistry,
    events: Iterable[ProviderEvent],
    usable: Callable[[str], bool] = _any_channel,
) -> Applied:
    """Apply verified events in one transaction; `usable` says which channels a fallback may
    use now (not one whose provider's circuit is open)."""
    applied = Applied()
    with store.session() as session:
        for event in events:
            _apply_one(session, registry, event, usable, applied)
    return applied


def _apply_one(
    session: Session,
    registry: ChannelRegistry,
    event: ProviderEvent,
    usable: Callable[[str], bool],
    applied: Applied,
) -> None:
    delivery = _find(session, event)
    if not _store_once(session, event, delivery):
        applied.duplicates += 1
        return
    if delivery is None:
        applied.unmatched += 1
        log.info("%s event %s matched no delivery", event.provider, event.event)
        return
    applied.applied += 1
    status = event.status
    subscriber = session.get(Subscriber, delivery.subscriber_id) if delivery.subscriber_id else None
    reason = SUPPRESSING.get(status)
    field_name = registry.factory(delivery.channel).address_field
    if reason is not None and event.address and field_name:
        suppress(
            session,
            field_name,
            event.address,
            reason,
            actor=f"provider:{event.provider}",
            subscriber_id=delivery.subscriber_id,
        )
    if status is ReceiptStatus.DELIVERED:
        _confirm(delivery)
    elif status in (ReceiptStatus.UNDELIVERED, ReceiptStatus.BOUNCED):
        fallback_id = _undelivered(session, registry, delivery, subscriber, event, usable)
        if fallback_id is not None:
            applied.fallbacks.append(fallback_id)


def _find(session: Session, event: ProviderEvent) -> Delivery | None:
    """Our delivery, by the id we gave the provider, else by the provider's message id."""
    if event.delivery_id is not None:
        found = session.get(Delivery, event.delivery_id)
        return found if found is not None and found.channel == event.channel else None
    if event.provider_id is None:  # the provider has no id of one message (SendGrid's)
        return None
    return session.scalars(
        select(Delivery).where(
            Delivery.provider_id == event.provider_id, Delivery.channel == event.channel
        )
    ).first()


def _store_once(session: Session, event: ProviderEvent, delivery: Delivery | None) -> bool:
    """Store the event under the provider's id; False when it was stored before."""
    stored = session.scalar(
        insert_ignoring_duplicates(session, Receipt)
        .values(
            provider=event.provider,
            event_id=event.event_id,
            delivery_id=delivery.id if delivery is not None else None,
            event=event.event[:32],
            status=event.status.value,
            received_at=utcnow(),
        )
        .returning(Receipt.id)
    )
    return stored is not None


def _confirm(delivery: Delivery) -> None:
    """Delivered: the chain stops here (no receipt timeout, no fallback on this row)."""
    if delivery.status in (DeliveryStatus.SENT, DeliveryStatus.SENDING, DeliveryStatus.FELL_BACK):
        delivery.status = DeliveryStatus.DELIVERED
    delivery.delivered_at = delivery.delivered_at or utcnow()
    delivery.receipt_due_at = None


def _undelivered(
    session: Session,
    registry: ChannelRegistry,
    delivery: Delivery,
    subscriber: Subscriber | None,
    event: ProviderEvent,
    usable: Callable[[str], bool],
) -> int | None:
    """The provider gave up after accepting it: the next channel, as for a failed send."""
    if delivery.status is not DeliveryStatus.SENT:
        return None  # already delivered, already fallen back, or not yet recorded as sent
    delivery.receipt_due_at = None
    code = f" (error {event.detail})" if event.detail else ""
    delivery.last_error = f"{event.provider} reported it {event.event}{code}"
    fallback_id = fall_back(session, registry, delivery, subscriber, usable)
    delivery.status = DeliveryStatus.FELL_BACK if fallback_id else DeliveryStatus.FAILED
    return fallback_id


def expire(
    store: Store,
    registry: ChannelRegistry,
    usable: Callable[[str], bool] = _any_channel,
    limit: int = 1000,
) -> list[int]:
    """Deliveries whose receipt is overdue go to the subscriber's next channel; the new
    deliveries' ids, for the queue. Run by the sweep."""
    fallbacks: list[int] = []
    with store.session() as session:
        rows = session.execute(
            select(Delivery, Subscriber)
            .outerjoin(Subscriber, Delivery.subscriber_id == Subscriber.id)
            .where(Delivery.receipt_due_at < utcnow(), Delivery.status == DeliveryStatus.SENT)
            .order_by(Delivery.receipt_due_at)
            .limit(limit)
        ).all()
        for delivery, subscriber in rows:
            delivery.receipt_due_at = None
            fallback_id = fall_back(session, registry, delivery, subscriber, usable)
            if fallback_id is not None:
                delivery.status = DeliveryStatus.FELL_BACK
                delivery.last_error = "no delivery receipt in time; sent on the next channel"
                fallbacks.append(fallback_id)
    if fallbacks:
        log.info("receipt timeout: %d deliveries fell back", len(fallbacks))
    return fallbacks
