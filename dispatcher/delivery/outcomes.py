"""What an answer leads to: each delivery of an answered chunk is recorded as sent, retried
later, moved to the subscriber's next channel, or failed (`record`); a chunk the guards refused
is put back (`hold`).

What happens after a failure is decided here from the adapter's classification alone: transient
goes back to the queue with a growing delay until `delivery_attempts` sends, then falls back;
permanent falls back at once to the subscriber's next channel, recording both rows. `fall_back`
is also what a provider's "undelivered" receipt uses (dispatcher/delivery/receipts.py).

The retry policy, all of it: five layers, each with the settings that govern it (defaults from
dispatcher/settings.py) and where its code is::

    (a) inside one send: channels/base.py `Channel._retry` and `_wait` (tenacity), transient
        only and not a timeout (that message goes straight to (b): its slot was held long enough)
        send_attempts=3         tries of a message within one send
        send_backoff_s=0.5      the first wait, growing exponentially, with jitter
        send_backoff_max_s=10   the longest wait; no wait is shorter than the provider's
                                Retry-After, and a longer Retry-After than this ends the
                                send's tries, leaving the message to (b); each retry first
                                takes a token from the account's rate bucket, and a longer
                                wait for one ends the tries the same way
    (b) across sends, through the queue: `record` and `_backoff` here
        delivery_attempts=5     sends (claims) of a row; when the last fails, the next channel
                                (`fall_back`), or FAILED when there is none
        delivery_backoff_s=5    the first delay, doubling: 5, 10, 20, 40 s, each +-20 % jitter
        delivery_backoff_max_s=300  the longest delay; none is shorter than the Retry-After
        breaker_open_s=30       replaces the backoff when the failure left the provider's
                                circuit open (breaker_threshold=5 transient failures in a row):
                                the next working channel now, else this delay (the probe)
        A chunk the guards refuse (circuit open; pacing beyond pace_max_wait_s=2 in a batch; a
        batch past half its lease_s) is put back by `hold`, not counted as a send.
    (c) the countdown cap: dispatcher/delivery/tasks.py `MAX_COUNTDOWN_S`, in `CeleryQueue.send`
        MAX_COUNTDOWN_S=1800    half the broker's visibility timeout: a longer delay (a long
                                Retry-After or pacing wait; (b) stays below it) is not sent as
                                a Celery countdown, which Redis would deliver twice; the row's
                                due_at and the sweep carry it. The embedded queue leaves every
                                delay to them.
    (d) the sweep: `Pipeline.sweep` (dispatcher/delivery/pipeline.py)
        sweep_every_s=5         how often every worker runs it (dispatcher/delivery/sweeper.py;
                                the embedded runners sweep on every pass, with no staleness
                                allowance)
        sweep_stale_s=30        a queued row due this long ago has lost its task: enqueued again
        lease_s=15              a claimed row whose lease ran out is enqueued again, and the
                                claim takes it back (dispatcher/delivery/rows.py `claim`;
                                counted in `lease_expiries` if it had been handed over); the
                                lease of a row being sent is renewed every lease_s/3
                                (dispatcher/delivery/leases.py), so only a dead worker's run out
    (e) the receipt timeout: `_record_sent` here sets the deadline, `receipts.expire` (run by
        the sweep) acts on it
        receipt_timeout_s=None  no receipt this long after "sent": the next channel (unset:
                                never); on the last channel the row stays SENT
        receipt_channels=["sms", "email"]  the channels whose providers send receipts
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from channels.base import Outcome
from dispatcher import audit
from dispatcher.delivery.batch import Context, SendResult
from dispatcher.delivery.guards import Gate
from dispatcher.delivery.messages import Skipped
from dispatcher.delivery.registry import ChannelRegistry
from dispatcher.delivery.rows import Loaded, Row, recorded_rows, write
from dispatcher.models import DeliveryStatus, FailureKind, MessageKind, WaitReason
from dispatcher.policy.audience import Preferences, address_of, next_channel
from dispatcher.settings import Settings
from dispatcher.store import Delivery, insert_ignoring_duplicates, utcnow
from dispatcher.subscribers.suppressions import suppress, suppressed

log = logging.getLogger(__name__)


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


def record(
    session: Session,
    context: Context,
    delivery: Row,
    item: Loaded,
    outcome: Outcome | Skipped,
    circuit_open: bool,
    result: SendResult,
) -> None:
    """Write one outcome onto `delivery` (the row as read, written by `write`).

    Its first request was counted as it left (`mark_in_flight`): the retries inside the send
    are added here, and those made after an answer that left it unknown whether the provider
    took the message. Such a message that goes back to the queue keeps its in-flight mark, so
    its next send counts as an ambiguous retry too; any other answer clears it."""
    delivery.lease_until = None
    delivery.in_flight_since = None
    if isinstance(outcome, Skipped) and outcome.until is not None:
        _put_behind(delivery, outcome.until, result)
        return
    if isinstance(outcome, Skipped):
        delivery.status = outcome.status
        delivery.last_error = outcome.why
        return
    delivery.attempts += max(0, outcome.attempts - 1)
    delivery.ambiguous_retries += outcome.ambiguous_retries
    if item.delivery.kind is not MessageKind.UPDATE:  # confirmation_sent, link_failed, …
        audit.record(
            session,
            "system",
            f"{item.delivery.kind.value}_{'sent' if outcome.ok else 'failed'}",
            subscriber_id=item.subscriber.id if item.subscriber else None,
            channel=item.delivery.channel,
        )
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
        delivery.wait_reason = WaitReason.BREAKER if circuit_open else WaitReason.RETRY
        if outcome.ambiguous:  # the provider may have it: the next send may deliver it again
            delivery.in_flight_since = utcnow()
        result.later(delivery.id, delay)
        return
    if not _divert(session, context, delivery, item, result):
        delivery.status = DeliveryStatus.FAILED


def _put_behind(delivery: Row, until: datetime, result: SendResult) -> None:
    """Back in the queue behind a newer update still on its way, not counted as a try: looked
    at again once that one is due (dispatcher/delivery/messages.py decides then)."""
    delivery.sends -= 1  # this round sent nothing
    delivery.status = DeliveryStatus.QUEUED
    delivery.due_at = until
    delivery.wait_reason = WaitReason.NEWER_UPDATE
    result.held += 1
    result.later(delivery.id, max(0.0, (until - utcnow()).total_seconds()))


def _record_sent(delivery: Row, outcome: Outcome, settings: Settings) -> None:
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
    session: Session, registry: ChannelRegistry, item: Loaded, outcome: Outcome
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
    context: Context,
    delivery: Row,
    item: Loaded,
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


def hold(context: Context, items: list[Loaded], gate: Gate, result: SendResult) -> None:
    """Put what the guards refused back, not counted as a try: on the subscriber's next working
    channel while the provider's circuit is open, else queued until the gate says."""
    now = utcnow()
    with context.store.session() as session:
        # One SELECT and one bulk UPDATE, as when recording: paced, most of a batch comes back.
        rows = recorded_rows(session, items, context.claims)
        for item in items:
            if (delivery := rows.get(item.delivery.id)) is None:
                continue  # taken back by another worker: that one puts it back or sends it
            delivery.sends -= 1  # this round sent nothing
            delivery.lease_until = None
            if gate.circuit_open and _divert(session, context, delivery, item, result, gate.reason):
                continue
            delivery.status = DeliveryStatus.QUEUED
            delivery.due_at = now + timedelta(seconds=gate.wait_s)
            delivery.wait_reason = (
                WaitReason.BREAKER if gate.circuit_open else WaitReason.RATE_LIMIT
            )
            result.held += 1
            result.later(delivery.id, gate.wait_s)
        write(session, rows.values())
    log.info("%s: %d deliveries put back (%s)", items[0].delivery.channel, len(items), gate.reason)


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
    found, not written twice. A message of no update (a confirmation: it asks about this very
    address) has no fallback."""
    if subscriber is None or delivery.update_id is None:
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
