"""Notices to the team from the dispatcher itself: what it did on its own that people must know
about now (sign-up by text paused: the confirmation budget is spent).

A notice belongs to no incident, so it is not an update: it is a delivery row of its own kind
(`MessageKind.NOTICE`, its text on the row) to each member of the team (internal subscribers,
not unsubscribed), on their first channel with a usable address, sent by the same engine as
every message: paced, retried, listed by `outage delivery list`. It does not fall back (it has
no update to fall back with); the log line and the metric that go with each notice remain.
The caller decides how often to post one (the throttle: once per window of the budget).
"""

from __future__ import annotations

import logging
from html import escape
from typing import TYPE_CHECKING

from sqlalchemy import select

from channels.base import Channel, Message
from dispatcher.models import DeliveryStatus, MessageKind
from dispatcher.policy.audience import address_of, next_channel
from dispatcher.store import ADDRESS_COLUMNS, Delivery, Subscriber, utcnow
from dispatcher.subscribers.suppressions import suppressed

if TYPE_CHECKING:
    from dispatcher.delivery.pipeline import Pipeline

log = logging.getLogger(__name__)

NOTICE_PRIORITY = 2_000  # ahead of confirmations: the team is the first to hear


def tell_team(pipeline: Pipeline, text: str) -> list[int]:
    """Post `text` (its first line is the subject) to every member of the team; the delivery
    ids. With no team on file the notice is only logged, as a warning."""
    log.warning("notice to the team: %s", text.splitlines()[0])
    now = utcnow()
    with pipeline.store.session() as session:
        team = session.scalars(
            select(Subscriber).where(
                Subscriber.internal.is_(True), Subscriber.unsubscribed_at.is_(None)
            )
        ).all()
        blocked = suppressed(
            session,
            [
                (field, address)
                for member in team
                for field in ADDRESS_COLUMNS
                if (address := address_of(member, field))
            ],
        )
        rows = []
        for member in team:
            channel = next_channel(member, pipeline.registry, blocked=blocked)
            if channel is None:
                continue
            rows.append(
                Delivery(
                    kind=MessageKind.NOTICE,
                    notice=text,
                    subscriber_id=member.id,
                    channel=channel,
                    recipient=str(member.id),
                    status=DeliveryStatus.QUEUED,
                    priority=NOTICE_PRIORITY,
                    due_at=now,
                )
            )
        session.add_all(rows)
        session.flush()
        ids = [row.id for row in rows]
    if not ids:
        log.warning(
            "no internal subscriber to tell: add one with `outage subscriber add --internal`"
        )
    pipeline.deliver(ids)
    return ids


def compose(channel: Channel, key: int, address: str, text: str, secret: str | None) -> Message:
    """The notice as this channel carries it: a subject and a body by email, the text alone
    by text message or webhook (`{"text": ...}`, signed with the subscriber's secret)."""
    subject, _, rest = text.partition("\n")
    if channel.limits.has_subject:
        body = rest.strip() or subject
        paragraphs = "".join(f"<p>{escape(part)}</p>" for part in body.split("\n\n"))
        return Message(key=key, to=address, subject=subject, text=body, html=paragraphs)
    return Message(key=key, to=address, text=" ".join(text.split()), secret=secret)
