"""Double opt-in: nothing is sent to a new email address or phone number until its owner says yes.

A confirmation is one message on the address's own channel: a delivery row of its own kind
(`MessageKind.CONFIRMATION`, no update), sent by the same engine as every other message, so the
provider's rate bucket and circuit breaker pace it, a transient failure is retried, and it is
listed by `outage delivery list` and counted in `/metrics`. It does not fall back to another
channel: it asks about this address. It carries a signed confirmation link; an SMS also accepts
the reply YES, because a reply from the number proves possession as well as a link does.

The link names the subscriber, the address field and a keyed digest of the address itself, so a
link sent to an old address cannot confirm the new one after a change, and the token carries no
personal data. The address waiting (`awaiting`) is the one on file while it is unconfirmed, or a
new one given through a link beside a confirmed one (`pending_email`, `pending_phone`), which
replaces the confirmed one when it is confirmed. Confirming is a POST from the page the link
opens, never the GET itself: mail scanners open links, and a scanner must not be able to say yes
for a person.

Suppressed addresses get no confirmation either: an opt-out means nothing more, of any kind.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from channels.base import Channel, Message
from dispatcher.audit import record
from dispatcher.delivery.registry import ChannelRegistry
from dispatcher.errors import OutageError
from dispatcher.links import LinkError, LinkPurpose, Links
from dispatcher.models import DeliveryStatus, MessageKind
from dispatcher.render import notices
from dispatcher.render.notices import Addressee
from dispatcher.settings import Settings
from dispatcher.store import (
    ADDRESS_COLUMNS,
    CONFIRMATION_COLUMNS,
    PENDING_COLUMNS,
    Delivery,
    Store,
    Subscriber,
    utcnow,
)
from dispatcher.subscribers.suppressions import suppressed

if TYPE_CHECKING:  # the engine sends confirmations; this module only asks for them
    from dispatcher.delivery.pipeline import Pipeline

log = logging.getLogger(__name__)

CONFIRMABLE = ("email", "phone")  # address fields that need a double opt-in


class ConfirmationError(OutageError):
    """A confirmation link that no longer applies: the subscriber or the address is gone.
    `code` names which, for a page that says it in the person's language."""

    http_status = 410

    def __init__(self, message: str, code: str = "gone") -> None:
        super().__init__(message)
        self.code = code


# Ahead of an outage's messages in the queue: a person who just signed up is waiting for it.
CONFIRMATION_PRIORITY = 1_000


@dataclass(frozen=True)
class Requested:
    """One confirmation: its address field, channel and delivery row, and how it stands."""

    field: str
    channel: str
    delivery_id: int
    status: DeliveryStatus

    @property
    def sent(self) -> bool:
        return self.status in (DeliveryStatus.SENT, DeliveryStatus.DELIVERED)


@dataclass(frozen=True)
class Confirmed:
    subscriber_id: int
    field: str
    already: bool  # it was confirmed before (a second click, or a reply after the link)


def request(
    pipeline: Pipeline, subscriber_id: int, fields: Iterable[str] = CONFIRMABLE
) -> list[Requested]:
    """Ask each of these address fields that waits for a confirmation (`awaiting`, not
    suppressed) for one: a delivery row each, sent now when the queue is
    in-process (it must not wait behind an outage's fan-out), else by the workers. Returns what
    was asked and how it stands; a failure is recorded on its row, never raised."""
    now = utcnow()
    asked: list[tuple[str, str, int]] = []  # field, channel, delivery id
    with pipeline.store.session() as session:
        subscriber = session.get(Subscriber, subscriber_id)
        if subscriber is None or subscriber.unsubscribed_at is not None:
            return []
        for name, address in waiting(subscriber, fields).items():
            if suppressed(session, [(name, address)]):
                continue
            channel_name = channel_for(pipeline.registry, subscriber, name)
            if channel_name is None:
                continue
            row = Delivery(
                kind=MessageKind.CONFIRMATION,
                subscriber_id=subscriber.id,
                channel=channel_name,
                recipient=str(subscriber.id),
                status=DeliveryStatus.QUEUED,
                priority=CONFIRMATION_PRIORITY,
                due_at=now,
            )
            session.add(row)
            session.flush()
            asked.append((name, channel_name, row.id))
    pipeline.deliver([delivery_id for _, _, delivery_id in asked])
    with pipeline.store.session() as session:
        statuses: dict[int, DeliveryStatus] = {
            delivery_id: status
            for delivery_id, status in session.execute(
                select(Delivery.id, Delivery.status).where(
                    Delivery.id.in_([delivery_id for _, _, delivery_id in asked])
                )
            )
        }
    return [
        Requested(name, channel, delivery_id, statuses[delivery_id])
        for name, channel, delivery_id in asked
    ]


