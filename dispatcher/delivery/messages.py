"""From claimed rows to messages: what `send_batch` hands an adapter, decided just before sending.

Opt-outs are checked again now, not only when the rows were queued. A message is dropped when a
newer update of the same incident has reached the same person: coalesced updates and those held
by quiet hours go out as the latest state once, never as a replay of stale ones (SUPERSEDED).
While that newer one is only on its way (queued, sending), the older waits just behind it, not
counted as a try (WaitReason.NEWER_UPDATE): superseded once the newer is sent, sent after all if
the newer fails for good. The rest is rendered (dispatcher/render/), once per batch for everyone
who reads the same text where the channel allows it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, TypeVar

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from channels.base import Channel, Message, Outcome
from dispatcher.delivery.batch import Context
from dispatcher.delivery.rows import Claimed, ClaimedNotice, Loaded
from dispatcher.delivery.segments import Personal, personal
from dispatcher.links import LinkPurpose
from dispatcher.models import (
    Audience,
    DeliveryStatus,
    FailureKind,
    FailureReason,
    IncidentState,
    MessageKind,
)
from dispatcher.policy import notices
from dispatcher.policy.audience import address_of
from dispatcher.render.messages import render
from dispatcher.render.shared import Shared, render_shared, shared_key
from dispatcher.render.templates import RenderError
from dispatcher.render.views import EarlierUpdate, IncidentView, RecipientView, UpdateView
from dispatcher.settings import Settings
from dispatcher.store import Delivery, Incident, Update, utcnow
from dispatcher.subscribers import confirmations, new_link
from dispatcher.subscribers.confirmations import CONFIRMABLE
from dispatcher.subscribers.suppressions import Address, suppressed

_T = TypeVar("_T")


@dataclass(frozen=True)
class Skipped:
    """Not sent now, on purpose, decided just before sending: the recipient opted out or was
    removed (SUPPRESSED), or a newer update of the same incident has reached them (SUPERSEDED:
    coalescing and quiet hours send the latest state, not a replay). With `until`, status
    QUEUED: put back, due then, behind a newer update still on its way (not a try)."""

    key: int
    status: DeliveryStatus
    why: str
    until: datetime | None = None


OPTED_OUT = "recipient opted out or was removed before sending"
ALREADY_CONFIRMED = "the address was confirmed before its confirmation was sent"
NEWER_UPDATE = "a newer update of this incident was sent to them instead"
BEHIND_NEWER = "a newer update of this incident is on its way to them: sent only if it fails"

# How long after a newer update's due time an older one is looked at again: by then the newer
# one has usually been sent (the older is superseded) or has failed (the older goes).
AFTER_NEWER: Final = timedelta(seconds=5)

# A newer update has reached them in these states, and is on its way in these (a fell-back row
# has a successor row, which is one of them).
ARRIVED_STATUSES = (DeliveryStatus.SENT, DeliveryStatus.DELIVERED)
ON_ITS_WAY_STATUSES = (DeliveryStatus.QUEUED, DeliveryStatus.SENDING)


@dataclass(frozen=True)
class _Newer:
    """An update of the incident, newer than some of the chunk's, as it stands for one person."""

    update_id: int
    arrived: bool  # a delivery of it was sent to them
    due_at: datetime | None  # else: when its delivery still on its way is due


# The updates that tell the news, each the latest word to its reader: a newer one of these
# supersedes an older one still waiting (a reminder or a review replaces nothing).
NEWS = (Audience.EVERYONE, Audience.TOLD)
MAINTENANCE_STATES = (IncidentState.SCHEDULED, IncidentState.CANCELLED)


def prepare(
    context: Context, channel: Channel, items: Sequence[Loaded]
) -> tuple[dict[int, Outcome | Skipped], list[Message]]:
    """The messages to send of `items`, and the outcomes of those that will not be sent (opted
    out, superseded by a newer update, unrenderable), by delivery id."""
    field = channel.address_field
    updates = [item for item in items if isinstance(item, Claimed)]
    with context.store.session() as session:  # opt-outs are checked again now, not only when queued
        blocked = suppressed(session, [(field, _address(i, field)) for i in items if field])
        newer = _newer_updates(session, updates)
        parts = personal(session, updates)  # segment notes, the story for the newly told
    outcomes: dict[int, Outcome | Skipped] = {}
    messages: list[Message] = []
    for notice in (item for item in items if isinstance(item, ClaimedNotice)):
        composed = OWN_MESSAGES[notice.delivery.kind](channel, context, notice, blocked)
        if isinstance(composed, Message):
            messages.append(composed)
        else:
            outcomes[notice.delivery.id] = composed
    now = utcnow()
    for item in updates:
        behind = _behind(item, newer.get((item.incident.id, item.delivery.recipient), []), now)
        if behind is not None:
            outcomes[item.delivery.id] = behind
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


