"""Adding, importing and removing subscribers: validated in full before anything is stored."""

from __future__ import annotations

import csv
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy import select

from dispatcher.audit import record
from dispatcher.models import SubscriberIn
from dispatcher.registry import ChannelRegistry
from dispatcher.store import ADDRESS_COLUMNS, Store, Subscriber, utcnow


class SubscriberError(ValueError):
    """A subscriber that cannot be stored as given; the message names the field."""


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
        factory = registry.factory(name)
        column = ADDRESS_COLUMNS.get(factory.address_field or "")
        if column is None:
            raise SubscriberError(f"channels: {name!r} is a broadcast channel, not for subscribers")
        if getattr(data, "webhook" if column == "webhook_url" else column) is None:
            raise SubscriberError(f"channels: {name!r} needs --{factory.address_field}")


def _row(data: SubscriberIn) -> Subscriber:
    confirmed_at = utcnow() if data.confirmed else None
    return Subscriber(
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


def remove(store: Store, subscriber_id: int) -> None:
    with store.session() as session:
        subscriber = session.get(Subscriber, subscriber_id)
        if subscriber is None:
            raise SubscriberError(f"no subscriber with id {subscriber_id}")
        session.delete(subscriber)
        record(session, "operator", "subscriber_removed", subscriber_id=subscriber_id)


def list_all(store: Store) -> list[Subscriber]:
    with store.session() as session:
        return list(session.scalars(select(Subscriber).order_by(Subscriber.id)))


@dataclass
class ImportReport:
    imported: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line number, what is wrong)


CSV_LIST_COLUMNS = ("channels", "components")


def import_csv(store: Store, registry: ChannelRegistry, path: Path) -> ImportReport:
    """Import the good rows and report the bad ones by line; lists are separated by ';' or ','.

    Columns: name,email,phone,webhook,channels,components,min_severity,locale,confirmed.
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
            record(
                session,
                "operator",
                "subscriber_imported",
                subscriber_id=subscriber.id,
                file=path.name,
            )
    report.imported = len(good)
    return report


def _csv_fields(fields: dict[str, str]) -> dict[str, object]:
    cleaned: dict[str, object] = {key: value for key, value in fields.items() if value != ""}
    for key in CSV_LIST_COLUMNS:
        raw = fields.get(key, "")
        cleaned[key] = [item for item in raw.replace(";", ",").split(",") if item.strip()]
    if "confirmed" in cleaned:
        cleaned["confirmed"] = str(cleaned["confirmed"]).lower() in ("1", "true", "yes", "y")
    return cleaned
