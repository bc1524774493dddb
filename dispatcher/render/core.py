"""Incident updates rendered into messages, one channel at a time, from `templates/`.

Templates live in `templates/<channel>/<locale>/<state>.<part>.j2` (part: `text` everywhere,
`subject` and `html` for email); `_`-prefixed files are layouts and shared phrases. A locale
without a template falls back to English, so a new language is only new files.

Each channel's text must fit what the provider carries. When it does not, the operator's free
text is shortened first, then the title; links are never cut. If nothing fits, the message cannot
be sent on this channel at all, which the core treats as a permanent failure::

    RenderError (ValueError)      this update cannot be rendered for this channel; do not retry
    └── TemplateMissing           no template for this channel/state (in any fallback locale)

The email's HTML and subject take their wording from the blocks of the email's text template,
so the state files are written once and the three parts cannot tell different stories.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from functools import cache
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateError,
    TemplateNotFound,
    select_autoescape,
)
from markupsafe import escape

from channels.base import Limits
from dispatcher.models import IncidentState, Severity
from dispatcher.render.textfit import (
    TWEET_MAX_WEIGHT,
    gsm_transliterate,
    shorten,
    sms_segments,
    tweet_length,
)
from dispatcher.settings import TEMPLATES_DIR

DEFAULT_LOCALE: Final = "en"
WORDING_BLOCKS: Final[tuple[str, ...]] = ("label", "lead", "impact", "message", "next", "closing")


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
    imported macros do not see the caller's variables; a ContextVar is per thread and task."""

    language: str = DEFAULT_LOCALE
    zone: tzinfo = UTC


_PLAIN: Final = Formatting()  # outside a render: English, UTC
_FORMATTING: ContextVar[Formatting | None] = ContextVar("render_formatting", default=None)
_LANGUAGE: Final = re.compile(r"[a-z]{2,3}")
_BLANK_RUNS: Final = re.compile(r"\n{3,}")


class RenderError(ValueError):
    """This update cannot become a message on this channel; retrying will not change that."""

    def __init__(self, channel: str, state: str, reason: str) -> None:
        self.channel = channel
        self.state = state
        self.reason = reason
        super().__init__(f"{channel}/{state}: {reason}")


class TemplateMissing(RenderError):
    """No template for this channel, state and part, neither in the locale nor in English."""

    def __init__(self, channel: str, state: str, part: str, tried: list[str]) -> None:
        self.part = part
        self.tried = tried
        super().__init__(
            channel, state, f"no {part} template (looked for {', '.join(tried)} in {TEMPLATES_DIR})"
        )


@dataclass(frozen=True)
class IncidentView:
    """An incident as templates see it. For a scheduled maintenance `started_at` is the planned
    start (and the update's `eta` its planned end)."""

    id: int
    title: str
    severity: Severity
    state: IncidentState
    components: tuple[str, ...]
    started_at: datetime
    resolved_at: datetime | None
    url: str  # the incident's status page link, in every message


@dataclass(frozen=True)
class UpdateView:
    """The update being announced; `message` is the operator's free text, if any."""

    id: int
    state: IncidentState
    message: str | None
    created_at: datetime
    next_update_at: datetime | None = None
    eta: datetime | None = None


@dataclass(frozen=True)
class RecipientView:
    """Whom a message is for; the renderer receives None for a broadcast (the social post)."""

    name: str
    locale: str
    manage_url: str | None = None
    unsubscribe_url: str | None = None
    timezone: str = "UTC"  # IANA name; times in messages are shown in it (unknown names: UTC)


@dataclass(frozen=True)
class Rendered:
    """A message ready for a channel: text always; subject/html for email; payload for webhooks."""

    text: str
    subject: str | None = None
    html: str | None = None
    payload: dict[str, object] | None = None