def _address(item: Loaded, field: str) -> str:
    """The address a row goes to on `field`: a confirmation's is the one that waits for it
    (perhaps a new one beside the confirmed one), every other message's the one on file."""
    if item.subscriber is None:
        return ""
    if item.delivery.kind is MessageKind.CONFIRMATION and field in CONFIRMABLE:
        return confirmations.awaiting(item.subscriber, field) or ""
    return address_of(item.subscriber, field) or ""


def _confirmation(
    channel: Channel, context: Context, item: ClaimedNotice, blocked: set[Address]
) -> Message | Outcome | Skipped:
    """The confirmation to the subscriber's address on this channel that waits for one now, or
    why it is not sent: opted out, or confirmed since it was asked for."""
    field, subscriber = channel.address_field, item.subscriber
    address = _address(item, field) if field else ""
    if subscriber is None or subscriber.unsubscribed_at is not None or (field, address) in blocked:
        return Skipped(item.delivery.id, DeliveryStatus.SUPPRESSED, OPTED_OUT)
    if field not in CONFIRMABLE or not address:
        if field in CONFIRMABLE and address_of(subscriber, field):
            return Skipped(item.delivery.id, DeliveryStatus.SUPERSEDED, ALREADY_CONFIRMED)
        return Outcome(
            key=item.delivery.id,
            failure=FailureKind.PERMANENT,
            error=f"{channel.name}: no {field} to confirm on file",
            attempts=0,
            reason=FailureReason.RENDER,
        )
    return confirmations.compose(
        channel, context.links, context.settings, item.delivery.id, subscriber, field, address
    )


def _new_link(
    channel: Channel, context: Context, item: ClaimedNotice, blocked: set[Address]
) -> Message | Outcome | Skipped:
    """The new preference link, with the subscriber's secret as it is now, to their confirmed
    address on this channel; or why not: opted out since, or the address no longer confirmed."""
    field, subscriber = channel.address_field, item.subscriber
    address = new_link.confirmed_address(subscriber, field) if subscriber else None
    if subscriber is None or (field, address_of(subscriber, field)) in blocked:
        return Skipped(item.delivery.id, DeliveryStatus.SUPPRESSED, OPTED_OUT)
    if address is None:
        return Outcome(
            key=item.delivery.id,
            failure=FailureKind.PERMANENT,
            error=f"{channel.name}: no confirmed {field} to send the link to",
            attempts=0,
            reason=FailureReason.RENDER,
        )
    return new_link.compose(
        channel, context.links, context.settings, item.delivery.id, subscriber, address
    )


def _team_notice(
    channel: Channel, context: Context, item: ClaimedNotice, blocked: set[Address]
) -> Message | Outcome | Skipped:
    """A notice to a member of the team, at their address on this channel as it is now."""
    field, subscriber = channel.address_field, item.subscriber
    address = _address(item, field) if field else ""
    if subscriber is None or subscriber.unsubscribed_at is not None or (field, address) in blocked:
        return Skipped(item.delivery.id, DeliveryStatus.SUPPRESSED, OPTED_OUT)
    if field and not address:
        return Outcome(
            key=item.delivery.id,
            failure=FailureKind.PERMANENT,
            error=f"{channel.name}: no {field} on file",
            attempts=0,
            reason=FailureReason.RENDER,
        )
    secret = subscriber.webhook_secret
    return notices.compose(
        channel, item.delivery.id, address or channel.name, item.delivery.notice or "", secret
    )


