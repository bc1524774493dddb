"""A subscriber's own preferences: read, change, leave, come back, and be forgotten.

The preference centre, the one-click unsubscribe, the operator API and the CLI all change a
subscriber through these functions, so the rules hold whoever acts:

- a change is validated by merging it over the stored subscriber and running the same
  `SubscriberIn` rules as a new subscriber (one set of rules, one set of error messages);
- a new email address or phone number starts unconfirmed (double opt-in), unless an operator
  vouches for it; the caller sends the confirmation once the change is committed;
- a change made through a link (`keep_confirmed`) does not drop a confirmed address: the new one
  waits beside it (`pending_email`, `pending_phone`) and replaces it only once confirmed, so
  a link in other hands cannot quietly move someone's messages to another address;
- leaving suppresses every address, so it outlives the row and any re-import; coming back lifts
  only what the person did themselves (an unsubscribe), never a STOP, a bounce or a spam report,
  which only the channel that reported them can undo;
- erasing deletes the row and what the delivery log held about the person; delivery rows stay
  for the statistics, anonymous.

Every change writes an audit event in the same transaction, naming fields, never addresses.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any
from zoneinfo import available_timezones

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dispatcher.audit import record
from dispatcher.delivery.registry import ChannelRegistry
from dispatcher.errors import OutageError
from dispatcher.models import SubscriberIn, SuppressionReason
from dispatcher.settings import Settings, templates_dir
from dispatcher.store import (
    ADDRESS_COLUMNS,
    CONFIRMATION_COLUMNS,
    PENDING_COLUMNS,
    Delivery,
    Incident,
    Store,
    Subscriber,
    Suppression,
    utcnow,
)
from dispatcher.subscribers.records import as_input, check_channels, check_phone, check_webhook
from dispatcher.subscribers.suppressions import suppress

# Names of the languages we may have templates for; a language without a name shows its code.
LANGUAGE_NAMES = {
    "de": "Deutsch",
    "en": "English",
    "es": "Español",
    "fr": "Français",
    "it": "Italiano",
    "nl": "Nederlands",
    "pt": "Português",
}


class SubscriberNotFound(OutageError):
    """No subscriber with this id (never was, or erased)."""

    http_status = 404

    def __init__(self, subscriber_id: int) -> None:
        super().__init__(f"no subscriber with id {subscriber_id}")
        self.subscriber_id = subscriber_id


@dataclass(frozen=True)
class Saved:
    """The subscriber after a change, and what the caller still has to do about it."""

    subscriber: Subscriber
    changed: tuple[str, ...]  # the SubscriberIn fields that changed
    to_confirm: tuple[str, ...]  # address fields with a new, unconfirmed address: send a code
    webhook_secret_issued: bool = False  # a new webhook got a signing secret: show it once


def get(store: Store, subscriber_id: int) -> Subscriber:
    with store.session() as session:
        return _row(session, subscriber_id)


def update_preferences(
    store: Store,
    registry: ChannelRegistry,
    subscriber_id: int,
    changes: Mapping[str, Any],
    *,
    actor: str,
    keep_confirmed: bool = False,
    attributes: Mapping[str, str | None] | None = None,
) -> Saved:
    """Apply `changes` (SubscriberIn field names) after validating the merged whole.

    Raises pydantic's ValidationError or SubscriberError (both name the field) and changes
    nothing then. `confirmed: true` marks the addresses confirmed; only operators may pass it.
    `keep_confirmed` (a change through a link): a confirmed address that is replaced stays until
    the new one is confirmed.
    `attributes` sets (a value) or removes (None) single attributes, keeping the others; only
    operators change attributes (the preference centre shows them, and never passes them).
    """
    with store.session() as session:
        subscriber = _row(session, subscriber_id)
        before = as_input(subscriber)
        merged = {**before, **changes}
        if attributes:
            kept = {
                **before["attributes"],
                **{key.strip().lower(): v for key, v in attributes.items()},
            }
            merged["attributes"] = {key: value for key, value in kept.items() if value is not None}
        data = SubscriberIn.model_validate(merged)
        check_channels(data, registry)
        if data.phone != before["phone"]:  # a number on file stays, whatever the rules now
            check_phone(data, registry)
        after = data.model_dump(exclude={"confirmed"})
        after["webhook"] = str(data.webhook) if data.webhook else None
        if after["webhook"] != before["webhook"]:
            check_webhook(after["webhook"], registry)
        changed = tuple(name for name in after if after[name] != before[name])
        now = utcnow()
        to_confirm: list[str] = []
        held: list[str] = []
        for name in ("email", "phone"):
            confirmation = CONFIRMATION_COLUMNS[name]
            assert confirmation is not None
            new_address = after[name]
            if new_address != before[name]:
                was_confirmed = getattr(subscriber, confirmation) is not None and before[name]
                if keep_confirmed and was_confirmed and new_address and not data.confirmed:
                    after[name] = before[name]  # until the new one is confirmed
                    setattr(subscriber, PENDING_COLUMNS[name], new_address)
                    held.append(name)
                    to_confirm.append(name)
                    continue
                setattr(subscriber, confirmation, None)
                setattr(subscriber, PENDING_COLUMNS[name], None)
                if new_address and not data.confirmed:
                    to_confirm.append(name)
            if data.confirmed and new_address:
                setattr(subscriber, confirmation, getattr(subscriber, confirmation) or now)
                setattr(subscriber, PENDING_COLUMNS[name], None)
        secret_issued = _apply(subscriber, after)
        record(
            session,
            actor,
            "preferences_updated",
            subscriber_id=subscriber_id,
            fields=list(changed),
            confirmed_by_operator=data.confirmed,
            waiting_for_confirmation=held,
        )
        return Saved(subscriber, changed, tuple(to_confirm), secret_issued)


def _apply(subscriber: Subscriber, values: Mapping[str, Any]) -> bool:
    """Copy validated values onto the row; True when a new webhook got a signing secret."""
    for name, value in values.items():
        if name == "webhook":
            continue
        if name == "attributes":
            subscriber.set_attributes(value)
            continue
        setattr(subscriber, name, value)
    webhook = values["webhook"]
    issued = False
    if webhook != subscriber.webhook_url:
        issued = webhook is not None
        subscriber.webhook_secret = secrets.token_urlsafe(32) if webhook else None
    subscriber.webhook_url = webhook
    return issued


def unsubscribe_all(store: Store, subscriber_id: int, *, actor: str) -> Subscriber:
    """Leave in one step: nothing more is sent, and every address is suppressed so that a
    re-import or a new sign-up by someone else does not bring the messages back. Idempotent."""
    with store.session() as session:
        subscriber = _row(session, subscriber_id)
        if subscriber.unsubscribed_at is None:
            subscriber.unsubscribed_at = utcnow()
            record(session, actor, "unsubscribed", subscriber_id=subscriber_id)
        for kind, address in _addresses(subscriber):
            suppress(
                session,
                kind,
                address,
                SuppressionReason.UNSUBSCRIBED,
                actor=actor,
                subscriber_id=subscriber_id,
            )
        return subscriber


def resubscribe(store: Store, subscriber_id: int, *, actor: str) -> Subscriber:
    """Come back from "unsubscribe from everything": lifts the person's own opt-outs only."""
    with store.session() as session:
        subscriber = _row(session, subscriber_id)
        subscriber.unsubscribed_at = None
        for kind, address in _addresses(subscriber):
            found = session.scalars(
                select(Suppression).where(
                    Suppression.kind == kind,
                    Suppression.address == address,
                    Suppression.reason == SuppressionReason.UNSUBSCRIBED,
                )
            ).first()
            if found is not None:
                session.delete(found)
                record(session, actor, "suppression_lifted", subscriber_id=subscriber_id, kind=kind)
        record(session, actor, "resubscribed", subscriber_id=subscriber_id)
        return subscriber


