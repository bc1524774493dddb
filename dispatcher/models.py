"""The vocabulary of the dispatcher: closed sets as enums, and the validated shapes of input.

Every enum member carries a comment saying what it means to an operator, because these names
show up verbatim in the CLI, the API and the delivery records.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError


class IncidentState(StrEnum):
    """Where an incident stands; each change is announced as an update."""

    INVESTIGATING = "investigating"  # known to be broken, cause not yet known
    IDENTIFIED = "identified"  # cause known, fix under way
    MONITORING = "monitoring"  # fix deployed, watching that it holds
    RESOLVED = "resolved"  # over; the last message thanks people and closes it
    SCHEDULED = "scheduled"  # planned maintenance, announced ahead of time
    CANCELLED = "cancelled"  # planned maintenance called off before it began: it never happened

    @property
    def is_open(self) -> bool:
        return self not in (IncidentState.RESOLVED, IncidentState.CANCELLED)


class Severity(StrEnum):
    """How bad an incident is; subscribers choose a threshold below which they hear nothing."""

    MINOR = "minor"  # degraded, most people will not notice
    MAJOR = "major"  # a feature is down for many
    CRITICAL = "critical"  # the service is down; goes through quiet hours

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]

    def at_least(self, threshold: Severity) -> bool:
        return self.rank >= threshold.rank


_SEVERITY_RANK = {Severity.MINOR: 1, Severity.MAJOR: 2, Severity.CRITICAL: 3}


class DeliveryStatus(StrEnum):
    """The life of one message to one recipient on one channel."""

    QUEUED = "queued"  # waiting to be sent (first time, or a retry at `due_at`)
    SENDING = "sending"  # claimed by a worker under a lease; back to queued if the lease expires
    SENT = "sent"  # the provider accepted it
    DELIVERED = "delivered"  # the provider confirmed it reached the recipient
    FAILED = "failed"  # given up, and no further channel to fall back to
    FELL_BACK = "fell_back"  # given up on this channel; the next channel has its own delivery
    SUPPRESSED = "suppressed"  # not sent: the recipient opted out or was removed after queueing
    SUPERSEDED = "superseded"  # not sent: a newer update of the incident reached them instead

    @property
    def is_final(self) -> bool:
        return self not in (DeliveryStatus.QUEUED, DeliveryStatus.SENDING)


class MessageKind(StrEnum):
    """What a delivery carries: every outgoing message is a delivery row, sent by one engine."""

    UPDATE = "update"  # an incident update (`update_id` names it)
    CONFIRMATION = "confirmation"  # "is this your address?": the double opt-in, no update
    NOTICE = "notice"  # a word to the team from the dispatcher itself (sign-up by text paused)
    LINK = "link"  # a new preference link, asked for after signing out the old ones; no update


class WaitReason(StrEnum):
    """Why a queued delivery is due later than it was made: what an operator is told waits."""

    COALESCING = "coalescing"  # a message about this incident reached them moments ago
    QUIET_HOURS = "quiet_hours"  # the subscriber's quiet hours (non-critical incidents)
    HOURLY_CAP = "hourly_cap"  # this person had their hourly share of messages on this channel
    RETRY = "retry"  # a transient failure: tried again after a backoff
    BREAKER = "breaker"  # the provider's circuit is open: held until it is probed
    RATE_LIMIT = "rate_limit"  # the provider account's rate bucket: paced
    NEWER_UPDATE = "newer_update"  # a newer update of the incident is still on its way to them


class ReceiptStatus(StrEnum):
    """What a provider's later word about a message it accepted means to us (its delivery
    receipt); each provider's events module maps its own words to these."""

    DELIVERED = "delivered"  # it reached the recipient (or was opened, which says as much)
    UNDELIVERED = "undelivered"  # the provider gave up on it: try the next channel
    BOUNCED = "bounced"  # the address does not exist: suppress it, and try the next channel
    COMPLAINED = "complained"  # the recipient marked it as spam: suppress the address
    UNSUBSCRIBED = "unsubscribed"  # the recipient used the provider's unsubscribe: suppress
    PENDING = "pending"  # still on its way (queued, sent to the carrier, deferred)
    UNKNOWN = "unknown"  # a word we do not know: stored, nothing done