# How each kind of message that belongs to no update is written, on its channel.
OWN_MESSAGES: dict[
    MessageKind,
    Callable[[Channel, Context, ClaimedNotice, set[Address]], Message | Outcome | Skipped],
] = {
    MessageKind.CONFIRMATION: _confirmation,
    MessageKind.LINK: _new_link,
    MessageKind.NOTICE: _team_notice,
}


def _newer_updates(session: Session, items: list[Claimed]) -> dict[tuple[int, str], list[_Newer]]:
    """For each (incident, recipient) of the chunk, the public updates newer than the chunk's
    oldest with a live delivery to them, each with whether it reached them and, if not yet, when
    it is due: one query per chunk.

    Only a newer update can hold a message back, so only those are read: while the chunk's
    update is the latest (nearly always) the query reads no delivery at all, where reading every
    live one of the incident for every chunk made a fan-out's cost grow with its square."""
    public = [i for i in items if i.update.audience in NEWS]
    if not public:
        return {}
    arrived = func.max(case((Delivery.status.in_(ARRIVED_STATUSES), 1), else_=0))
    due = func.max(case((Delivery.status.in_(ON_ITS_WAY_STATUSES), Delivery.due_at)))
    rows = session.execute(
        select(Update.incident_id, Delivery.recipient, Update.id, arrived, due)
        .join(Update, Delivery.update_id == Update.id)
        .where(
            Update.id > min(i.update.id for i in public),
            Update.incident_id.in_({i.incident.id for i in public}),
            Delivery.recipient.in_({i.delivery.recipient for i in public}),
            Update.audience.in_(NEWS),
            Delivery.status.in_((*ARRIVED_STATUSES, *ON_ITS_WAY_STATUSES)),
        )
        .group_by(Update.incident_id, Delivery.recipient, Update.id)
    ).all()
    found: dict[tuple[int, str], list[_Newer]] = {}
    for incident_id, recipient, update_id, reached, due_at in rows:
        found.setdefault((incident_id, recipient), []).append(
            _Newer(update_id, bool(reached), _aware(due_at))
        )
    return found


def _behind(item: Claimed, newer: list[_Newer], now: datetime) -> Skipped | None:
    """Why this update is not sent now, if a newer one of its incident stands in its way:
    superseded when one reached the person, put back just after the latest one still on its way
    otherwise; None when none is (or every newer one failed for good: this one goes)."""
    if item.update.audience not in NEWS:
        return None
    ahead = [n for n in newer if n.update_id > item.update.id]
    if any(n.arrived for n in ahead):
        return Skipped(item.delivery.id, DeliveryStatus.SUPERSEDED, NEWER_UPDATE)
    pending = [n.due_at for n in ahead if n.due_at is not None]
    if not pending:
        return None
    until = max(*pending, now) + AFTER_NEWER
    return Skipped(item.delivery.id, DeliveryStatus.QUEUED, BEHIND_NEWER, until=until)


def _aware(moment: datetime | None) -> datetime | None:
    """An aggregate's datetime as UTC-aware (SQLite hands an aggregate back naive)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


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
        unsubscribe_url = links.url(LinkPurpose.UNSUBSCRIBE, subscriber)
        recipient = RecipientView(
            name=subscriber.name,
            locale=subscriber.locale,
            manage_url=links.url(LinkPurpose.MANAGE, subscriber),
            unsubscribe_url=unsubscribe_url,
            timezone=subscriber.timezone,
            page_url=links.url(LinkPurpose.PAGE, subscriber),
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
        feedback_url=settings.feedback_url,
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
    never do; the incident's current ETA travels with every update. A review's stored sentence
    is for the status page: its messages say it in the reader's language (`review_url`); `note`
    and `story` are this recipient's own (dispatcher/delivery/segments.py)."""
    message = None if update_row.review_url else update_row.message
    if internal and update_row.internal_note:
        message = f"{message or ''}\n[Internal note] {update_row.internal_note}".strip()
    return UpdateView(
        id=update_row.id,
        state=update_row.state,
        message=message,
        created_at=update_row.created_at,
        next_update_at=update_row.next_update_at,
        # A maintenance notice's `eta` is the window's planned end (render/views.py).
        eta=incident.ends_at if update_row.state in MAINTENANCE_STATES else incident.eta,
        credit_note=update_row.credit_note,
        milestone=update_row.milestone,
        review_url=update_row.review_url,
        note=note,
        story=story,
    )