def erase(store: Store, subscriber_id: int, *, actor: str) -> None:
    """Delete the subscriber and their addresses. Their deliveries stay as anonymous statistics
    (channel, status, times): the link to the person and the provider's id and error text, which
    may quote the address, are cleared. Suppressions stay: they are how an opt-out is honoured
    after the person is gone, and hold nothing but the address that must not be written to."""
    with store.session() as session:
        subscriber = _row(session, subscriber_id)
        session.execute(
            update(Delivery)
            .where(Delivery.subscriber_id == subscriber_id)
            .values(subscriber_id=None, provider_id=None, last_error=None)
        )
        session.delete(subscriber)
        record(session, actor, "subscriber_erased", subscriber_id=subscriber_id)


def known_components(store: Store, settings: Settings, also: Iterable[str] = ()) -> list[str]:
    """What a subscriber can choose from: the configured components, those incidents have
    named, and `also` (a subscriber's own, so a choice never silently disappears from the
    page)."""
    with store.session() as session:
        seen = {
            name
            for components in session.scalars(select(Incident.components))
            for name in components
        }
    return sorted({*settings.components, *seen, *also}, key=str.casefold)


@cache
def languages() -> tuple[str, ...]:
    """Languages with templates for at least one channel ("en" always)."""
    found = {"en"}
    for channel_dir in templates_dir().iterdir():
        if channel_dir.is_dir() and not channel_dir.name.startswith("_"):
            found.update(p.name for p in channel_dir.iterdir() if p.is_dir() and len(p.name) == 2)
    return tuple(sorted(found))


@cache
def time_zones() -> tuple[str, ...]:
    """IANA zone names a person would pick (Region/City), plus UTC."""
    return ("UTC", *sorted(z for z in available_timezones() if "/" in z and z[0].isupper()))


def _row(session: Session, subscriber_id: int) -> Subscriber:
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise SubscriberNotFound(subscriber_id)
    return subscriber


def _addresses(subscriber: Subscriber) -> list[tuple[str, str]]:
    return [
        (kind, address)
        for kind, column in ADDRESS_COLUMNS.items()
        if (address := getattr(subscriber, column))
    ]
