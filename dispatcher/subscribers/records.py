"""Adding and describing subscribers: validated in full before anything is stored.

The one place where a subscriber row is made from input (operator, import, public sign-up),
and where a row is turned back into that input (to validate a change against the same rules, to
export it). Suppressions are never touched here: an address that opted out stays opted out when
an operator adds or re-imports it (lifting one is the subscriber's own act, see preferences.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Mapping
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from dispatcher.audit import record
from dispatcher.delivery.registry import ChannelRegistry, UnknownChannel
from dispatcher.egress import EgressPolicy
from dispatcher.errors import OutageError
from dispatcher.models import SubscriberIn, SuppressionReason
from dispatcher.store import ADDRESS_COLUMNS, Store, Subscriber, Suppression, utcnow
from dispatcher.subscribers import numbers

# What a channel's address field is called in messages to people (not the CLI's --flags).
ADDRESS_NOUNS = {"email": "an email address", "phone": "a phone number", "webhook": "a webhook URL"}

# A CSV column `attr:region` holds each subscriber's region (export and import alike).
CSV_ATTRIBUTE_PREFIX = "attr:"


class SubscriberError(OutageError, ValueError):
    """A subscriber that cannot be stored as given; the message names the field. Still a
    ValueError: an import (imports.py) reports any ValueError of a row as that row's problem.
    `code`, when given, names the rule, for a page that says it in the person's language."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


def describe(error: ValidationError, names: Mapping[str, str] | None = None) -> str:
    """Pydantic's errors as one line per field, without the URL noise; `names` shows a field by
    the name its user typed it under (the CLI's options: quiet_start is --quiet-hours)."""
    parts = []
    for item in error.errors():
        location = [str(part) for part in item["loc"]]
        if names and location and location[0] in names:
            where = names[location[0]]
        else:
            where = ".".join(location) or "input"
        parts.append(f"{where}: {item['msg'].removeprefix('Value error, ')}")
    return "; ".join(dict.fromkeys(parts))


def check_channels(data: SubscriberIn, registry: ChannelRegistry) -> None:
    """Every chosen channel is installed, sends to a subscriber, and has its address given."""
    for name in data.channels:
        try:
            factory = registry.factory(name)
        except UnknownChannel as exc:
            raise SubscriberError(f"channels: {exc}") from None
        column = ADDRESS_COLUMNS.get(factory.address_field or "")
        if column is None:
            raise SubscriberError(f"channels: {name!r} is a broadcast channel, not for subscribers")
        if getattr(data, "webhook" if column == "webhook_url" else column) is None:
            noun = ADDRESS_NOUNS.get(factory.address_field or "", factory.address_field)
            raise SubscriberError(f"channels: {name!r} needs {noun}")


def check_phone(data: SubscriberIn, registry: ChannelRegistry) -> None:
    """A number we would text: a mobile in OUTAGE_SMS_COUNTRIES, or what an operator vouches
    for (`data.confirmed`), never a premium-rate one (dispatcher/subscribers/numbers.py)."""
    if data.phone is None:
        return
    why = numbers.refusal(data.phone, registry.settings.sms_countries, vouched=data.confirmed)
    if why is not None:
        raise SubscriberError(f"phone: {why}")


def check_webhook(url: str | None, registry: ChannelRegistry) -> None:
    """A webhook URL names a receiver we may call: not an internal address or name, unless its
    network is allowed (dispatcher/egress.py). Checked when a URL is added or changed."""
    if url is None:
        return
    why = EgressPolicy.from_settings(registry.settings).url_refusal(url)
    if why is not None:
        raise SubscriberError(f"webhook: {why}")


def new_row(data: SubscriberIn) -> Subscriber:
    """The row for a validated subscriber (addresses confirmed at once if an operator vouched)."""
    confirmed_at = utcnow() if data.confirmed else None
    subscriber = Subscriber(
        name=data.name,
        email=data.email,
        phone=data.phone,
        webhook_url=str(data.webhook) if data.webhook else None,
        webhook_secret=secrets.token_urlsafe(32) if data.webhook else None,
        channels=data.channels,
        components=data.components,
        min_severity=data.min_severity,
        locale=data.locale,
        email_confirmed_at=confirmed_at if data.email else None,
        phone_confirmed_at=confirmed_at if data.phone else None,
        internal=data.internal,
        tier=data.tier,
        quiet_start=data.quiet_start,
        quiet_end=data.quiet_end,
        timezone=data.timezone,
    )
    subscriber.set_attributes(data.attributes)
    return subscriber


