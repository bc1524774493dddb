"""Dates and times as each language writes them, in the recipient's time zone.

A recipient reads "16:30 Uhr MESZ", not "14:30 UTC": the language follows the template that was
found, the zone the recipient's setting. `clock` and `window` are the messages' Jinja filters
(the status pages use `clock` and `day`, in English and UTC), and the shared phrase macros that
call them are imported without context, so they cannot read a template variable: the language
and zone of the render in progress are ambient instead (`formatting`, a ContextVar). The tables
are our own rather than the process locale's (strftime's %a follows it) and use GSM-7 characters
only, since SMS carries them too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from functools import cache
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


@dataclass(frozen=True)
class Calendar:
    """How one language writes days and times, GSM-7 characters only (SMS uses them too).

    Patterns take `weekday`, `day`, `month`, `time` ("14:30") and `zone` ("UTC", "MESZ");
    `zones` renames the tz database's abbreviations where the language has its own."""

    days: str  # separated by spaces, Monday first (as datetime.weekday() counts)
    months: str  # separated by spaces
    date: str  # "Wed 21 May"
    time: str  # "14:30 UTC"
    at: str  # a time on another day: "Thu 15 May 09:00 UTC"
    span: str  # a window within one day: "Wed 21 May 02:00-04:00 UTC"
    since: str  # a window with no end yet: "Wed 21 May from 02:00 UTC"
    zones: Mapping[str, str] = field(default_factory=dict)


CALENDARS: Final[Mapping[str, Calendar]] = {
    "en": Calendar(
        days="Mon Tue Wed Thu Fri Sat Sun",
        months="Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec",
        date="{weekday} {day} {month}",
        time="{time} {zone}",
        at="{date} {time} {zone}",
        span="{date} {start}-{end} {zone}",
        since="{date} from {time} {zone}",
    ),
    # Duden's abbreviations; "Uhr" after the time, the zone's German name (MEZ, not CET).
    "de": Calendar(
        days="Mo. Di. Mi. Do. Fr. Sa. So.",
        months="Jan. Feb. März Apr. Mai Juni Juli Aug. Sept. Okt. Nov. Dez.",
        date="{weekday}, {day}. {month}",
        time="{time} Uhr {zone}",
        at="{date}, {time} Uhr {zone}",
        span="{date}, {start}-{end} Uhr {zone}",
        since="{date}, ab {time} Uhr {zone}",
        zones={"CET": "MEZ", "CEST": "MESZ", "WET": "WEZ", "WEST": "WESZ", "EET": "OEZ"},
    ),
}


@dataclass(frozen=True)
class Formatting:
    """How the render in progress writes dates: its template's language, the recipient's zone.

    It is ambient (a ContextVar, set by `render` for the duration of one call) rather than a
    template variable because the shared phrases are imported without context, and Jinja's
    imported macros do not see the caller's variables; a ContextVar is per thread and task.
    The defaults (English, UTC) are also the fallback for a language without a table: English
    is the templates' default locale too (`templates.DEFAULT_LOCALE`)."""

    language: str = "en"
    zone: tzinfo = UTC


_PLAIN: Final = Formatting()  # outside a render: English, UTC
_FORMATTING: ContextVar[Formatting | None] = ContextVar("render_formatting", default=None)


def clock(moment: datetime, reference: datetime | None = None) -> str:
    """ "14:30 UTC", or "Thu 15 May 09:00 UTC" when not on the reference's day; in the language
    and zone of the render in progress (English and UTC outside one), so "16:30 Uhr MESZ"."""
    calendar, moment = _local(moment)
    time, zone = f"{moment:%H:%M}", _zone_name(calendar, moment)
    if reference is None or _local(reference)[1].date() == moment.date():
        return calendar.time.format(time=time, zone=zone)
    return calendar.at.format(date=_date(calendar, moment), time=time, zone=zone)


def day(moment: datetime) -> str:
    """ "Wed 21 May" ("Mi., 21. Mai"), from our own tables whatever the process locale (strftime's
    %a is not), on the local day of the render's zone."""
    calendar, moment = _local(moment)
    return _date(calendar, moment)


def window(start: datetime, end: datetime | None) -> str:
    """A maintenance window in GSM-safe characters: "Wed 21 May 02:00-04:00 UTC"."""
    calendar, start = _local(start)
    if end is None:
        return calendar.since.format(
            date=_date(calendar, start), time=f"{start:%H:%M}", zone=_zone_name(calendar, start)
        )
    end = _local(end)[1]
    if end.date() == start.date() and _zone_name(calendar, end) == _zone_name(calendar, start):
        return calendar.span.format(
            date=_date(calendar, start),
            start=f"{start:%H:%M}",
            end=f"{end:%H:%M}",
            zone=_zone_name(calendar, start),
        )
    return f"{clock(start, end)} - {clock(end, start)}"


@contextmanager
def formatting(language: str, zone: str | tzinfo = UTC) -> Iterator[Formatting]:
    """Dates inside the block are written in `language` (English if we have no table for it) and
    `zone` (an IANA name or tzinfo; an unknown name means UTC rather than a failed message)."""
    chosen = Formatting(
        language=language if language in CALENDARS else _PLAIN.language,
        zone=zone if isinstance(zone, tzinfo) else _zone(zone),
    )
    token = _FORMATTING.set(chosen)
    try:
        yield chosen
    finally:
        _FORMATTING.reset(token)


def utc(moment: datetime) -> datetime:
    """Aware datetimes converted to UTC; naive ones are taken to be UTC already (as stored)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@cache
def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def _local(moment: datetime) -> tuple[Calendar, datetime]:
    """The ambient calendar, and `moment` in the ambient zone (naive moments are UTC)."""
    current = _FORMATTING.get() or _PLAIN
    return CALENDARS[current.language], utc(moment).astimezone(current.zone)


def _date(calendar: Calendar, moment: datetime) -> str:
    return calendar.date.format(
        weekday=calendar.days.split()[moment.weekday()],
        day=moment.day,
        month=calendar.months.split()[moment.month - 1],
    )


def _zone_name(calendar: Calendar, moment: datetime) -> str:
    """The zone's abbreviation in this language ("MESZ"); "UTC+3" where the tz database has only
    a number ("+03"), which no reader recognises as a zone."""
    name = moment.tzname() or ""
    if name and name[0] not in "+-":
        return calendar.zones.get(name, name)
    offset = moment.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign, minutes = ("-", -minutes) if minutes < 0 else ("+", minutes)
    hours, rest = divmod(minutes, 60)
    return f"UTC{sign}{hours}" + (f":{rest:02d}" if rest else "")
