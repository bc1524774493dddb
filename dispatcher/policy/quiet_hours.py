"""Quiet hours: when a non-critical update may reach a subscriber who asked not to be disturbed.

A subscriber sets a daily window ("22:00" to "07:00") in their own time zone. Non-critical updates
that fall inside it wait until it ends; critical ones go through at once, because a service that
is down matters more than a night's sleep (the notes on outage communication: "respect quiet
hours", but never at the cost of the one message that matters).

Pure and clock-free: the caller passes the moment, so the fan-out, the tests and a preview agree.
The window is laid out on the subscriber's local calendar days and compared as UTC instants, so
days that are 23 or 25 hours long (daylight saving time) shift it the way a person expects: it
starts and ends at the same wall-clock times. A wall-clock time that a spring-forward change
skips is read with the offset before the change, as PEP 495 does (02:30 becomes 03:30).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dispatcher.errors import OutageError
from dispatcher.models import Severity


class QuietHoursError(OutageError):
    """Quiet hours that cannot be read; the message names the field."""


@dataclass(frozen=True)
class QuietHours:
    """A daily window of local wall-clock times; `end` before `start` means it spans midnight."""

    start: time
    end: time
    zone: ZoneInfo

    @classmethod
    def parse(cls, start: str | None, end: str | None, timezone: str) -> QuietHours | None:
        """The window from stored columns; None when the subscriber has none (or an empty one,
        start equal to end, which would otherwise mean "always quiet")."""
        if start is None and end is None:
            return None
        if start is None or end is None:
            raise QuietHoursError("quiet_start and quiet_end go together")
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise QuietHoursError(f"timezone: unknown time zone {timezone!r}") from None
        window = cls(_clock(start, "quiet_start"), _clock(end, "quiet_end"), zone)
        return None if window.start == window.end else window

    def active_until(self, moment: datetime) -> datetime | None:
        """The end of the window `moment` falls in (UTC), or None when it falls in none."""
        moment = _aware(moment).astimezone(UTC)
        today = moment.astimezone(self.zone).date()
        # A window that spans midnight may have begun on the previous local day.
        for day in (today - timedelta(days=1), today):
            begins = datetime.combine(day, self.start, self.zone).astimezone(UTC)
            end_day = day if self.end > self.start else day + timedelta(days=1)
            ends = datetime.combine(end_day, self.end, self.zone).astimezone(UTC)
            if begins <= moment < ends:
                return ends
        return None


def may_send_at(
    quiet_start: str | None,
    quiet_end: str | None,
    timezone: str,
    moment: datetime,
    severity: Severity | str,
) -> datetime:
    """When a message of `severity`, ready at `moment`, may be sent to this subscriber (UTC).

    `moment` itself unless it is non-critical and inside the subscriber's quiet hours, in which
    case the end of those quiet hours. Takes the stored columns as they are, so the fan-out can
    call it on a plain row.
    """
    moment = _aware(moment).astimezone(UTC)
    if Severity(severity) is Severity.CRITICAL:
        return moment
    window = QuietHours.parse(quiet_start, quiet_end, timezone)
    if window is None:
        return moment
    return window.active_until(moment) or moment


def _clock(value: str, field: str) -> time:
    try:
        parsed = time.fromisoformat(value)
    except ValueError:
        raise QuietHoursError(f"{field}: not a time of day like 22:00 ({value!r})") from None
    return parsed.replace(second=0, microsecond=0, tzinfo=None)


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("naive datetime given to quiet hours; pass an aware (UTC) moment")
    return moment