def waiting(subscriber: Awaiting, fields: Iterable[str] = CONFIRMABLE) -> dict[str, str]:
    """Those of the address `fields` that wait for a confirmation (`awaiting`), with their
    addresses: what `request` would ask for, opt-outs aside (the sign-up limits count these)."""
    wanted = set(fields)
    return {
        name: address
        for name in CONFIRMABLE
        if name in wanted and (address := awaiting(subscriber, name)) is not None
    }


def never_asked(store: Store, subscriber_ids: Sequence[int]) -> list[int]:
    """Those of these subscribers with an address still waiting for its confirmation who were
    never sent one (no confirmation row at all): whom a second import of the same file with
    `--send-confirmations` asks, so that running it twice asks nobody twice."""
    asked = select(Delivery.id).where(
        Delivery.kind == MessageKind.CONFIRMATION, Delivery.subscriber_id == Subscriber.id
    )
    waiting = or_(
        and_(Subscriber.email.is_not(None), Subscriber.email_confirmed_at.is_(None)),
        and_(Subscriber.phone.is_not(None), Subscriber.phone_confirmed_at.is_(None)),
    )
    found: list[int] = []
    with store.session() as session:
        for start in range(0, len(subscriber_ids), 500):
            found.extend(
                session.scalars(
                    select(Subscriber.id)
                    .where(
                        Subscriber.id.in_(subscriber_ids[start : start + 500]),
                        Subscriber.unsubscribed_at.is_(None),
                        waiting,
                        ~asked.exists(),
                    )
                    .order_by(Subscriber.id)
                )
            )
    return found


def compose(
    channel: Channel,
    links: Links,
    settings: Settings,
    key: int,
    subscriber: Addressee,
    field: str,
    address: str,
) -> Message:
    """The confirmation message for `address` (the subscriber's `field`), in their language:
    an email with a subject and HTML, or one SMS with the link."""
    secret_key = settings.secret_key
    assert secret_key is not None, "the Pipeline always resolves the links' secret key"
    context = {
        "company": settings.company_name,
        "name": subscriber.name,
        "confirm_url": links.url(
            LinkPurpose.CONFIRM,
            subscriber,
            confirmation_detail(secret_key.get_secret_value(), field, address),
        ),
        "manage_url": links.url(LinkPurpose.MANAGE, subscriber),
    }
    return notices.compose(
        "confirm",
        channel.limits,
        key,
        subscriber,
        address,
        context,
        unsubscribe_url=links.url(LinkPurpose.UNSUBSCRIBE, subscriber),
    )


class Awaiting(Protocol):
    """What `awaiting` reads of a subscriber: an ORM row or a claimed one."""

    @property
    def email(self) -> str | None: ...
    @property
    def phone(self) -> str | None: ...
    @property
    def pending_email(self) -> str | None: ...
    @property
    def pending_phone(self) -> str | None: ...
    @property
    def email_confirmed_at(self) -> datetime | None: ...
    @property
    def phone_confirmed_at(self) -> datetime | None: ...


def awaiting(subscriber: Awaiting, field: str) -> str | None:
    """The address of `field` that waits for its confirmation: a new one kept beside a
    confirmed one, else the one on file while it is unconfirmed; None when nothing waits."""
    pending: str | None = getattr(subscriber, PENDING_COLUMNS[field])
    if pending:
        return pending
    address: str | None = getattr(subscriber, ADDRESS_COLUMNS[field])
    confirmed = getattr(subscriber, CONFIRMATION_COLUMNS[field] or "")
    return address if address and confirmed is None else None


def is_confirmed(subscriber: Subscriber, field: str, address: str) -> bool:
    """Whether `address` is the subscriber's confirmed address of `field` now."""
    confirmed = getattr(subscriber, CONFIRMATION_COLUMNS[field] or "") is not None
    return confirmed and getattr(subscriber, ADDRESS_COLUMNS[field]) == address


