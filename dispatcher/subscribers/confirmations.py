"""Double opt-in: nothing is sent to a new email address or phone number until its owner says yes.

A confirmation is one message on the address's own channel, sent straight through the adapter
(not through the incident deliveries table: it belongs to no update and must not wait behind an
outage's fan-out). It carries a signed confirmation link; an SMS also accepts the reply YES,
because a reply from the number proves possession as well as a link does.

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
from collections.abc import Iterable
from dataclasses import dataclass

from jinja2 import Template
from sqlalchemy import select
from sqlalchemy.orm import Session

from channels.base import Message
from dispatcher.audit import record
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.delivery.registry import ChannelRegistry
from dispatcher.errors import OutageError
from dispatcher.links import LinkError, LinkPurpose
from dispatcher.render.templates import DEFAULT_LOCALE, environment, language_of
from dispatcher.render.textfit import gsm_transliterate
from dispatcher.render.views import RecipientView
from dispatcher.store import ADDRESS_COLUMNS, CONFIRMATION_COLUMNS, Store, Subscriber, utcnow
from dispatcher.subscribers.records import opt_outs
from dispatcher.subscribers.suppressions import suppress

log = logging.getLogger(__name__)

CONFIRMABLE = ("email", "phone")  # address fields that need a double opt-in


class ConfirmationError(OutageError):
    """A confirmation link that no longer applies: the subscriber or the address is gone."""

    http_status = 410


@dataclass(frozen=True)
class Requested:
    """One confirmation: on which channel, and whether the provider accepted it."""

    field: str
    channel: str
    sent: bool


@dataclass(frozen=True)
class Confirmed:
    subscriber_id: int
    field: str
    already: bool  # it was confirmed before (a second click, or a reply after the link)


def request(
    pipeline: Pipeline, subscriber_id: int, fields: Iterable[str] = CONFIRMABLE
) -> list[Requested]:
    """Send a confirmation to each of these address fields that waits for one (on file, not yet
    confirmed, not suppressed). Returns what was attempted; a failure is logged, never raised."""
    wanted = set(fields) & set(CONFIRMABLE)
    with pipeline.store.session() as session:
        subscriber = session.get(Subscriber, subscriber_id)
        if subscriber is None or subscriber.unsubscribed_at is not None:
            return []
        blocked = opt_outs(session, subscriber)
        pending = [
            name
            for name in CONFIRMABLE
            if name in wanted
            and getattr(subscriber, ADDRESS_COLUMNS[name])
            and getattr(subscriber, CONFIRMATION_COLUMNS[name] or "") is None
            and name not in blocked
        ]
    results = []
    for name in pending:
        channel_name = channel_for(pipeline.registry, subscriber, name)
        if channel_name is None:
            continue
        results.append(_send(pipeline, subscriber, name, channel_name))
    return results


def _send(pipeline: Pipeline, subscriber: Subscriber, field: str, channel_name: str) -> Requested:
    address = getattr(subscriber, ADDRESS_COLUMNS[field])
    secret_key = _secret_key(pipeline)
    links = pipeline.links
    context = {
        "company": pipeline.settings.company_name,
        "name": subscriber.name,
        "confirm_url": links.url(
            LinkPurpose.CONFIRM, subscriber.id, confirmation_detail(secret_key, field, address)
        ),
        "manage_url": links.url(LinkPurpose.MANAGE, subscriber.id),
    }
    language = language_of(RecipientView(name=subscriber.name, locale=subscriber.locale))
    channel = pipeline.registry.get(channel_name)
    if channel.limits.has_subject:
        message = Message(
            key=0,
            to=address,
            subject=" ".join(_template(language, "email.subject").render(context).split()),
            text=_template(language, "email.text").render(context).strip(),
            html=_template(language, "email.html").render(context).strip(),
            unsubscribe_url=links.url(LinkPurpose.UNSUBSCRIBE, subscriber.id),
        )
    else:
        context["company"] = gsm_transliterate(str(context["company"]))
        text = " ".join(_template(language, "sms.text").render(context).split())
        message = Message(key=0, to=address, text=text)
    (outcome,) = channel.send([message])
    with pipeline.store.session() as session:
        if outcome.suppress is not None:  # e.g. Twilio: this number had texted STOP before
            suppress(
                session,
                field,
                address,
                outcome.suppress,
                actor=f"provider:{channel_name}",
                subscriber_id=subscriber.id,
            )
        record(
            session,
            "system",
            "confirmation_sent" if outcome.ok else "confirmation_failed",
            subscriber_id=subscriber.id,
            kind=field,
            channel=channel_name,
        )
    if not outcome.ok:
        log.warning(
            "confirmation to subscriber %s by %s failed (%s)",
            subscriber.id,
            channel_name,
            outcome.failure,
        )
    return Requested(field=field, channel=channel_name, sent=outcome.ok)


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
        raise ConfirmationError("this subscription no longer exists")
    address = getattr(subscriber, ADDRESS_COLUMNS[field])
    expected = confirmation_detail(_secret_key(pipeline), field, address) if address else ""
    if not hmac.compare_digest(expected, claims.detail or ""):
        raise ConfirmationError(f"this link was for a {field} that has since been changed")
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