class Cadence(StrEnum):
    """Which of an incident's updates a channel carries (see dispatcher/policy/pacing.py)."""

    EVERY_UPDATE = "every_update"  # all of them
    STATE_CHANGES = "state_changes"  # only those that move the incident to a new state
    OPEN_AND_RESOLVE = "open_and_resolve"  # only its opening (or reopening) and its end


class Audience(StrEnum):
    """Who an update is for."""

    EVERYONE = "everyone"  # every subscriber it concerns, and the public post
    INTERNAL = "internal"  # the team only: reminders, drafts' notes
    NOTIFIED = "notified"  # those who were told of the incident: the post-incident review
    # Those who were told of it, the team and the public post too: news that changes what they
    # heard (the incident is back; a maintenance moved or called off), for nobody else.
    TOLD = "told"


class UpdateKind(StrEnum):
    """What an update is to a person following the incident."""

    OPENED = "opened"  # the first update, or the incident broke again after resolving
    STATE_CHANGE = "state_change"  # moved to another state
    SAME_STATE = "same_state"  # more news, same state
    RESOLVED = "resolved"  # it is over


class FailureReason(StrEnum):
    """Why a send failed, in the operator's words: decided once, by the adapter, beside the
    FailureKind, and kept on the delivery row (`error_reason`) for metrics and inspection."""

    RATE_LIMITED = "rate_limited"  # the provider said slow down (429): pace lower or buy more
    SERVER_ERROR = "server_error"  # the provider failed (5xx, an unreadable answer): their outage
    TIMEOUT = "timeout"  # no answer in time (408, a client timeout): maybe sent, maybe not
    REJECTED = "rejected"  # refused for good (other 4xx): bad address, content or credentials
    UNREACHABLE = "unreachable"  # no connection at all (DNS, refused, reset): network or URL
    RENDER = "render"  # never sent: the template failed or the address is missing


class SuppressionReason(StrEnum):
    """Why an address receives nothing more; kept apart from the subscriber so it survives
    deletion and re-imports."""

    UNSUBSCRIBED = "unsubscribed"  # the person asked (preference centre, one-click link)
    STOP = "stop"  # an SMS STOP keyword
    BOUNCE = "bounce"  # the mailbox does not exist (hard bounce)
    SPAM_REPORT = "spam_report"  # the recipient marked a message as spam
    GONE = "gone"  # a webhook endpoint answered 410 Gone


class FailureKind(StrEnum):
    """Whether a failed send is worth trying again: decided once, by the adapter."""

    TRANSIENT = "transient"  # rate limited, provider error, timeout: retry later
    PERMANENT = "permanent"  # invalid number, rejected address, other 4xx: fall back instead


# What phonenumbers' parse errors mean, as a sentence and as the code a page translates
# (dispatcher/web/wording.py): its own text ("(0) Missing or invalid default region.") is not
# for people.
_PHONE_PARSE_ERRORS = {
    phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: (
        "phone_country",
        "enter the number with its country code, like +14155550100",
    ),
    phonenumbers.NumberParseException.NOT_A_NUMBER: ("phone_not_a_number", "not a phone number"),
    phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: (
        "phone_too_short",
        "too short for a phone number",
    ),
    phonenumbers.NumberParseException.TOO_SHORT_NSN: (
        "phone_too_short",
        "too short for a phone number",
    ),
    phonenumbers.NumberParseException.TOO_LONG: ("phone_too_long", "too long for a phone number"),
}


