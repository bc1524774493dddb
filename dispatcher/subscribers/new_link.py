""" "Send me a new link": sign out every link a subscriber was sent, and send them a fresh one.

Why: a link is the whole credential of the preference centre (dispatcher/links.py), and a
forwarded email or a borrowed phone puts one in other hands. Asking for a new link changes the
subscriber's link secret, whose fingerprint every old link carries, so all of them stop working
at once (410); the new preference link goes to a confirmed address of theirs, never to one just
typed (that would hand the subscription to whoever typed it): one message, on the first of their
channels whose address is confirmed and takes our messages. It is a delivery row of its own kind
(`MessageKind.LINK`, no update), sent by the engine like every other message, composed when it is
sent, so it always carries the latest link.

Asking again is harmless: the link the request came from is signed out by the first request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.orm import Session

from channels.base import Channel, Message
from dispatcher.audit import record
from dispatcher.delivery.registry import ChannelRegistry
from dispatcher.errors import OutageError
from dispatcher.links import LinkPurpose, Links, new_link_secret
from dispatcher.models import DeliveryStatus, MessageKind
from dispatcher.render import notices
from dispatcher.render.notices import Addressee
from dispatcher.settings import Settings
from dispatcher.store import (
    ADDRESS_COLUMNS,
    CONFIRMATION_COLUMNS,
    Delivery,
    Store,
    Subscriber,
    utcnow,
)
from dispatcher.subscribers.confirmations import CONFIRMABLE, CONFIRMATION_PRIORITY
from dispatcher.subscribers.preferences import SubscriberNotFound
from dispatcher.subscribers.records import opt_outs


class NoConfirmedAddress(OutageError):
    """Nowhere to send a new link: no confirmed address that still takes our messages."""

    http_status = 409


@dataclass(frozen=True)
class Asked:
    """A new link on its way: where to, and its delivery row (for `Pipeline.deliver`)."""

    field: str
    channel: str
    address: str
    delivery_id: int


class _Reachable(Protocol):
    """What choosing where a link may go reads of a subscriber (an ORM row or a claimed one)."""

    @property
    def email(self) -> str | None: ...
    @property
    def phone(self) -> str | None: ...
    @property
    def email_confirmed_at(self) -> object: ...
    @property
    def phone_confirmed_at(self) -> object: ...
    @property
    def unsubscribed_at(self) -> object: ...


def confirmed_address(subscriber: _Reachable, field: str | None) -> str | None:
    """The subscriber's address of `field` when a link may go there: confirmed, and the
    subscriber not unsubscribed (opt-outs by address are the caller's to check)."""
    if field not in CONFIRMABLE or subscriber.unsubscribed_at is not None:
        return None
    address: str | None = getattr(subscriber, ADDRESS_COLUMNS[field])
    confirmed = getattr(subscriber, CONFIRMATION_COLUMNS[field] or "")
    return address if address and confirmed is not None else None


def destination(
    session: Session, registry: ChannelRegistry, subscriber: Subscriber
) -> tuple[str, str, str] | None:
    """Where a new link goes: (field, channel, address) of the first channel, in the
    subscriber's order and then the installed ones, with an address it may go to."""
    blocked = opt_outs(session, subscriber)
    for name in [*subscriber.channels, *registry.names]:
        factory = registry.factories.get(name)
        field = factory.address_field if factory is not None else None
        address = confirmed_address(subscriber, field)
        if field is not None and address is not None and field not in blocked:
            return field, name, address
    return None


def sign_out(store: Store, registry: ChannelRegistry, subscriber_id: int) -> Asked:
    """Change the subscriber's link secret (every link sent so far stops working) and queue the
    new link to a confirmed address; the caller hands the row to `Pipeline.deliver` once this
    has returned (committed). NoConfirmedAddress, changing nothing, when there is none."""
    with store.session() as session:
        subscriber = session.get(Subscriber, subscriber_id)
        if subscriber is None:
            raise SubscriberNotFound(subscriber_id)
        found = destination(session, registry, subscriber)
        if found is None:
            raise NoConfirmedAddress(
                "we can only send a new link to a confirmed email address or phone number "
                "that still receives our messages"
            )
        field, channel, address = found
        subscriber.link_secret = new_link_secret()
        record(session, "subscriber", "links_signed_out", subscriber_id=subscriber_id, kind=field)
        row = Delivery(
            kind=MessageKind.LINK,
            subscriber_id=subscriber_id,
            channel=channel,
            recipient=str(subscriber_id),
            status=DeliveryStatus.QUEUED,
            priority=CONFIRMATION_PRIORITY,  # a person is waiting for it
            due_at=utcnow(),
        )
        session.add(row)
        session.flush()
        return Asked(field, channel, address, row.id)


def compose(
    channel: Channel,
    links: Links,
    settings: Settings,
    key: int,
    subscriber: Addressee,
    address: str,
) -> Message:
    """The new-link message to `address`, in the subscriber's language."""
    context = {
        "company": settings.company_name,
        "name": subscriber.name,
        "manage_url": links.url(LinkPurpose.MANAGE, subscriber),
    }
    return notices.compose(
        "link",
        channel.limits,
        key,
        subscriber,
        address,
        context,
        unsubscribe_url=links.url(LinkPurpose.UNSUBSCRIBE, subscriber),
    )
