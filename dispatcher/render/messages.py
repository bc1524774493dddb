"""Rendering one update into one channel's message: the entry point (`render`).

A render finds the channel's text template (`templates.py`), writes dates in that template's
language and the recipient's zone (`calendar.py`), makes the texts what the channel carries (an
SMS folded into GSM-7 when that saves segments) and shortens them until the text fits
(`fitting.py`), then renders the other parts the channel has.

The email's HTML and subject take their wording from the blocks of the email's text template,
so the state files are written once and the three parts cannot tell different stories. A
webhook also gets the structured facts (`webhook_payload`), unshortened.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final

from jinja2 import Template
from markupsafe import escape

from channels.base import Limits
from dispatcher.models import IncidentState
from dispatcher.render.calendar import formatting, utc
from dispatcher.render.fitting import channel_text, cheaper_sms, fits_limits, fitted
from dispatcher.render.templates import (
    RenderError,
    language_of,
    template,
    template_errors,
    template_language,
)
from dispatcher.render.views import IncidentView, RecipientView, Rendered, UpdateView

WORDING_BLOCKS: Final[tuple[str, ...]] = (
    "label",
    "lead",
    "impact",
    "message",
    "credit",
    "next",
    "closing",
)
_BLANK_RUNS: Final = re.compile(r"\n{3,}")


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
        with template_errors(self.channel, self.state, "text"):
            text = self.text.render(self.variables(incident, update, brief=brief))
        return _normalise_text(text)

    def render_with_wording(
        self, incident: IncidentView, update: UpdateView, *, brief: bool
    ) -> tuple[str, dict[str, str]]:
        """The text part, and each of its wording blocks rendered on its own (for html/subject)."""
        context = self.text.new_context(self.variables(incident, update, brief=brief))
        with template_errors(self.channel, self.state, "text"):
            text = "".join(self.text.root_render_func(context))
            wording = {
                name: _normalise_text("".join(context.blocks[name][0](context)))
                for name in WORDING_BLOCKS
                if name in context.blocks
            }
        return _normalise_text(text), wording


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
    feedback_url: str | None = None,
) -> Rendered:
    """Render `update` for one recipient (or the public, when None) on `channel`, fitted to
    `limits`. Raises TemplateMissing or RenderError, both permanent for this channel.

    The templates are the update's topic's (its state, or the post-incident review). Dates are
    written in the language of the template found (a German subscriber whose template falls back
    to English reads English dates) and in the recipient's time zone (UTC for a broadcast). The
    feedback survey (`feedback_url`) is offered with the resolution of an incident, not with a
    maintenance's end or a review."""
    language = language_of(recipient)
    if feedback_url and _asks_for_feedback(update):
        update = replace(update, feedback_url=feedback_url)
    state = update.topic
    if incident.private and recipient is not None and recipient.page_url:
        # Not on the public page (its link would be a 404): on the recipient's own.
        incident = replace(incident, url=f"{recipient.page_url}/incidents/{incident.id}")
    text = template(channel, language, state, "text")
    with formatting(template_language(text, language), recipient.timezone if recipient else "UTC"):
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


def _asks_for_feedback(update: UpdateView) -> bool:
    """An incident's resolution; a milestone resolving (a maintenance's end) or a review not."""
    return update.state is IncidentState.RESOLVED and update.milestone is None


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
    if limits.max_sms_segments is not None:
        shown_incident, shown_update = cheaper_sms(job.render_text, shown_incident, shown_update)
    shortened = fitted(
        job.render_text, shown_incident, shown_update, fits_limits(limits, sms_max_segments)
    )
    if shortened is None:
        raise RenderError(job.channel, job.state, "does not fit the channel even when shortened")
    shown_incident, shown_update, brief = shortened
    text, wording = job.render_with_wording(shown_incident, shown_update, brief=brief)
    extra = {**job.variables(shown_incident, shown_update, brief=brief), "wording": wording}
    return Rendered(
        text=text,
        subject=_part(job, language, "subject", extra) if limits.has_subject else None,
        html=_part(job, language, "html", extra) if limits.has_html else None,
        payload=webhook_payload(text, incident, update) if channel == "webhook" else None,
    )


def _part(job: _Job, language: str, part: str, variables: Mapping[str, object]) -> str:
    """Render the subject or HTML part with the text part's wording."""
    found = template(job.channel, language, job.state, part)
    if part == "html":
        variables = _html_safe(variables)
    with template_errors(job.channel, job.state, part):
        rendered = found.render(variables)
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


def _prepared(
    job: _Job, limits: Limits, incident: IncidentView, update: UpdateView
) -> tuple[_Job, IncidentView, UpdateView]:
    """The texts as this channel should show them: SMS gets GSM-7 look-alikes for typographic
    punctuation, webhook text gets Slack's three escapes; everyone gets a tidy message."""
    message = _normalise_message(update.message)
    credit_note = _normalise_message(update.credit_note)
    adapt = channel_text(job.channel, limits)
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
        replace(
            update,
            message=adapt(message) if message else None,
            credit_note=adapt(credit_note) if credit_note else None,
            note=adapt(note) if (note := _normalise_message(update.note)) else None,
            story=tuple(
                replace(item, message=adapt(earlier) if earlier else None)
                for item in update.story
                for earlier in (_normalise_message(item.message),)
            ),
        ),
    )


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
            "credit_note": update.credit_note,
            "review_url": update.review_url,
            "note": update.note,  # for the segments this recipient is in
            "story": [  # the earlier updates, for one told of the incident only now
                {"state": str(item.state), "message": item.message, "at": _iso(item.created_at)}
                for item in update.story
            ],
        },
    }


def _iso(moment: datetime | None) -> str | None:
    return utc(moment).isoformat() if moment is not None else None


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