def _normalise_phone(value: str) -> str:
    """+E.164, or an error with a code (`phone_*`) and a plain sentence: never phonenumbers'
    own wording."""
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException as exc:
        code, message = _PHONE_PARSE_ERRORS.get(
            exc.error_type, ("phone_invalid", "not a valid phone number")
        )
        raise PydanticCustomError(code, message) from None
    if not phonenumbers.is_valid_number(number):
        raise PydanticCustomError("phone_invalid", "not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _normalise_email(value: str) -> str:
    """The normalised address, or an error with the code `email_invalid` and email-validator's
    reason, which is a plain English sentence already ("An email address must have an
    @-sign.")."""
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        reason = str(exc).rstrip(".")
        raise PydanticCustomError(
            "email_invalid", "not a valid email address: {reason}", {"reason": reason}
        ) from None


_LOCALE = re.compile(r"[a-z]{2}(-[A-Z]{2})?")


def _locale(value: str) -> str:
    if not _LOCALE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a locale: give a language code like en or de, or one with its "
            "region like en-GB"
        )
    return value


Phone = Annotated[str, AfterValidator(_normalise_phone)]
Email = Annotated[str, AfterValidator(_normalise_email)]
Locale = Annotated[str, Field(max_length=8), AfterValidator(_locale)]


# Audiences by impact (README "Telling only those affected"): a subscriber's attributes are
# key/value pairs set by an operator (region=eu-west, plan=enterprise); an incident's scope names,
# per key, the values it affects. Both are short slugs, so that a monitoring label, a CSV column
# and a CLI option spell them alike, and they fit an indexed column.
SLUG_MAX = 64
MAX_ATTRIBUTES = 20  # per subscriber
MAX_SCOPE_KEYS = 10
MAX_SCOPE_VALUES = 100  # per key
_SLUG = re.compile(rf"[a-z0-9][a-z0-9._-]{{0,{SLUG_MAX - 1}}}")
SLUG_RULE = f"up to {SLUG_MAX} letters, digits, '-', '_' or '.', starting with a letter or digit"


def slug(value: object, what: str = "value") -> str:
    """`value` as a slug (trimmed, lower case), or a ValueError that quotes it."""
    if not isinstance(value, str):
        raise ValueError(f"{what} {value!r} is not text")
    cleaned = value.strip().lower()
    if not _SLUG.fullmatch(cleaned):
        raise ValueError(f"{what} {value!r} is not a short slug ({SLUG_RULE})")
    return cleaned


def clean_attributes(value: Mapping[Any, Any]) -> dict[str, str]:
    """A subscriber's attributes, keys and values as slugs, in key order."""
    if len(value) > MAX_ATTRIBUTES:
        raise ValueError(f"at most {MAX_ATTRIBUTES} attributes per subscriber")
    cleaned: dict[str, str] = {}
    for key, item in value.items():
        name = slug(key, "key")
        if name in cleaned:
            raise ValueError(f"key {name!r} is given twice")
        cleaned[name] = slug(item, f"{name}")
    return dict(sorted(cleaned.items()))


Scope = dict[str, list[str]]  # key -> the values affected: OR within a key, AND across keys


def clean_scope(value: Mapping[Any, Any]) -> Scope:
    """A scope with slug keys and values, each key with at least one value, none twice."""
    if len(value) > MAX_SCOPE_KEYS:
        raise ValueError(f"at most {MAX_SCOPE_KEYS} keys")
    cleaned: Scope = {}
    for key, items in value.items():
        name = slug(key, "key")
        values = [items] if isinstance(items, str) else list(items or [])
        if not values:
            raise ValueError(f"{name}: give at least one value")
        if len(values) > MAX_SCOPE_VALUES:
            raise ValueError(f"{name}: at most {MAX_SCOPE_VALUES} values")
        cleaned[name] = sorted({slug(item, name) for item in values})
    return dict(sorted(cleaned.items()))


