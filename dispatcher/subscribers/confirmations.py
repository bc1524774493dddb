"""Double opt-in: nothing is sent to a new email address or phone number until its owner says yes.

A confirmation is one message on the address's own channel: a delivery row of its own kind
(`MessageKind.CONFIRMATION`, no update), sent by the same engine as every other message, so the
provider's rate bucket and circuit breaker pace it, a transient failure is retried, and it is
listed by `outage delivery list` and counted in `/metrics`. It does not fall back to another
channel: it asks about this address. It carries a signed confirmation link; an SMS also accepts
the reply YES, because a reply from the number proves possession as well as a link does.

The link names the subscriber, the address field and a keyed digest of the address itself, so a
link sent to an old address cannot confirm the new one after a change, and the token carries no
personal data. Confirming is a POST from the page the link opens, never the GET itself: mail
scanners open links, and a scanner must not be able to say yes for a person.

Suppressed addresses get no confirmation either: an opt-out means nothing more, of any kind.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from jinja2 import Template
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from channels.base import Channel, Message
from dispatcher.audit import record
from dispatcher.delivery.registry import ChannelRegistry
from dispatcher.errors import OutageError
from dispatcher.links import LinkError, LinkPurpose, Links
from dispatcher.models import DeliveryStatus, MessageKind
from dispatcher.render.templates import DEFAULT_LOCALE, environment, language_of
from dispatcher.render.textfit import gsm_transliterate
from dispatcher.render.views import RecipientView
from dispatcher.settings import Settings
from dispatcher.store import (
    ADDRESS_COLUMNS,
    CONFIRMATION_COLUMNS,
    Delivery,
    Store,
    Subscriber,
    utcnow,
)
from dispatcher.subscribers.records import opt_outs

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


class ConfirmationReader(Protocol):
    """What composing a confirmation reads of a subscriber: an ORM row or a claimed one."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def locale(self) -> str: ...


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
    """Ask each of these address fields that waits for a confirmation (on file, not yet
    confirmed, not suppressed) for one: a delivery row each, sent now when the queue is
    in-process (it must not wait behind an outage's fan-out), else by the workers. Returns what
    was asked and how it stands; a failure is recorded on its row, never raised."""
    wanted = set(fields) & set(CONFIRMABLE)
    now = utcnow()
    asked: list[tuple[str, str, int]] = []  # field, channel, delivery id
    with pipeline.store.session() as session:
        subscriber = session.get(Subscriber, subscriber_id)
        if subscriber is None or subscriber.unsubscribed_at is not None:
            return []
        blocked = opt_outs(session, subscriber)
        for name in CONFIRMABLE:
            pending = (
                name in wanted
                and getattr(subscriber, ADDRESS_COLUMNS[name])
                and getattr(subscriber, CONFIRMATION_COLUMNS[name] or "") is None
                and name not in blocked
            )
            channel_name = channel_for(pipeline.registry, subscriber, name) if pending else None
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
    subscriber: ConfirmationReader,
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
            subscriber.id,
            confirmation_detail(secret_key.get_secret_value(), field, address),
        ),
        "manage_url": links.url(LinkPurpose.MANAGE, subscriber.id),
    }
    language = language_of(RecipientView(name=subscriber.name, locale=subscriber.locale))
    if channel.limits.has_subject:
        return Message(
            key=key,
            to=address,
            subject=" ".join(_template(language, "email.subject").render(context).split()),
            text=_template(language, "email.text").render(context).strip(),
            html=_template(language, "email.html").render(context).strip(),
            unsubscribe_url=links.url(LinkPurpose.UNSUBSCRIBE, subscriber.id),
        )
    context["company"] = gsm_transliterate(str(context["company"]))
    text = " ".join(_template(language, "sms.text").render(context).split())
    return Message(key=key, to=address, text=text)


def confirm_link(pipeline: Pipeline, token: str) -> Confirmed:
    """Confirm the address a confirmation link was sent to. Raises LinkError (forged: 403,
    expired: 410) or ConfirmationError (the subscriber or that address is gone: 410)."""
    with pipeline.store.session() as session:
        subscriber, field = _claimed(pipeline, session, token)
        return _mark(session, subscriber, field, actor="subscriber")


def check_link(pipeline: Pipeline, token: str) -> tuple[Subscriber, str]:
    """What `confirm_link` checks, without confirming: for the page that asks "confirm?"."""
    with pipeline.store.session() as session:
        return _claimed(pipeline, session, token)


def _claimed(pipeline: Pipeline, session: Session, token: str) -> tuple[Subscriber, str]:
    """The subscriber and address field a confirmation link is for, if it still applies."""
    claims = pipeline.links.read(LinkPurpose.CONFIRM, token)
    field, _, digest = (claims.detail or "").partition(":")
    if field not in CONFIRMABLE or not digest:
        raise LinkError("this link is not valid here", expired=False)
    subscriber = session.get(Subscriber, claims.subscriber_id)
    if subscriber is None:
        raise ConfirmationError("this subscription no longer exists", "gone")
    address = getattr(subscriber, ADDRESS_COLUMNS[field])
    expected = confirmation_detail(_secret_key(pipeline), field, address) if address else ""
    if not hmac.compare_digest(expected, claims.detail or ""):
        raise ConfirmationError(
            f"this link was for a {field} that has since been changed", "address_changed"
        )
    return subscriber, field


def confirm_reply(store: Store, phone: str) -> list[int]:
    """A YES (or START) texted from `phone` confirms every subscription waiting on that number;
    returns their ids. Twilio's signed webhook vouches that the reply came from the number."""
    with store.session() as session:
        waiting = session.scalars(
            select(Subscriber).where(
                Subscriber.phone == phone, Subscriber.phone_confirmed_at.is_(None)
            )
        ).all()
        return [_mark(session, s, "phone", actor="subscriber:sms").subscriber_id for s in waiting]


def confirmed_reply(store: Store, settings: Settings, subscriber_id: int) -> str:
    """The SMS that answers a YES (JA) which confirmed the number, in the subscriber's
    language."""
    with store.session() as session:
        subscriber = session.get(Subscriber, subscriber_id)
        locale = subscriber.locale if subscriber else DEFAULT_LOCALE
    language = language_of(RecipientView(name="", locale=locale))
    text = _template(language, "sms.confirmed").render(
        company=gsm_transliterate(settings.company_name)
    )
    return " ".join(text.split())


def _mark(session: Session, subscriber: Subscriber, field: str, *, actor: str) -> Confirmed:
    column = CONFIRMATION_COLUMNS[field] or ""
    already = getattr(subscriber, column) is not None
    if not already:
        setattr(subscriber, column, utcnow())
        record(session, actor, "address_confirmed", subscriber_id=subscriber.id, kind=field)
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


def _template(language: str, part: str) -> Template:
    names = [f"confirm/{language}/{part}.j2", f"confirm/{DEFAULT_LOCALE}/{part}.j2"]
    return environment().select_template(list(dict.fromkeys(names)))