@dataclass(frozen=True)
class _Job:
    """One render: the channel's templates and everything but the incident and update, which
    the fitting loop varies (shortened message, shortened title)."""

    channel: str
    state: str
    text: Template
    recipient: RecipientView | None
    company: str
    support_url: str | None

    def variables(
        self, incident: IncidentView, update: UpdateView, *, brief: bool = False
    ) -> dict[str, object]:
        """The template context; `brief` asks for the shortest form (no apology, no support)."""
        return {
            "brief": brief,
            "incident": incident,
            "update": update,
            "recipient": self.recipient,
            "company": self.company,
            "support_url": self.support_url,
            "state": self.state,
        }

    def render_text(self, incident: IncidentView, update: UpdateView, *, brief: bool) -> str:
        """The text part alone: what the fitting loop measures, many times per message."""
        with _template_errors(self.channel, self.state, "text"):
            text = self.text.render(self.variables(incident, update, brief=brief))
        return _normalise_text(text)

    def render_with_wording(
        self, incident: IncidentView, update: UpdateView, *, brief: bool
    ) -> tuple[str, dict[str, str]]:
        """The text part, and each of its wording blocks rendered on its own (for html/subject)."""
        context = self.text.new_context(self.variables(incident, update, brief=brief))
        with _template_errors(self.channel, self.state, "text"):
            text = "".join(self.text.root_render_func(context))
            wording = {
                name: _normalise_text("".join(context.blocks[name][0](context)))
                for name in WORDING_BLOCKS
                if name in context.blocks
            }
        return _normalise_text(text), wording


@cache
def environment() -> Environment:
    """The one Jinja environment. `html.j2` must be listed: select_autoescape matches the end of
    the name, and "x.html.j2" does not end in ".html", so ["html"] alone would escape nothing."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(enabled_extensions=("html", "html.j2")),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.filters.update(clock=clock, window=window, sentence=sentence)
    return env


STATUS_PAGES = "web/status/"  # compiled by their own environment (dispatcher/web/status.py)


def compile_templates() -> dict[str, str]:
    """Compile every template now (the environment keeps them); the ones that do not compile,
    with why. A worker that compiled them on its first message made the first incident after a
    deploy, when a second matters most, wait for it; and a broken template is found at start."""
    env = environment()
    broken: dict[str, str] = {}
    for name in env.list_templates(extensions=["j2"]):
        if name.startswith(STATUS_PAGES):
            continue
        try:
            env.get_template(name)
        except TemplateError as exc:
            broken[name] = str(exc)
    return broken


def render(
    channel: str,
    limits: Limits,
    incident: IncidentView,
    update: UpdateView,
    recipient: RecipientView | None,
    *,
    company_name: str,
    support_url: str | None,
    sms_max_segments: int,
) -> Rendered:
    """Render `update` for one recipient (or the public, when None) on `channel`, fitted to
    `limits`. Raises TemplateMissing or RenderError, both permanent for this channel.

    Dates are written in the language of the template found (a German subscriber whose template
    falls back to English reads English dates) and in the recipient's time zone (UTC for a
    broadcast)."""
    language = language_of(recipient)
    state = str(update.state)
    text = _template(channel, language, state, "text")
    with formatting(_template_language(text, language), recipient.timezone if recipient else "UTC"):
        return _render(
            channel,
            limits,
            incident,
            update,
            _Job(
                channel=channel,
                state=state,
                text=text,
                recipient=recipient,
                company=company_name,
                support_url=support_url,
            ),
            language,
            sms_max_segments,
        )


def _render(
    channel: str,
    limits: Limits,
    incident: IncidentView,
    update: UpdateView,
    job: _Job,
    language: str,
    sms_max_segments: int,
) -> Rendered:
    job, shown_incident, shown_update = _prepared(job, limits, incident, update)
    shown_incident, shown_update, brief = _fitted(
        job, shown_incident, shown_update, fits_limits(limits, sms_max_segments)
    )
    text, wording = job.render_with_wording(shown_incident, shown_update, brief=brief)
    extra = {**job.variables(shown_incident, shown_update, brief=brief), "wording": wording}
    return Rendered(
        text=text,
        subject=_part(job, language, "subject", extra) if limits.has_subject else None,
        html=_part(job, language, "html", extra) if limits.has_html else None,
        payload=webhook_payload(text, incident, update) if channel == "webhook" else None,
    )


def language_of(recipient: RecipientView | None) -> str:
    """The template language: locale "de-DE", "de_DE" or "de" means "de"; a broadcast has none,
    so it uses the default, as does anything that is not a plain language code."""
    if recipient is None:
        return DEFAULT_LOCALE
    language = recipient.locale.replace("_", "-").split("-", 1)[0].lower()
    return language if _LANGUAGE.fullmatch(language) else DEFAULT_LOCALE


def _template_language(template: Template, wanted: str) -> str:
    """The locale folder the template was found in: `wanted`, or English after a fallback."""
    parts = (template.name or "").split("/")
    return parts[1] if len(parts) > 2 else wanted


def _template(channel: str, language: str, state: str, part: str) -> Template:
    names = list(
        dict.fromkeys(
            f"{channel}/{locale}/{state}.{part}.j2" for locale in (language, DEFAULT_LOCALE)
        )
    )
    try:
        return environment().select_template(names)
    except TemplateNotFound:
        raise TemplateMissing(channel, state, part, names) from None
    except TemplateError as exc:
        raise RenderError(channel, state, f"broken {part} template: {exc}") from exc


def _part(job: _Job, language: str, part: str, variables: Mapping[str, object]) -> str:
    """Render the subject or HTML part with the text part's wording."""
    template = _template(job.channel, language, job.state, part)
    if part == "html":
        variables = _html_safe(variables)
    with _template_errors(job.channel, job.state, part):
        rendered = template.render(variables)
    if part == "subject":
        return " ".join(rendered.split())
    return _normalise_html(rendered)


