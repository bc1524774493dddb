"""The preference centre's form: what it shows, what a person submitted, and what is wrong with
it, worded for a person in their language (`Words`). No request and no pipeline here:
web/preferences.py reads and renders."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from dispatcher.store import Subscriber
from dispatcher.subscribers import preferences
from dispatcher.subscribers.records import SubscriberError
from dispatcher.web.forms import Form
from dispatcher.web.pages import TYPED_ADDRESSES, sentence
from dispatcher.web.wording import Words

# Where pydantic's own rules name no code of ours: (field, error type) -> catalogue key.
_ERROR_KEYS = {
    ("quiet_start", "string_pattern_mismatch"): "error.quiet_time",
    ("quiet_end", "string_pattern_mismatch"): "error.quiet_time",
    ("channels", "too_short"): "error.no_channel",
}


def channel_label(words: Words, name: str) -> str:
    """A channel as a person calls it ("Text message (SMS)"); an unknown one by its name."""
    key = f"channel.{name}"
    return words(key) if words.has(key) else name.replace("_", " ").capitalize()


@dataclass(frozen=True)
class FormState:
    """What the form shows: the stored preferences, or what was just submitted (after an error
    or a move without JavaScript, so nothing typed is lost)."""

    order: tuple[str, ...]  # every channel offered, in the person's order
    enabled: frozenset[str]
    email: str
    phone: str
    components: frozenset[str]
    min_severity: str
    quiet: bool
    quiet_start: str
    quiet_end: str
    timezone: str
    locale: str
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of_subscriber(cls, subscriber: Subscriber, offered: list[str]) -> FormState:
        return cls(
            order=_ordered(subscriber.channels, offered),
            enabled=frozenset(subscriber.channels),
            email=subscriber.email or "",
            phone=subscriber.phone or "",
            components=frozenset(subscriber.components),
            min_severity=str(subscriber.min_severity),
            quiet=subscriber.quiet_start is not None,
            quiet_start=subscriber.quiet_start or "",
            quiet_end=subscriber.quiet_end or "",
            timezone=subscriber.timezone,
            locale=subscriber.locale,
        )

    @classmethod
    def of_form(cls, form: Form, offered: list[str]) -> FormState:
        return cls(
            order=_ordered(form.getlist("order"), offered),
            enabled=frozenset(form.getlist("channels")),
            email=form.get("email"),
            phone=form.get("phone"),
            components=frozenset(form.getlist("components")),
            min_severity=form.get("min_severity"),
            quiet=form.get("quiet") == "on",
            quiet_start=form.get("quiet_start"),
            quiet_end=form.get("quiet_end"),
            timezone=form.get("timezone") or "UTC",
            locale=form.get("locale"),
        )

    def moved(self, move: str) -> FormState:
        """The order after "channel:up" or "channel:down" (the no-JavaScript buttons)."""
        name, _, direction = move.partition(":")
        order = list(self.order)
        if name not in order or direction not in ("up", "down"):
            return self
        index = order.index(name)
        other = index - 1 if direction == "up" else index + 1
        if 0 <= other < len(order):
            order[index], order[other] = order[other], order[index]
        return replace(self, order=tuple(order))

    def problems(
        self, known_components: list[str], address_fields: dict[str, str], words: Words
    ) -> dict[str, str]:
        """What only this form can get wrong, worded for a person; the rest is SubscriberIn's."""
        found: dict[str, str] = {}
        for name in self.order:
            needed = address_fields.get(name, "")
            if name in self.enabled and needed in TYPED_ADDRESSES and not getattr(self, needed):
                found[needed] = words(f"error.need_{needed}", channel=channel_label(words, name))
        unknown = sorted(self.components - set(known_components))
        if unknown:
            found["components"] = words("error.unknown_component", name=repr(unknown[0]))
        if self.locale not in preferences.languages():
            found["locale"] = words("error.choose_language")
        if self.quiet and not (self.quiet_start and self.quiet_end):
            found["quiet_start"] = words("error.quiet_both")
        return found

    def changes(self) -> dict[str, Any]:
        """The submitted values as SubscriberIn fields."""
        return {
            "channels": [name for name in self.order if name in self.enabled],
            "email": self.email or None,
            "phone": self.phone or None,
            "components": sorted(self.components),
            "min_severity": self.min_severity,
            "quiet_start": (self.quiet_start or None) if self.quiet else None,
            "quiet_end": (self.quiet_end or None) if self.quiet else None,
            "timezone": self.timezone,
            "locale": self.locale,
        }


def _ordered(preferred: list[str], offered: list[str]) -> tuple[str, ...]:
    """The person's channels first, in their order, then the rest of what is offered."""
    first = [name for name in dict.fromkeys(preferred) if name in offered]
    return (*first, *(name for name in offered if name not in first))


def errors_of(exc: ValidationError | SubscriberError, words: Words) -> dict[str, str]:
    """Field name -> a sentence for a person in their language, found by the error's code
    (pydantic's wording is for developers, and English); a rule without a sentence of its own
    says "please check this" in their language (an English page keeps the rule's own words)."""
    if isinstance(exc, SubscriberError):
        name, _, message = str(exc).partition(": ")
        return {name: _said(words, exc.code, message)}
    found: dict[str, str] = {}
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else "quiet_start"
        key = _ERROR_KEYS.get((name, error["type"]), f"error.{error['type']}")
        message = str(error["msg"]).removeprefix("Value error, ")
        found.setdefault(name, words(key) if words.has(key) else _said(words, None, message))
    return found


def _said(words: Words, code: str | None, message: str) -> str:
    """The catalogue's sentence for `code`, else the rule's own (English) or a generic one."""
    if code and words.has(f"error.{code}"):
        return words(f"error.{code}")
    return sentence(message) if words.language == "en" else words("error.generic")
