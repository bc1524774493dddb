"""Adding, importing and describing subscribers: validated in full before anything is stored.

The one place where a subscriber row is made from input (operator, CSV import, public sign-up),
and where a row is turned back into that input (to validate a change against the same rules, to
export it). Suppressions are never touched here: an address that opted out stays opted out when
an operator adds or re-imports it (lifting one is the subscriber's own act, see preferences.py).
"""

from __future__ import annotations

import csv
import secrets
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from dispatcher.audit import record
from dispatcher.delivery.registry import ChannelRegistry, UnknownChannel
from dispatcher.errors import OutageError
from dispatcher.models import SubscriberIn, SuppressionReason
from dispatcher.store import ADDRESS_COLUMNS, Store, Subscriber, Suppression, utcnow

# What a channel's address field is called in messages to people (not the CLI's --flags).
ADDRESS_NOUNS = {"email": "an email address", "phone": "a phone number", "webhook": "a webhook URL"}


class SubscriberError(OutageError, ValueError):
    """A subscriber that cannot be stored as given; the message names the field. Still a
    ValueError: `import_csv` reports any ValueError of a row as that row's problem."""


def describe(error: ValidationError) -> str:
    """Pydantic's errors as one line per field, without the URL noise."""
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "input"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


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


def _row(data: SubscriberIn) -> Subscriber:
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
    unknown = [name for name in data.components if name not in offered]
    if unknown:
        raise SubscriberError(f"components: unknown component {unknown[0]!r}")
    check_channels(data, registry)
    with store.session() as session:
        known = find_by_address(session, data.email, data.phone)
        if known is not None:
            return known.id
    return add(store, registry, data, actor="subscriber").id


def add(
    store: Store, registry: ChannelRegistry, data: SubscriberIn, *, actor: str = "operator"
) -> Subscriber:
    check_channels(data, registry)
    with store.session() as session:
        subscriber = _row(data)
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
    """The first subscriber holding one of these (normalised) addresses, if any."""
    conditions = []
    if email:
        conditions.append(Subscriber.email == email)
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


@dataclass
class ImportReport:
    imported: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line number, what is wrong)
    still_suppressed: int = 0  # imported, but an address opted out earlier and stays so


CSV_LIST_COLUMNS = ("channels", "components")
CSV_ATTRIBUTE_PREFIX = "attr:"  # a column `attr:region` holds each subscriber's region
# Columns an export adds that an import ignores, so an export can be imported elsewhere.
CSV_EXPORT_ONLY = ("id", "email_confirmed", "phone_confirmed", "unsubscribed", "created_at")


def import_csv(store: Store, registry: ChannelRegistry, path: Path) -> ImportReport:
    """Import the good rows and report the bad ones by line; lists are separated by ';' or ','.

    Columns: name,email,phone,webhook,channels,components,min_severity,locale,confirmed, and
    `attr:<key>` for attributes (an empty cell: no such attribute).
    """
    report = ImportReport()
    good: list[Subscriber] = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            line = reader.line_num
            fields = {key.strip(): (value or "").strip() for key, value in row.items() if key}
            try:
                data = SubscriberIn.model_validate(_csv_fields(fields))
                check_channels(data, registry)
            except ValidationError as exc:
                report.errors.append((line, describe(exc)))
                continue
            except ValueError as exc:
                report.errors.append((line, str(exc)))
                continue
            good.append(_row(data))
    with store.session() as session:
        session.add_all(good)
        session.flush()
        for subscriber in good:
            # Opted-out addresses stay suppressed: an import is not the person's consent.
            blocked = sorted(opt_outs(session, subscriber))
            report.still_suppressed += bool(blocked)
            record(
                session,
                "operator",
                "subscriber_imported",
                subscriber_id=subscriber.id,
                file=path.name,
                confirmed_by_operator=subscriber.email_confirmed_at is not None
                or subscriber.phone_confirmed_at is not None,
                still_suppressed=blocked,
            )
    report.imported = len(good)
    return report


def _csv_fields(fields: dict[str, str]) -> dict[str, object]:
    attributes = {
        key.removeprefix(CSV_ATTRIBUTE_PREFIX): value
        for key, value in fields.items()
        if key.startswith(CSV_ATTRIBUTE_PREFIX) and value != ""
    }
    cleaned: dict[str, object] = {
        key: value
        for key, value in fields.items()
        if value != "" and key not in CSV_EXPORT_ONLY and not key.startswith(CSV_ATTRIBUTE_PREFIX)
    }
    cleaned["attributes"] = attributes
    for key in CSV_LIST_COLUMNS:
        raw = fields.get(key, "")
        cleaned[key] = [item for item in raw.replace(";", ",").split(",") if item.strip()]
    if "confirmed" in cleaned:
        cleaned["confirmed"] = str(cleaned["confirmed"]).lower() in ("1", "true", "yes", "y")
    return cleaned
