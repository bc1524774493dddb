"""Making an update's text fit what a channel carries: its characters and its length.

Characters first: SMS gets GSM-7 look-alikes for typographic punctuation (one curly quote would
turn the whole message into UCS-2), webhook text gets Slack's three escapes; the same change is
made to a recipient's name when a shared render fills it in later (`shared.py`).

Then length. Each channel's text must fit what the provider carries. When it does not, what
is for some recipients only is left out first (the story so far, then the segment note: an SMS
carries them only when they fit), then the operator's free text is shortened, then the title;
links are never cut. If nothing fits,
the message cannot be sent on this channel at all, which the caller treats as a permanent
failure. The text is measured by rendering it (`TextOf`), so this module needs no templates;
how each provider counts is `textfit.py`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from channels.base import Limits
from dispatcher.render.textfit import (
    TWEET_MAX_WEIGHT,
    gsm_transliterate,
    shorten,
    sms_segments,
    tweet_length,
)
from dispatcher.render.views import IncidentView, UpdateView


class TextOf(Protocol):
    """The channel's text for this incident and update; `brief` asks for the shortest form."""

    def __call__(self, incident: IncidentView, update: UpdateView, *, brief: bool) -> str: ...


def channel_text(channel: str, limits: Limits) -> Callable[[str], str]:
    """What the channel does to every text we put in (title, message, names)."""
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


def fitted(
    text_of: TextOf, incident: IncidentView, update: UpdateView, fits: Callable[[str], bool]
) -> tuple[IncidentView, UpdateView, bool] | None:
    """The incident and update, shortened until the text fits, and whether it took the brief
    form; None if even that does not fit.

    The full form is tried first: with the story and the note, without the story, without
    either; then shortening the message, then the title. Only if even that fails is the brief
    form tried (templates then leave out the apology and the support line), because a message
    without them beats no message at all."""
    bare = replace(update, story=(), note=None)
    fuller = [update, replace(update, story=())] if update.story else [update]
    for brief in (False, True):
        for candidate in (c for c in dict.fromkeys(fuller) if c != bare):
            if fits(text_of(incident, candidate, brief=brief)):
                return incident, candidate, brief
        shortened = _shortened(text_of, incident, bare, brief, fits)
        if shortened is not None:
            return (*shortened, brief)
    return None


def _shortened(
    text_of: TextOf,
    incident: IncidentView,
    update: UpdateView,
    brief: bool,
    fits: Callable[[str], bool],
) -> tuple[IncidentView, UpdateView] | None:
    """The message shortened (or dropped), then the title, until the text fits; None if never."""

    def fits_with(incident: IncidentView, update: UpdateView) -> bool:
        return fits(text_of(incident, update, brief=brief))

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
