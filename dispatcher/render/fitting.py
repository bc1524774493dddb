"""Making an update's text fit what a channel carries: its characters and its length.

Characters first: SMS gets GSM-7 look-alikes for typographic punctuation (one curly quote would
turn the whole message into UCS-2), webhook text gets Slack's three escapes; the same change is
made to a recipient's name when a shared render fills it in later (`shared.py`). An SMS that is
still UCS-2 because of an emoji or a letter GSM-7 lacks ("ó", "ł") is folded into GSM-7
(`gsm_fold`: accents off, emoji out, every word kept) when that makes it fewer segments: one
emoji would otherwise cost the operator's words, a UCS-2 segment holding 70 characters, not 160.

Then length. Each channel's text must fit what the provider carries. When it does not, what
is for some recipients only is left out first (the story so far, then the segment note: an SMS
carries them only when they fit), then the operator's free text is shortened, then the title;
links are never cut, and the links of the operator's message are kept even when the words
around them go. Only if no form keeps them is the message dropped, links and all. If nothing
fits, the message cannot be sent on this channel at all, which the caller treats as a
permanent failure. The text is measured by rendering it (`TextOf`), so this module needs no
templates; how each provider counts is `textfit.py`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from channels.base import Limits
from dispatcher.render.textfit import (
    TWEET_MAX_WEIGHT,
    first_words,
    gsm_fold,
    gsm_transliterate,
    links_in,
    longest,
    shorten,
    sms_segments,
    tweet_length,
)
from dispatcher.render.views import IncidentView, UpdateView


class TextOf(Protocol):
    """The channel's text for this incident and update; `brief` asks for the shortest form."""

    def __call__(self, incident: IncidentView, update: UpdateView, *, brief: bool) -> str: ...


# The update's texts an operator wrote, in the order they grow back once all are shortened.
_OPERATOR_TEXTS = ("credit_note", "message")


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


def cheaper_sms(
    text_of: TextOf, incident: IncidentView, update: UpdateView
) -> tuple[IncidentView, UpdateView]:
    """The incident and update as the SMS should carry them: folded into GSM-7 (`gsm_fold`)
    when the folded text is fewer segments, else as they are (an emoji in a short SMS that is
    one segment either way stays). Measured on the full form, before any shortening."""
    folded = _folded(incident, update)
    if folded is None:
        return incident, update
    as_is = sms_segments(text_of(incident, update, brief=False))
    if sms_segments(text_of(*folded, brief=False)) < as_is:
        return folded
    return incident, update


def _folded(incident: IncidentView, update: UpdateView) -> tuple[IncidentView, UpdateView] | None:
    """Every operator text of the views in GSM-7; None if one cannot be, or none changes."""
    texts = [incident.title, update.message or "", update.credit_note or "", *incident.components]
    folded = [gsm_fold(text) for text in texts]
    if folded == texts or any(text is None for text in folded):
        return None
    title, message, credit_note, *components = (text or "" for text in folded)
    return (
        replace(incident, title=title, components=tuple(components)),
        replace(update, message=message or None, credit_note=credit_note or None),
    )


def fitted(
    text_of: TextOf, incident: IncidentView, update: UpdateView, fits: Callable[[str], bool]
) -> tuple[IncidentView, UpdateView, bool] | None:
    """The incident and update, shortened until the text fits, and whether it took the brief
    form; None if even that does not fit.

    The full form is tried first: with the story and the note, without the story, without
    either; then the survey link goes (ours, and the least needed), then the operator's texts
    (the message, the credit note) are shortened to the same number of words, then grow back
    as far as the room allows (the credit note first: one sentence, and what a customer is
    owed), then the title is shortened. Only if even that fails is the brief form tried
    (templates then leave out the apology and the support line), because a message without
    them beats no message at all. Only when no word of the texts fits in either form are they
    cut to their links alone, and only then dropped."""
    bare = replace(update, story=(), note=None)
    fuller = [update, replace(update, story=())] if update.story else [update]
    texts = [getattr(bare, name) or "" for name in _OPERATOR_TEXTS]
    levels = [_WORDS, _LINKS] if any(links_in(text) for text in texts) else [_WORDS]
    for level in (*levels, _NOTHING):
        for brief in (False, True):
            if level == levels[0]:
                for candidate in (c for c in dict.fromkeys(fuller) if c != bare):
                    if fits(text_of(incident, candidate, brief=brief)):
                        return incident, candidate, brief
            shortened = _shortened(text_of, incident, bare, brief, fits, level)
            if shortened is not None:
                return (*shortened, brief)
    return None


_WORDS, _LINKS, _NOTHING = "words", "links", "nothing"  # what is left of the operator's texts


def _shortened(
    text_of: TextOf,
    incident: IncidentView,
    update: UpdateView,
    brief: bool,
    fits: Callable[[str], bool],
    level: str,
) -> tuple[IncidentView, UpdateView] | None:
    """The operator's texts cut to `level` (some of their words, their links, nothing), then
    the title shortened, until the text fits; None if never."""

    def fits_with(incident: IncidentView, update: UpdateView) -> bool:
        return fits(text_of(incident, update, brief=brief))

    if fits_with(incident, update):
        return incident, update
    # The survey is ours and the least needed: it gives way before any of the operator's words.
    update = replace(update, feedback_url=None)
    if fits_with(incident, update):
        return incident, update
    if level == _WORDS:
        kept = _fair_share(update, lambda shown: fits_with(incident, shown))
        if kept is not None:
            return incident, kept
        update = _cut_to(update, 1)
    else:
        for name in _OPERATOR_TEXTS:
            links = " ".join(links_in(getattr(update, name) or "")) if level == _LINKS else ""
            update = _with_text(update, name, links or None)
    if fits_with(incident, update):
        return incident, update
    title = shorten(
        incident.title, lambda candidate: fits_with(replace(incident, title=candidate), update)
    )
    return (replace(incident, title=title), update) if title else None


def _fair_share(update: UpdateView, fits: Callable[[UpdateView], bool]) -> UpdateView | None:
    """The operator's texts shortened so that they fit together: first all to the same number
    of words (so that the credit note is not lost to a long message, nor the reverse), then each
    in turn (`_OPERATOR_TEXTS`' order) as long as the room left allows (a text without spaces is
    cut between characters there); None if they cannot fit together."""
    longest_text = max(len((getattr(update, name) or "").split()) for name in _OPERATOR_TEXTS)
    words = longest(longest_text, lambda count: fits(_cut_to(update, count)))
    shown = _cut_to(update, words) if words else update
    for name in _OPERATOR_TEXTS:
        text = getattr(update, name)
        if text:

            def fits_as(candidate: str, name: str = name, shown: UpdateView = shown) -> bool:
                return fits(_with_text(shown, name, candidate))

            shortened = shorten(text, fits_as)
            if shortened:
                shown = _with_text(shown, name, shortened)
    return shown if fits(shown) else None


def _cut_to(update: UpdateView, words: int) -> UpdateView:
    """Each of the operator's texts cut to its first `words` words (links kept)."""
    for name in _OPERATOR_TEXTS:
        text = getattr(update, name)
        if text:
            update = _with_text(update, name, first_words(text, words) or None)
    return update


def _with_text(update: UpdateView, name: str, text: str | None) -> UpdateView:
    """The update with one of its `_OPERATOR_TEXTS` replaced."""
    if name == "credit_note":
        return replace(update, credit_note=text)
    return replace(update, message=text)
