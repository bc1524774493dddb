"""Logging for operators: one JSON object per line where a machine reads it, readable lines on a
terminal, and never a secret, a full phone number or a full email address in either.

Why a filter on the handler and not only careful call sites: provider answers quoted in errors
carry addresses ("The 'To' number +14155550100 is not a valid phone number"), and a third-party
library may log a credential: at debug level oauthlib and requests-oauthlib print the X consumer
key and access token as a tuple, a query string, a percent-encoded base string and a header.
`RedactingFilter` masks every record that reaches our handler, whoever wrote it, in two ways:
the process's own secrets by value, whatever the text around them (`mask_secrets`, called with
the settings' secrets by `get_settings`), and anything in the shapes credentials take in text
(`redact`); `mask_phone` and `mask_email` are also what call sites use when they log an address
on purpose (`log_attempt`).

One line per delivery attempt comes from `log_attempt`, with the incident, update, delivery and
provider ids, the outcome and the duration, as fields a log pipeline can filter on.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import quote

from dispatcher.models import DeliveryStatus

ATTEMPT_LOGGER = "outage.delivery"
FIELDS_ATTRIBUTE = "outage_fields"  # LogRecord attribute holding structured fields (`extra`)

# E.164 as we store numbers, and as providers quote them: "+" and 7 to 15 digits.
_PHONE = re.compile(r"(?<![\w+])\+\d{7,15}\b")
_EMAIL = re.compile(r"\b[\w.%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+\b")
# The name of a credential: token, secret, password, API key, OAuth's consumer and owner keys.
_NAME = (
    r"[\w-]*(?:token|secret|passw(?:or)?d|api[_-]?key|consumer_key|client_key|owner_key"
    r"|signature)[\w-]*"
)
# Secrets in the shapes they take in text: SendGrid keys, bearer tokens, user:password@ in URLs,
# and a credential's value after its name: name=value (quoted or not: query strings, reprs,
# OAuth headers), name%3Dvalue (a percent-encoded OAuth base string), and quoted pairs
# ('name', 'value') and "name": "value" (lists of tuples, dicts, JSON).
_SECRETS = (
    (re.compile(r"\bSG\.[\w-]{8,}\.[\w-]{8,}"), "SG.[redacted]"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[\w.~+/=-]+"), r"\1 [redacted]"),
    (re.compile(r"://[^/\s:@]+:[^/\s@]+@"), "://[redacted]@"),
    (re.compile(rf"(?i)\b({_NAME})=([\"']?)[^&\s\"',)>]+"), r"\1=\2[redacted]"),
    (re.compile(rf"(?i)\b({_NAME})%3D(?:(?!%26)[^&\s])+"), r"\1%3D[redacted]"),
    (re.compile(rf"(?i)([\"']{_NAME}[\"']\s*[:,]\s*[\"'])[^\"']+"), r"\1[redacted]"),
)
MIN_SECRET_CHARS = 6  # a shorter "secret" would mask ordinary words; none of ours is that short
_known: re.Pattern[str] | None = None  # the process's secrets, by value (`mask_secrets`)
_known_values: set[str] = set()
_known_lock = threading.Lock()


def mask_secrets(values: Iterable[str]) -> None:
    """From now on, mask each of `values` in every log line, as it is and percent-encoded once
    or twice (as an OAuth base string carries it), whatever the text around it."""
    global _known
    forms = {
        form
        for value in values
        if len(value) >= MIN_SECRET_CHARS
        for form in (value, quote(value, safe=""), quote(quote(value, safe=""), safe=""))
    }
    with _known_lock:
        if forms <= _known_values:
            return
        _known_values.update(forms)
        ordered = sorted(_known_values, key=len, reverse=True)  # the longest form first
        _known = re.compile("|".join(re.escape(form) for form in ordered))


def mask_phone(number: str) -> str:
    """A phone number with all but its first two and last two digits hidden:
    +14155550123 becomes +14*******23 (the country helps diagnosis; the person stays unknown)."""
    digits = number.lstrip("+")
    if len(digits) <= 4:
        return "*" * len(number)
    prefix = "+" if number.startswith("+") else ""
    return f"{prefix}{digits[:2]}{'*' * (len(digits) - 4)}{digits[-2:]}"


def mask_email(address: str) -> str:
    """An email address with its local part hidden but its first letter: ada@example.org
    becomes a***@example.org (the domain tells which mailbox provider bounced it)."""
    local, at, domain = address.rpartition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"


def mask_address(address: str | None) -> str | None:
    """Any recipient an adapter takes: a phone, an email, or a webhook URL (kept to its host)."""
    if not address:
        return address
    if address.startswith(("http://", "https://")):
        scheme, _, rest = address.partition("://")
        host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
        return f"{scheme}://{host}/***"
    if "@" in address:
        return mask_email(address)
    if _PHONE.fullmatch(address):
        return mask_phone(address)
    return address


def redact(text: str) -> str:
    """`text` with secrets removed and every phone number and email address masked."""
    if _known is not None:
        text = _known.sub("[redacted]", text)
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    text = _EMAIL.sub(lambda m: mask_email(m.group()), text)
    return _PHONE.sub(lambda m: mask_phone(m.group()), text)


class RedactingFilter(logging.Filter):
    """Masks the formatted message, the exception text and string fields of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        fields = getattr(record, FIELDS_ATTRIBUTE, None)
        if isinstance(fields, dict):
            setattr(
                record,
                FIELDS_ATTRIBUTE,
                {k: redact(v) if isinstance(v, str) else v for k, v in fields.items()},
            )
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, FIELDS_ATTRIBUTE, None)
        if isinstance(fields, dict):
            document.update(fields)
        if record.exc_text:
            document["exception"] = record.exc_text
        return json.dumps(document, default=str, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stderr` is now (test runners and Celery replace it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        """Ignored: the stream is always the current stderr."""


_HANDLER_NAME = "outage"


def setup_logging(level: int | str = logging.INFO, *, json_lines: bool | None = None) -> None:
    """Send the root logger's records to stderr, redacted: as JSON lines when stderr is not a
    terminal (or `json_lines`), as rich's readable lines on one. Calling it again replaces the
    handler it installed, and leaves any other handler (pytest's, a platform's) alone."""
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == _HANDLER_NAME:
            root.removeHandler(existing)
    as_json = json_lines if json_lines is not None else not sys.stderr.isatty()
    handler: logging.Handler
    if as_json:
        handler = _StderrHandler()
        handler.setFormatter(JsonFormatter())
    else:
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False)
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)


_attempts = logging.getLogger(ATTEMPT_LOGGER)
_OUTCOMES = {DeliveryStatus.QUEUED: "retry"}  # queued again after a failure: a retry is due
_WARN = frozenset({DeliveryStatus.FAILED, DeliveryStatus.FELL_BACK})


def log_attempt(
    *,
    incident_id: int | None,
    update_id: int | None,
    delivery_id: int,
    channel: str,
    status: DeliveryStatus,
    to: str | None = None,
    provider_id: str | None = None,
    duration_s: float | None = None,
    attempts: int = 0,
    reason: str | None = None,
    error: str | None = None,
) -> None:
    """One line for one delivery's send: where it stands after it (`status`; queued means a
    retry is due), to whom (masked), with the provider's id and how long the provider took.
    Nothing is built when the line would be dropped (a worker logging at WARNING)."""
    level = logging.WARNING if status in _WARN else logging.INFO
    if not _attempts.isEnabledFor(level):
        return
    outcome = _OUTCOMES.get(status, str(status))
    fields: dict[str, Any] = {
        "event": "delivery_attempt",
        "incident_id": incident_id,
        "update_id": update_id,
        "delivery_id": delivery_id,
        "channel": channel,
        "to": mask_address(to),
        "outcome": outcome,
        "provider_id": provider_id,
        "duration_ms": None if duration_s is None else round(duration_s * 1000, 1),
        "attempts": attempts,
        "reason": None if reason is None else str(reason),
        "error": error,
    }
    took = "" if duration_s is None else f" in {duration_s * 1000:.0f} ms"
    why = f": {fields['reason'] or 'error'} ({error})" if error else ""
    message = (
        f"delivery {delivery_id} {channel} to {fields['to'] or 'the public'} {outcome}{took}"
        f" (incident {incident_id}, update {update_id}"
        f"{f', provider id {provider_id}' if provider_id else ''}){why}"
    )
    _attempts.log(level, message, extra={FIELDS_ATTRIBUTE: fields})


class RepeatedFailures:
    """A loop's failures, logged once per distinct error (with its traceback) and once when the
    loop succeeds again: a loop retrying every second against a database that is down must not
    write a traceback per second, yet a new kind of failure is worth its own line."""

    def __init__(self, logger: logging.Logger, failing: str, recovered: str) -> None:
        self.logger = logger
        self.failing = failing  # "embedded runner: a pass failed"
        self.recovered = recovered  # "embedded runner: passes succeed again"
        self.count = 0  # failures in a row
        self._last: tuple[str, str] | None = None

    def failed(self, exc: BaseException, retry_s: float) -> None:
        """Count the failure; log it if it differs from the one before (call from `except`)."""
        self.count += 1
        # A database error's text carries the statement's parameters (times change every pass):
        # the driver's own error says what went wrong.
        error = (type(exc).__name__, str(getattr(exc, "orig", None) or exc))
        if error != self._last:
            self.logger.exception("%s; retrying every %.0f s", self.failing, retry_s)
            self._last = error

    def succeeded(self) -> None:
        if self.count:
            self.logger.warning("%s after %d failed", self.recovered, self.count)
        self.count = 0
        self._last = None
