"""Operator-friendly times: "30m", "1h30m", "2d" for durations; an ISO 8601 moment or a duration
from now for moments ("2026-11-24T02:00Z", "2026-11-24 02:00", "45m")."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from dispatcher.errors import OutageError

_PART = re.compile(r"(\d+)\s*([dhms])")
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


class DurationError(OutageError, ValueError):
    """Text that is not the duration or the moment asked for; the message shows the accepted
    form. A ValueError too, as a parser's failure is (`datetime.fromisoformat`'s is one)."""


def parse_duration(text: str) -> timedelta:
    """'30m' -> 30 minutes; raises DurationError naming the accepted form."""
    cleaned = text.strip().lower().replace(" ", "")
    parts = _PART.findall(cleaned)
    if not cleaned or "".join(n + u for n, u in parts) != cleaned:
        raise DurationError(f"{text!r} is not a duration like 30m, 2h or 1h30m")
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in parts))


def parse_moment(text: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 time (UTC when it names no zone) or a duration from now."""
    now = now or datetime.now(UTC)
    try:
        return now + parse_duration(text)
    except DurationError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise DurationError(
            f"{text!r} is neither a time like 2026-11-24T02:00Z nor a duration like 45m"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