def _html_safe(variables: Mapping[str, object]) -> Mapping[str, object]:
    """The recipient's name escaped ahead of time for the HTML part: the shared phrase macros
    are compiled without autoescape (they also write plain text), and a macro's result is then
    taken as safe by the HTML template, so a name like "<b>" would otherwise pass through."""
    recipient = variables.get("recipient")
    if not isinstance(recipient, RecipientView):
        return variables
    return {**variables, "recipient": replace(recipient, name=escape(recipient.name))}


@contextmanager
def _template_errors(channel: str, state: str, part: str) -> Iterator[None]:
    """Turn errors raised while rendering (a missing layout, an undefined name) into ours."""
    try:
        yield
    except TemplateNotFound as exc:
        raise TemplateMissing(channel, state, part, [str(exc)]) from None
    except TemplateError as exc:
        raise RenderError(channel, state, f"{part} template failed: {exc}") from exc


def _prepared(
    job: _Job, limits: Limits, incident: IncidentView, update: UpdateView
) -> tuple[_Job, IncidentView, UpdateView]:
    """The texts as this channel should show them: SMS gets GSM-7 look-alikes for typographic
    punctuation, webhook text gets Slack's three escapes; everyone gets a tidy message."""
    message = _normalise_message(update.message)
    adapt = _channel_text(job.channel, limits)
    recipient = job.recipient
    if recipient is not None:
        recipient = replace(recipient, name=adapt(recipient.name))
    return (
        replace(job, company=adapt(job.company), recipient=recipient),
        replace(
            incident,
            title=adapt(incident.title.strip()),
            components=tuple(adapt(component) for component in incident.components),
        ),
        replace(update, message=adapt(message) if message else None),
    )


def _channel_text(channel: str, limits: Limits) -> Callable[[str], str]:
    if limits.max_sms_segments is not None:
        return gsm_transliterate
    if channel == "webhook":
        return slack_escape
    return _unchanged


def _unchanged(text: str) -> str:
    return text