class SegmentNote(BaseModel):
    """A note in an update for one segment only ("Your account manager will call you"): shown
    to the subscribers whose attributes match `segment` (the same rule as a scope, but a
    subscriber without the attribute is never in a segment), in every channel's message."""

    model_config = ConfigDict(extra="forbid")

    segment: Scope = Field(min_length=1)
    text: str = Field(min_length=1, max_length=500)

    @field_validator("segment", mode="before")
    @classmethod
    def _segment(cls, value: object) -> Scope:
        if not isinstance(value, Mapping):
            raise ValueError("a segment is an object of key: [values]")
        return clean_scope(value)

    @field_validator("text")
    @classmethod
    def _text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()


class SubscriberIn(BaseModel):
    """A subscriber as an operator or an import file describes one; validated before storing."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    email: Email | None = None
    phone: Phone | None = None
    webhook: HttpUrl | None = None
    channels: list[str] = Field(min_length=1)
    components: list[str] = Field(default_factory=list)
    min_severity: Severity = Severity.MINOR
    locale: Locale = "en"
    confirmed: bool = False  # an operator vouches for the addresses: no double opt-in
    internal: bool = False  # the team: every update, drafts and internal notes
    tier: int = Field(default=0, ge=0, le=9)  # higher tiers are told first
    quiet_start: str | None = Field(default=None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    quiet_end: str | None = Field(default=None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    timezone: str = "UTC"
    # Set by an operator (region, account, plan): which incidents' scopes they are in.
    attributes: dict[str, str] = Field(default_factory=dict)

    @field_validator("attributes", mode="before")
    @classmethod
    def _attributes(cls, value: object) -> dict[str, str]:
        if not isinstance(value, Mapping):
            raise ValueError("attributes are an object of key: value")
        return clean_attributes(value)

    @field_validator("name")
    @classmethod
    def _printable(cls, value: str) -> str:
        # PostgreSQL refuses NUL in text, and no real name has control characters.
        if any(ord(char) < 32 or ord(char) == 127 for char in value):
            raise ValueError("must not contain control characters")
        return value.strip()

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name: Europe/Berlin"
            ) from None
        return value

    @model_validator(mode="after")
    def _quiet_hours_both_or_neither(self) -> SubscriberIn:
        if (self.quiet_start is None) != (self.quiet_end is None):
            raise ValueError("quiet_start and quiet_end go together")
        return self

    @field_validator("webhook")
    @classmethod
    def _http_only(cls, value: HttpUrl | None) -> HttpUrl | None:
        if value is not None and value.scheme not in ("http", "https"):
            raise ValueError("must be an http(s) URL")
        return value

    @field_validator("channels", "components")
    @classmethod
    def _no_blanks_or_repeats(cls, value: list[str], info: ValidationInfo) -> list[str]:
        cleaned = [item.strip() for item in value if item.strip()]
        if info.field_name == "components" and len(cleaned) != len(value):
            # A blank one would not narrow anything: the person would hear of every component.
            raise ValueError("a component must not be blank")
        if len(set(cleaned)) != len(cleaned):
            raise ValueError("lists each item once")
        if info.field_name == "channels" and not cleaned:  # `--channels ""`: no way to reach them
            raise ValueError("give at least one channel, like email or sms,email")
        return cleaned


def _not_blank(value: str) -> str:
    """Text a person will read is never empty: a blank title made the public post read "We are
    investigating affecting api."."""
    stripped = value.strip()
    if not stripped:
        raise ValueError("must not be blank")
    return stripped


def _in_future(moment: datetime) -> datetime:
    """A promise or an estimate is about what is still to come."""
    if moment <= datetime.now(UTC):
        raise ValueError(
            f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC is in the past; give a later time or "
            "a duration like 2h"
        )
    return moment


TEXT_MAX = 2000  # characters of an operator's message or note
TITLE_MAX = 200  # characters of a title or a component's name
Text = Annotated[str, Field(max_length=TEXT_MAX), AfterValidator(_not_blank)]
Title = Annotated[str, Field(max_length=TITLE_MAX), AfterValidator(_not_blank)]
Component = Annotated[str, Field(max_length=TITLE_MAX), AfterValidator(_not_blank)]
Later = Annotated[AwareDatetime, AfterValidator(_in_future)]


