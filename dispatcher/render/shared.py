"""One rendering shared by many recipients, with each recipient's own values filled in after.

Rendering Jinja for each of 100,000 recipients dominated a large fan-out, yet only a few
things in a message are the recipient's own: their name and their three signed links (dates
also follow their language and zone, which stay in the key; a private incident's link is
under their page link). So a message is rendered once
per (channel, update, language, zone) with placeholders where those go, and each recipient's
values are substituted into it: by us for most channels, by the provider itself for email
(SendGrid's per-personalization `substitutions`, so one request carries 1,000 recipients).

A channel fitted to a length (SMS) cannot share a text showing a recipient's name: it could fit
for one and not for another. Their page link can be shared: its placeholder is made exactly as
long as the link (plain URL characters, one GSM-7 character each), so whoever has a link of that
length (nearly everyone in a batch; the length is in the key) gets a text that fits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Final

from markupsafe import escape

from channels.base import Limits
from dispatcher.render.fitting import channel_text
from dispatcher.render.messages import render
from dispatcher.render.templates import language_of
from dispatcher.render.views import IncidentView, RecipientView, Rendered, UpdateView

PLACEHOLDERS: Final[Mapping[str, str]] = {
    "name": "%outage_name%",
    "manage_url": "%outage_manage_url%",
    "unsubscribe_url": "%outage_unsubscribe_url%",
    "page_url": "%outage_page_url%",
}
_HTML_SUFFIX: Final = "html%"  # "%outage_name%" in the html part becomes "%outage_name_html%"


@dataclass(frozen=True)
class Shared:
    """A message rendered once with placeholders; `personal()` fills in one recipient's values,
    `substitutions()` gives them as a provider's substitution map (keys in `rendered`)."""

    rendered: Rendered
    adapt: Callable[[str], str]  # what the channel does to a name (GSM look-alikes, escapes)
    page_key: str = PLACEHOLDERS["page_url"]  # the page link's placeholder (`_page_placeholder`)

    def substitutions(self, recipient: RecipientView | None) -> dict[str, str]:
        if recipient is None:
            return {}
        name = self.adapt(recipient.name)
        values = {
            "name": name,
            "manage_url": recipient.manage_url,
            "unsubscribe_url": recipient.unsubscribe_url,
            "page_url": recipient.page_url,
        }
        found: dict[str, str] = {}
        for field_name, value in values.items():
            if value is None:
                continue
            key = self.page_key if field_name == "page_url" else PLACEHOLDERS[field_name]
            # Text parts have their runs of spaces folded (as `render` does); html keeps them.
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
    feedback_url: str | None = None,
) -> Shared | None:
    """`render` for everyone who shares `recipient`'s language and zone (and which links they
    have); None when that cannot be shared: a channel fitted to a length whose text shows a
    recipient's own value, which could then fit for one recipient and not another."""
    fitted = any(
        value is not None
        for value in (limits.max_sms_segments, limits.max_weighted_chars, limits.max_text_chars)
    )
    stand_in = recipient
    page_key = PLACEHOLDERS["page_url"]
    if recipient is not None:
        page_key = _page_placeholder(recipient.page_url, fitted)
        stand_in = replace(
            recipient,
            name=PLACEHOLDERS["name"],
            manage_url=PLACEHOLDERS["manage_url"] if recipient.manage_url else None,
            unsubscribe_url=PLACEHOLDERS["unsubscribe_url"] if recipient.unsubscribe_url else None,
            page_url=page_key if recipient.page_url else None,
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
        feedback_url=feedback_url,
    )
    personal = [value for name, value in PLACEHOLDERS.items() if name != "page_url"]
    if fitted and any(key in rendered.text for key in personal):
        return None
    if rendered.html is not None:
        html = rendered.html
        for key in (*personal, page_key):
            html = html.replace(key, _html_key(key))
        rendered = replace(rendered, html=html)
    return Shared(rendered, channel_text(channel, limits), page_key)


def _page_placeholder(page_url: str | None, fitted: bool) -> str:
    """The page link's placeholder: for a fitted channel exactly as long as the link."""
    key = PLACEHOLDERS["page_url"]
    if not fitted or page_url is None or len(page_url) <= len(key):
        return key
    return key[:-1] + "_" * (len(page_url) - len(key)) + "%"


def shared_key(recipient: RecipientView | None) -> tuple[object, ...]:
    """What, of a recipient, a shared render depends on (with the channel and the update)."""
    if recipient is None:
        return (None,)
    return (
        language_of(recipient),
        recipient.timezone,
        recipient.manage_url is None,
        recipient.unsubscribe_url is None,
        len(recipient.page_url or ""),  # a fitted text is shared by links of one length
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
