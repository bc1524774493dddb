"""From claimed rows to messages: what `send_batch` hands an adapter, decided just before sending.

Opt-outs are checked again now, not only when the rows were queued. A message is dropped when a
newer update of the same incident is on its way to (or has reached) the same person: coalesced
updates and those held by quiet hours go out as the latest state once, never as a replay of stale
ones (SUPERSEDED). The rest is rendered (dispatcher/render/), once per batch for everyone
who reads the same text where the channel allows it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from channels.base import Channel, Message, Outcome
from dispatcher.delivery.batch import Context
from dispatcher.delivery.rows import Claimed, ClaimedConfirmation, Loaded
from dispatcher.delivery.segments import Personal, personal
from dispatcher.links import LinkPurpose
from dispatcher.models import Audience, DeliveryStatus, FailureKind, FailureReason
from dispatcher.policy.audience import address_of
from dispatcher.render.messages import render
from dispatcher.render.shared import Shared, render_shared, shared_key
from dispatcher.render.templates import RenderError
from dispatcher.render.views import EarlierUpdate, IncidentView, RecipientView, UpdateView
from dispatcher.settings import Settings
from dispatcher.store import CONFIRMATION_COLUMNS, Delivery, Incident, Update
from dispatcher.subscribers.confirmations import CONFIRMABLE, compose
from dispatcher.subscribers.suppressions import Address, suppressed

_T = TypeVar("_T")


@dataclass(frozen=True)
class Skipped:
    """Not sent, on purpose, decided just before sending: the recipient opted out or was
    removed (SUPPRESSED), or a newer update of the same incident is on its way to them or has
    reached them (SUPERSEDED: coalescing and quiet hours send the latest state, not a replay)."""

    key: int
    status: DeliveryStatus
    why: str


OPTED_OUT = "recipient opted out or was removed before sending"
ALREADY_CONFIRMED = "the address was confirmed before its confirmation was sent"
NEWER_UPDATE = "a newer update of this incident was sent to them instead"


# A newer update counts as "on its way" in these states (a fell-back row has a successor row).
LIVE_STATUSES = (
    DeliveryStatus.QUEUED,
    DeliveryStatus.SENDING,
    DeliveryStatus.SENT,
    DeliveryStatus.DELIVERED,
)


def prepare(
    context: Context, channel: Channel, items: Sequence[Loaded]
) -> tuple[dict[int, Outcome | Skipped], list[Message]]:
    """The messages to send of `items`, and the outcomes of those that will not be sent (opted
    out, superseded by a newer update, unrenderable), by delivery id."""
    field = channel.address_field
    updates = [item for item in items if isinstance(item, Claimed)]
    with context.store.session() as session:  # opt-outs are checked again now, not only when queued
        blocked = suppressed(
            session, [(field, address_of(i.subscriber, field) or "") for i in items if field]
        )
        newest = _newest_updates(session, updates)
        parts = personal(session, updates)  # segment notes, the story for the newly told
    outcomes: dict[int, Outcome | Skipped] = {}
    messages: list[Message] = []
    for confirmation in (item for item in items if isinstance(item, ClaimedConfirmation)):
        composed = _confirmation(channel, context, confirmation, blocked)
        if isinstance(composed, Message):
            messages.append(composed)
        else:
            outcomes[confirmation.delivery.id] = composed
    for item in updates:
        if newest.get((item.incident.id, item.delivery.recipient), 0) > item.update.id:
            outcomes[item.delivery.id] = Skipped(
                item.delivery.id, DeliveryStatus.SUPERSEDED, NEWER_UPDATE
            )
            continue
        prepared = _message(channel, context, item, blocked, parts)
        if isinstance(prepared, Message):
            messages.append(prepared)
        else:
            outcomes[item.delivery.id] = prepared
    return outcomes, messages


def unbuildable(items: Sequence[Loaded], why: str) -> dict[int, Outcome | Skipped]:
    """Every delivery of a channel whose adapter cannot be built fails for good with `why`
    (naming the missing setting), so each falls back to its subscriber's next channel."""
    return {
        item.delivery.id: Outcome(
            key=item.delivery.id,
            failure=FailureKind.PERMANENT,
            error=why,
            attempts=0,
            reason=FailureReason.REJECTED,
        )
        for item in items
    }