def slack_escape(text: str) -> str:
    """Slack's mrkdwn escapes, so an operator's "<" or "&" cannot become a link or a mention."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def fits_limits(limits: Limits, sms_max_segments: int) -> Callable[[str], bool]:
    """A predicate: does this text fit the channel? An SMS channel (one that declares
    `max_sms_segments`) is held to the operator's `sms_max_segments` budget, the cost decision;
    X is checked by weighted length."""
    checks: list[Callable[[str], bool]] = []
    if limits.max_sms_segments is not None:
        checks.append(lambda text: sms_segments(text) <= sms_max_segments)
    if limits.max_weighted_chars is not None:
        weighted = min(limits.max_weighted_chars, TWEET_MAX_WEIGHT)
        checks.append(lambda text: tweet_length(text) <= weighted)
    if limits.max_text_chars is not None:
        chars = limits.max_text_chars
        checks.append(lambda text: len(text) <= chars)
    return lambda text: all(check(text) for check in checks)


def _fitted(
    job: _Job, incident: IncidentView, update: UpdateView, fits: Callable[[str], bool]
) -> tuple[IncidentView, UpdateView, bool]:
    """The incident and update, shortened until the text fits, and whether it took the brief form.

    The full form is tried first, shortening the message, then the title. Only if even that fails
    is the brief form tried (templates then leave out the apology and the support line), because
    a message without them beats no message at all."""
    for brief in (False, True):
        fitted = _shortened(job, incident, update, brief, fits)
        if fitted is not None:
            return (*fitted, brief)
    raise RenderError(job.channel, job.state, "does not fit the channel even when shortened")


def _shortened(
    job: _Job, incident: IncidentView, update: UpdateView, brief: bool, fits: Callable[[str], bool]
) -> tuple[IncidentView, UpdateView] | None:
    """The message shortened (or dropped), then the title, until the text fits; None if never."""

    def fits_with(incident: IncidentView, update: UpdateView) -> bool:
        return fits(job.render_text(incident, update, brief=brief))

    if fits_with(incident, update):
        return incident, update
    if update.message:
        message = shorten(
            update.message,
            lambda candidate: fits_with(incident, replace(update, message=candidate)),
        )
        update = replace(update, message=message or None)
        if message or fits_with(incident, update):
            return incident, update
    title = shorten(
        incident.title, lambda candidate: fits_with(replace(incident, title=candidate), update)
    )
    return (replace(incident, title=title), update) if title else None


def webhook_payload(text: str, incident: IncidentView, update: UpdateView) -> dict[str, object]:
    """Slack-compatible (`text` is what Slack shows) plus the structured facts, unshortened."""
    return {
        "text": text,
        "incident": {
            "id": incident.id,
            "title": incident.title,
            "severity": str(incident.severity),
            "state": str(incident.state),
            "components": list(incident.components),
            "started_at": _iso(incident.started_at),
            "resolved_at": _iso(incident.resolved_at),
            "url": incident.url,
        },
        "update": {
            "id": update.id,
            "state": str(update.state),
            "message": update.message,
            "created_at": _iso(update.created_at),
            "next_update_at": _iso(update.next_update_at),
            "eta": _iso(update.eta),
        },
    }


def _iso(moment: datetime | None) -> str | None:
    return _utc(moment).isoformat() if moment is not None else None


def _utc(moment: datetime) -> datetime:
    """Aware datetimes converted to UTC; naive ones are taken to be UTC already (as stored)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


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
        language=language if language in CALENDARS else DEFAULT_LOCALE,
        zone=zone if isinstance(zone, tzinfo) else _zone(zone),
    )
    token = _FORMATTING.set(chosen)
    try:
        yield chosen
    finally:
        _FORMATTING.reset(token)


@cache
def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def _local(moment: datetime) -> tuple[Calendar, datetime]:
    """The ambient calendar, and `moment` in the ambient zone (naive moments are UTC)."""
    current = _FORMATTING.get() or _PLAIN
    return CALENDARS[current.language], _utc(moment).astimezone(current.zone)


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


def sentence(text: str) -> str:
    """Upper-case the first letter, for a name that starts a sentence ("checkout" -> "Checkout")."""
    return text[:1].upper() + text[1:]


def _normalise_message(message: str | None) -> str | None:
    if message is None:
        return None
    message = _BLANK_RUNS.sub("\n\n", "\n".join(line.strip() for line in message.splitlines()))
    return message.strip() or None