def confirm_link(pipeline: Pipeline, token: str) -> Confirmed:
    """Confirm the address a confirmation link was sent to. Raises LinkError (forged: 403,
    expired or signed out: 410) or ConfirmationError (the subscriber or that address is gone:
    410)."""
    with pipeline.store.session() as session:
        subscriber, field, address = _claimed(pipeline, session, token)
        return _mark(session, subscriber, field, address, actor="subscriber")


def check_link(pipeline: Pipeline, token: str) -> tuple[Subscriber, str, str]:
    """What `confirm_link` checks, without confirming: for the page that asks "confirm?"."""
    with pipeline.store.session() as session:
        return _claimed(pipeline, session, token)


def _claimed(pipeline: Pipeline, session: Session, token: str) -> tuple[Subscriber, str, str]:
    """The subscriber, address field and address a confirmation link is for, if it still
    applies: the address on file, or the new one waiting beside it."""
    claims = pipeline.links.read(LinkPurpose.CONFIRM, token)
    field, _, digest = (claims.detail or "").partition(":")
    if field not in CONFIRMABLE or not digest:
        raise LinkError("this link is not valid here", expired=False)
    subscriber = session.get(Subscriber, claims.subscriber_id)
    if subscriber is None:
        raise ConfirmationError("this subscription no longer exists", "gone")
    claims.check_holder(subscriber)
    for column in (PENDING_COLUMNS[field], ADDRESS_COLUMNS[field]):
        address = getattr(subscriber, column)
        expected = confirmation_detail(_secret_key(pipeline), field, address) if address else ""
        if address and hmac.compare_digest(expected, claims.detail or ""):
            return subscriber, field, address
    raise ConfirmationError(
        f"this link was for a {field} that has since been changed", "address_changed"
    )


def confirm_reply(store: Store, phone: str) -> list[int]:
    """A YES (or START) texted from `phone` confirms every subscription waiting on that number,
    on file or new; returns their ids. Twilio's signed webhook vouches that the reply came from
    the number."""
    with store.session() as session:
        waiting = session.scalars(
            select(Subscriber).where(
                or_(
                    and_(Subscriber.phone == phone, Subscriber.phone_confirmed_at.is_(None)),
                    Subscriber.pending_phone == phone,
                )
            )
        ).all()
        return [
            _mark(session, s, "phone", phone, actor="subscriber:sms").subscriber_id for s in waiting
        ]


def confirmed_reply(store: Store, settings: Settings, subscriber_id: int) -> str:
    """The SMS that answers a YES (JA) which confirmed the number, in the subscriber's
    language."""
    with store.session() as session:
        subscriber = session.get(Subscriber, subscriber_id)
        locale = subscriber.locale if subscriber else "en"
    return notices.sms_text("confirm", locale, "sms.confirmed", settings.company_name)


def _mark(
    session: Session, subscriber: Subscriber, field: str, address: str, *, actor: str
) -> Confirmed:
    """`address` confirmed: a new one takes the place of the one it was waiting beside."""
    column = CONFIRMATION_COLUMNS[field] or ""
    replacing = address == getattr(subscriber, PENDING_COLUMNS[field])
    if replacing:
        setattr(subscriber, ADDRESS_COLUMNS[field], address)
        setattr(subscriber, PENDING_COLUMNS[field], None)
        setattr(subscriber, column, None)
    already = getattr(subscriber, column) is not None
    if not already:
        setattr(subscriber, column, utcnow())
        record(
            session,
            actor,
            "address_confirmed",
            subscriber_id=subscriber.id,
            kind=field,
            replaced=replacing,
        )
    return Confirmed(subscriber_id=subscriber.id, field=field, already=already)


def confirmation_detail(secret_key: str, field: str, address: str) -> str:
    """The link's detail: the field and a keyed digest of the address (no personal data)."""
    digest = hmac.new(secret_key.encode(), f"{field}:{address}".encode(), hashlib.sha256)
    return f"{field}:{digest.hexdigest()[:16]}"


def channel_for(registry: ChannelRegistry, subscriber: Subscriber, field: str) -> str | None:
    """The channel that sends to this address field: the subscriber's own choice first."""
    names = [*subscriber.channels, *registry.names]
    for name in names:
        factory = registry.factories.get(name)
        if factory is not None and factory.address_field == field:
            return name
    return None


def _secret_key(pipeline: Pipeline) -> str:
    key = pipeline.settings.secret_key
    assert key is not None, "the Pipeline always resolves the links' secret key"
    return key.get_secret_value()