def _confirmation(
    channel: Channel, context: Context, item: ClaimedConfirmation, blocked: set[Address]
) -> Message | Outcome | Skipped:
    """The confirmation to the subscriber's address on this channel as it is now, or why it
    is not sent: opted out, or confirmed since it was asked for."""
    field, subscriber = channel.address_field, item.subscriber
    address = address_of(subscriber, field) if subscriber and field else None
    if subscriber is None or subscriber.unsubscribed_at is not None or (field, address) in blocked:
        return Skipped(item.delivery.id, DeliveryStatus.SUPPRESSED, OPTED_OUT)
    if field not in CONFIRMABLE or not address:
        return Outcome(
            key=item.delivery.id,
            failure=FailureKind.PERMANENT,
            error=f"{channel.name}: no {field} to confirm on file",
            attempts=0,
            reason=FailureReason.RENDER,
        )
    if getattr(subscriber, CONFIRMATION_COLUMNS[field] or "") is not None:
        return Skipped(item.delivery.id, DeliveryStatus.SUPERSEDED, ALREADY_CONFIRMED)
    return compose(
        channel, context.links, context.settings, item.delivery.id, subscriber, field, address
    )


def _newest_updates(session: Session, items: list[Claimed]) -> dict[tuple[int, str], int]:
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
    channel: Channel, context: Context, item: Claimed, blocked: set[Address], parts: Personal
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
            page_url=links.url(LinkPurpose.PAGE, subscriber.id),
        )
    substitutions: dict[str, str] = {}
    update = update_view(
        item.update,
        item.incident,
        internal=_internal(item),
        note=parts.note(item),
        story=parts.story(item),
    )
    try:
        shared = _shared(channel, context, item, update, recipient)
        if shared is None:
            rendered = _render_with(render, channel, context, item, update, recipient)
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
    channel: Channel,
    context: Context,
    item: Claimed,
    update: UpdateView,
    recipient: RecipientView | None,
) -> Shared | None:
    """The batch's one rendering for everyone like `recipient` who reads the same `update`
    (note and story included; made on first use, failures included: a template that fails for
    one fails for all of them); None: not shareable."""
    key = (channel.name, update, _internal(item), shared_key(recipient))
    if key not in context.renders:
        try:
            context.renders[key] = _render_with(
                render_shared, channel, context, item, update, recipient
            )
        except RenderError as exc:
            context.renders[key] = exc
    found = context.renders[key]
    if isinstance(found, RenderError):
        raise found
    return found


def _render_with(
    function: Callable[..., _T],
    channel: Channel,
    context: Context,
    item: Claimed,
    update: UpdateView,
    recipient: RecipientView | None,
) -> _T:
    """`render` or `render_shared` of this delivery's `update` for `recipient` on `channel`."""
    settings = context.settings
    return function(
        channel.name,
        channel.limits,
        incident_view(item.incident, settings),
        update,
        recipient,
        company_name=settings.company_name,
        support_url=settings.support_url,
        sms_max_segments=settings.sms_max_segments,
    )


def _internal(item: Claimed) -> bool:
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
        private=incident.private,
    )


def update_view(
    update_row: Update,
    incident: Incident,
    *,
    internal: bool = False,
    note: str | None = None,
    story: tuple[EarlierUpdate, ...] = (),
) -> UpdateView:
    """The update as a recipient sees it: the team also sees the internal note, which customers
    never do; the incident's current ETA travels with every update; `note` and `story` are this
    recipient's own (dispatcher/delivery/segments.py)."""
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
        note=note,
        story=story,
    )