def _normalise_text(text: str) -> str:
    """One space between words, at most one blank line in a row, no edges."""
    lines = (" ".join(line.split()) for line in text.splitlines())
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()


def _normalise_html(html: str) -> str:
    lines = (line.rstrip() for line in html.splitlines())
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()


_SAMPLE_START: Final = datetime(2025, 5, 14, 14, 5, tzinfo=UTC)
_SAMPLE_MESSAGES: Final = {
    IncidentState.INVESTIGATING: (
        "Some card payments fail at checkout with an error. Orders already placed are not "
        "affected, and you can retry a failed payment in a few minutes."
    ),
    IncidentState.IDENTIFIED: (
        "A configuration change at our payment provider is rejecting some cards. We are rolling "
        "it back."
    ),
    IncidentState.MONITORING: (
        "The change has been rolled back and payments are succeeding again. We are watching "
        "error rates closely."
    ),
    IncidentState.RESOLVED: (
        "A configuration change at our payment provider rejected some card payments between "
        "14:02 and 15:05 UTC. It has been rolled back, and failed payments can be retried safely."
    ),
    IncidentState.SCHEDULED: (
        "Checkout will be read-only for up to 15 minutes during the window. No action is needed."
    ),
}


def sample(
    state: IncidentState, *, public_url: str = "https://status.example.com"
) -> tuple[IncidentView, UpdateView, RecipientView]:
    """Realistic data for `outage template preview`: a checkout incident at the given state."""
    base = public_url.rstrip("/")
    scheduled = state is IncidentState.SCHEDULED
    started = datetime(2025, 5, 21, 2, 0, tzinfo=UTC) if scheduled else _SAMPLE_START
    created = {
        IncidentState.INVESTIGATING: _SAMPLE_START + timedelta(minutes=3),
        IncidentState.IDENTIFIED: _SAMPLE_START + timedelta(minutes=25),
        IncidentState.MONITORING: _SAMPLE_START + timedelta(minutes=55),
        IncidentState.RESOLVED: _SAMPLE_START + timedelta(minutes=65),
        IncidentState.SCHEDULED: datetime(2025, 5, 14, 10, 0, tzinfo=UTC),
    }[state]
    incident = IncidentView(
        id=42,
        title="Payments maintenance" if scheduled else "Checkout errors",
        severity=Severity.MINOR if scheduled else Severity.MAJOR,
        state=state,
        components=("checkout", "payments"),
        started_at=started,
        resolved_at=created if state is IncidentState.RESOLVED else None,
        url=f"{base}/incidents/42",
    )
    update = UpdateView(
        id=7,
        state=state,
        message=_SAMPLE_MESSAGES[state],
        created_at=created,
        next_update_at=created + timedelta(minutes=30) if state.is_open and not scheduled else None,
        eta=_sample_eta(state, started),
    )
    recipient = RecipientView(
        name="Ada",
        locale="en",
        manage_url=f"{base}/preferences/s-3f9a",
        unsubscribe_url=f"{base}/unsubscribe/s-3f9a",
    )
    return incident, update, recipient


def _sample_eta(state: IncidentState, started: datetime) -> datetime | None:
    if state is IncidentState.IDENTIFIED:
        return started + timedelta(minutes=70)
    if state is IncidentState.SCHEDULED:
        return started + timedelta(hours=2)
    return None


# -- one render for many recipients ---------------------------------------------------------
#
# Rendering Jinja for each of 100,000 recipients dominated a large fan-out, yet only a few
# things in a message are the recipient's own: their name and their two signed links (dates
# also follow their language and zone, which stay in the key). So a message is rendered once
# per (channel, update, language, zone) with placeholders where those go, and each recipient's
# values are substituted into it: by us for most channels, by the provider itself for email
# (SendGrid's per-personalization `substitutions`, so one request carries 1,000 recipients).

PLACEHOLDERS: Final[Mapping[str, str]] = {
    "name": "%outage_name%",
    "manage_url": "%outage_manage_url%",
    "unsubscribe_url": "%outage_unsubscribe_url%",
}
_HTML_SUFFIX: Final = "html%"  # "%outage_name%" in the html part becomes "%outage_name_html%"