class FollowUpIn(BaseModel):
    """What any update may carry besides its state: the operator's message, the promise of the
    next update, an estimated resolution (kept on the incident and shown in every message until
    changed), and a note only the team sees."""

    model_config = ConfigDict(extra="forbid")

    message: Text | None = None
    next_update_at: Later | None = None
    eta: Later | None = None
    internal_note: Text | None = None


class IncidentIn(FollowUpIn):
    """A new incident as an operator or a monitoring source opens it, with its first update."""

    title: Title
    severity: Severity
    components: list[Component] = Field(min_length=1)
    # Only the subscribers whose attributes match are told (empty: everyone it concerns).
    affects: Scope = Field(default_factory=dict)
    public: bool = False  # a scoped incident on the public page, feed and X account all the same
    notes: list[SegmentNote] = Field(default_factory=list, max_length=20)

    @field_validator("affects", mode="before")
    @classmethod
    def _affects(cls, value: object) -> Scope:
        if not isinstance(value, Mapping):
            raise ValueError("affects is an object of key: [values]")
        return clean_scope(value)


class UpdateIn(FollowUpIn):
    """An update of an open incident; `resolved` closes it, and only a resolution carries a
    service-credit note (for those affected: never the public post)."""

    state: IncidentState = Field(description="investigating, identified, monitoring or resolved")
    credit_note: Text | None = None
    affects: Scope | None = Field(
        default=None,
        description="the new scope ({} lifts it: everyone); absent: the scope stays as it was",
    )
    public: bool = Field(default=False, description="show a scoped incident publicly from now")
    notes: list[SegmentNote] = Field(default_factory=list, max_length=20)

    @field_validator("affects", mode="before")
    @classmethod
    def _affects(cls, value: object) -> Scope | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise ValueError("affects is an object of key: [values]")
        return clean_scope(value)

    @model_validator(mode="after")
    def _fits_the_state(self) -> UpdateIn:
        closing = self.state is IncidentState.RESOLVED
        if self.credit_note is not None and not closing:
            raise ValueError("credit_note: only a resolution carries a credit note")
        if closing and (self.next_update_at is not None or self.eta is not None):
            raise ValueError("next_update_at, eta: a resolution promises nothing further")
        return self


class ReopenIn(FollowUpIn):
    """A resolved incident that broke again: what the people who heard it was over are told."""

    message: Text


class ApproveIn(BaseModel):
    """A draft a monitoring system opened, published, optionally reworded first."""

    model_config = ConfigDict(extra="forbid")

    title: Title | None = None
    message: Text | None = None


class WindowIn(BaseModel):
    """A maintenance window as it is scheduled or moved: it ends after it starts, and not in
    the past (it may have started: a running maintenance can be given a later end)."""

    model_config = ConfigDict(extra="forbid")

    starts_at: AwareDatetime
    ends_at: AwareDatetime
    message: Text | None = None

    @field_validator("ends_at")
    @classmethod
    def _after_start(cls, value: datetime, info: ValidationInfo) -> datetime:
        starts_at = info.data.get("starts_at")
        if isinstance(starts_at, datetime) and value <= starts_at:
            raise ValueError("the maintenance must end after it starts")
        if value <= datetime.now(UTC):
            raise ValueError("that maintenance window is already over")
        return value


class MaintenanceIn(WindowIn):
    """Planned maintenance, announced now to everyone it concerns."""

    title: Title
    severity: Severity = Severity.MINOR
    components: list[Component] = Field(min_length=1)


class CancelIn(BaseModel):
    """A planned maintenance called off; the message says why, or what instead."""

    model_config = ConfigDict(extra="forbid")

    message: Text | None = None