def sign_up(
    store: Store, registry: ChannelRegistry, data: SubscriberIn, offered: Collection[str]
) -> int:
    """A person signing themselves up (the API, the status page's form): the subscriber to send
    confirmations to. An address already known gives that subscriber again, so the answer does
    not tell strangers who is subscribed, and nobody is added twice. Only components this
    dispatcher offers may be named."""
    check_sign_up(registry, data, offered)
    with store.session() as session:
        known = find_by_address(session, data.email, data.phone)
        if known is not None:
            return known.id
    return add(store, registry, data, actor="subscriber").id


def check_sign_up(registry: ChannelRegistry, data: SubscriberIn, offered: Collection[str]) -> None:
    """What `sign_up` checks before storing anything, for a caller that has more to check
    before it stores (the throttle); raises SubscriberError naming the field."""
    unknown = [name for name in data.components if name not in offered]
    if unknown:
        raise SubscriberError(f"components: unknown component {unknown[0]!r}")
    check_channels(data, registry)
    check_phone(data, registry)


def add(
    store: Store, registry: ChannelRegistry, data: SubscriberIn, *, actor: str = "operator"
) -> Subscriber:
    check_channels(data, registry)
    check_phone(data, registry)
    check_webhook(str(data.webhook) if data.webhook else None, registry)
    with store.session() as session:
        subscriber = new_row(data)
        session.add(subscriber)
        session.flush()
        record(
            session,
            actor,
            "subscriber_added",
            subscriber_id=subscriber.id,
            confirmed_by_operator=data.confirmed,
        )
        return subscriber


def list_all(store: Store, *, limit: int | None = None, offset: int = 0) -> list[Subscriber]:
    with store.session() as session:
        query = select(Subscriber).order_by(Subscriber.id).offset(offset).limit(limit)
        return list(session.scalars(query))


def find_by_address(session: Session, email: str | None, phone: str | None) -> Subscriber | None:
    """The first subscriber holding one of these (normalised) addresses, if any; emails are
    compared without case ("Ada@Example.org" is ada@example.org)."""
    conditions = []
    if email:
        conditions.append(func.lower(Subscriber.email) == email.lower())
    if phone:
        conditions.append(Subscriber.phone == phone)
    if not conditions:
        return None
    return session.scalars(
        select(Subscriber).where(or_(*conditions)).order_by(Subscriber.id)
    ).first()


def as_input(subscriber: Subscriber) -> dict[str, Any]:
    """The row as SubscriberIn fields, so a change is validated by merging it over these: the
    same rules for a new subscriber, an operator's PATCH and a preference-centre save."""
    return {
        "name": subscriber.name,
        "email": subscriber.email,
        "phone": subscriber.phone,
        "webhook": subscriber.webhook_url,
        "channels": list(subscriber.channels),
        "components": list(subscriber.components),
        "min_severity": subscriber.min_severity,
        "locale": subscriber.locale,
        "internal": subscriber.internal,
        "tier": subscriber.tier,
        "quiet_start": subscriber.quiet_start,
        "quiet_end": subscriber.quiet_end,
        "timezone": subscriber.timezone,
        "attributes": subscriber.attributes,
    }


def as_dict(subscriber: Subscriber, *, with_secret: bool = False) -> dict[str, Any]:
    """What the CLI's --json, the API and the export show of a subscriber: preferences and
    consent, never the webhook secret unless asked (it is shown once, when made)."""
    data: dict[str, Any] = {
        "id": subscriber.id,
        **as_input(subscriber),
        "email_confirmed": subscriber.email_confirmed_at is not None,
        "phone_confirmed": subscriber.phone_confirmed_at is not None,
        # A new address given through a link, waiting for its confirmation.
        "pending_email": subscriber.pending_email,
        "pending_phone": subscriber.pending_phone,
        "unsubscribed": subscriber.unsubscribed_at is not None,
        "created_at": subscriber.created_at,
    }
    if with_secret and subscriber.webhook_secret:
        data["webhook_secret"] = subscriber.webhook_secret
    return data


def opt_outs(session: Session, subscriber: Subscriber) -> dict[str, SuppressionReason]:
    """The subscriber's suppressed address fields (email, phone, webhook) and why."""
    found: dict[str, SuppressionReason] = {}
    for field_name, column in ADDRESS_COLUMNS.items():
        address = getattr(subscriber, column)
        if address:
            reason = session.scalar(
                select(Suppression.reason).where(
                    Suppression.kind == field_name, Suppression.address == address
                )
            )
            if reason is not None:
                found[field_name] = reason
    return found