@dataclass(frozen=True)
class Shared:
    """A message rendered once with placeholders; `personal()` fills in one recipient's values,
    `substitutions()` gives them as a provider's substitution map (keys in `rendered`)."""

    rendered: Rendered
    adapt: Callable[[str], str]  # what the channel does to a name (GSM look-alikes, escapes)

    def substitutions(self, recipient: RecipientView | None) -> dict[str, str]:
        if recipient is None:
            return {}
        name = self.adapt(recipient.name)
        values = {
            "name": name,
            "manage_url": recipient.manage_url,
            "unsubscribe_url": recipient.unsubscribe_url,
        }
        found: dict[str, str] = {}
        for field_name, value in values.items():
            if value is None:
                continue
            key = PLACEHOLDERS[field_name]
            # Text parts have their runs of spaces folded (_normalise_text); html keeps them.
            found[key] = " ".join(value.split()) if value is name else value
            if self.rendered.html is not None:
                found[_html_key(key)] = str(escape(value))
        return found

    def personal(self, recipient: RecipientView | None) -> Rendered:
        """What `render` would have produced for this recipient."""
        substitutions = self.substitutions(recipient)
        if not substitutions:
            return self.rendered

        def fill(text: str) -> str:
            for key, value in substitutions.items():
                text = text.replace(key, value)
            return text

        rendered = self.rendered
        return Rendered(
            text=fill(rendered.text),
            subject=fill(rendered.subject) if rendered.subject is not None else None,
            html=fill(rendered.html) if rendered.html is not None else None,
            payload=(
                {key: _filled(value, fill) for key, value in rendered.payload.items()}
                if rendered.payload is not None
                else None
            ),
        )


def render_shared(
    channel: str,
    limits: Limits,
    incident: IncidentView,
    update: UpdateView,
    recipient: RecipientView | None,
    *,
    company_name: str,
    support_url: str | None,
    sms_max_segments: int,
) -> Shared | None:
    """`render` for everyone who shares `recipient`'s language and zone (and which links they
    have); None when that cannot be shared: a channel fitted to a length whose text shows a
    recipient's own value, which could then fit for one recipient and not another."""
    stand_in = recipient
    if recipient is not None:
        stand_in = replace(
            recipient,
            name=PLACEHOLDERS["name"],
            manage_url=PLACEHOLDERS["manage_url"] if recipient.manage_url else None,
            unsubscribe_url=PLACEHOLDERS["unsubscribe_url"] if recipient.unsubscribe_url else None,
        )
    rendered = render(
        channel,
        limits,
        incident,
        update,
        stand_in,
        company_name=company_name,
        support_url=support_url,
        sms_max_segments=sms_max_segments,
    )
    fitted = any(
        value is not None
        for value in (limits.max_sms_segments, limits.max_weighted_chars, limits.max_text_chars)
    )
    if fitted and any(key in rendered.text for key in PLACEHOLDERS.values()):
        return None
    if rendered.html is not None:
        html = rendered.html
        for key in PLACEHOLDERS.values():
            html = html.replace(key, _html_key(key))
        rendered = replace(rendered, html=html)
    return Shared(rendered, _channel_text(channel, limits))


def shared_key(recipient: RecipientView | None) -> tuple[object, ...]:
    """What, of a recipient, a shared render depends on (with the channel and the update)."""
    if recipient is None:
        return (None,)
    return (
        language_of(recipient),
        recipient.timezone,
        recipient.manage_url is None,
        recipient.unsubscribe_url is None,
    )


def _html_key(key: str) -> str:
    return key[:-1] + "_" + _HTML_SUFFIX


def _filled(value: object, fill: Callable[[str], str]) -> object:
    if isinstance(value, str):
        return fill(value)
    if isinstance(value, dict):
        return {key: _filled(item, fill) for key, item in value.items()}
    if isinstance(value, list):
        return [_filled(item, fill) for item in value]
    return value
