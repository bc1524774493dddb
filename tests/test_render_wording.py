"""What every message says, in every channel and language: the estimated fix while it is set,
each incident's title and components once, the post-incident review as a message of its own, the
credit note as its own paragraph, and the survey in the reader's language."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from dispatcher.models import IncidentState
from dispatcher.render.messages import render
from dispatcher.render.samples import every_topic, sample
from dispatcher.render.textfit import sms_segments
from dispatcher.render.views import Rendered
from tests.test_render import LIMITS, SUPPORT

OPEN_STATES = [IncidentState.INVESTIGATING, IncidentState.IDENTIFIED, IncidentState.MONITORING]
LANGUAGES = {"en": "15:15 UTC", "de": "15:15 Uhr UTC"}


def run(channel: str, state: IncidentState, locale: str = "en", **changes: object) -> Rendered:
    incident, update, recipient = sample(state)
    incident_changes = {k: v for k, v in changes.items() if k in ("title", "components")}
    update_changes = {k: v for k, v in changes.items() if k not in incident_changes}
    return render(
        channel,
        LIMITS[channel],
        replace(incident, **incident_changes),  # type: ignore[arg-type]
        replace(update, **update_changes),  # type: ignore[arg-type]
        replace(recipient, locale=locale),
        company_name="Example Cloud",
        support_url=SUPPORT,
        sms_max_segments=2,
    )


@pytest.mark.parametrize("locale", LANGUAGES)
@pytest.mark.parametrize("state", OPEN_STATES)
@pytest.mark.parametrize("channel", LIMITS)
def test_the_estimated_fix_is_in_every_message_while_it_is_set(
    channel: str, state: IncidentState, locale: str
) -> None:
    incident, _, _ = sample(state)
    rendered = run(channel, state, locale, eta=incident.started_at + timedelta(minutes=70))
    assert LANGUAGES[locale] in rendered.text
    if rendered.html is not None:
        assert LANGUAGES[locale] in rendered.html


@pytest.mark.parametrize("channel", LIMITS)
def test_a_resolved_message_promises_no_fix(channel: str) -> None:
    incident, _, _ = sample(IncidentState.RESOLVED)
    rendered = run(channel, IncidentState.RESOLVED, eta=incident.started_at + timedelta(hours=3))
    assert "17:05" not in rendered.text
    assert "expect" not in rendered.text


@pytest.mark.parametrize("locale", LANGUAGES)
@pytest.mark.parametrize("state", list(IncidentState))
@pytest.mark.parametrize("channel", LIMITS)
def test_a_title_that_names_its_component_is_not_followed_by_it_again(
    channel: str, state: IncidentState, locale: str
) -> None:
    rendered = run(
        channel, state, locale, title="Disruption affecting general", components=("general",)
    )
    for part in filter(None, (rendered.text, rendered.subject, rendered.html)):
        for line in part.splitlines():
            assert line.count("affecting general") + line.count("bei general") <= 1, line


@pytest.mark.parametrize("locale", ["en", "de"])
def test_a_title_that_does_not_name_the_components_is_followed_by_them(locale: str) -> None:
    rendered = run("sms", IncidentState.INVESTIGATING, locale, title="Slow logins")
    assert "Slow logins " + {"en": "affecting", "de": "bei"}[locale] in rendered.text
    assert "checkout und payments" in rendered.text or "checkout and payments" in rendered.text


# --- the post-incident review, the credit note, the survey ------------------------------------


def review(channel: str, locale: str = "en") -> Rendered:
    incident, update, recipient = list(every_topic())[-1]
    return render(
        channel,
        LIMITS[channel],
        incident,
        update,
        replace(recipient, locale=locale),
        company_name="Example Cloud",
        support_url=SUPPORT,
        sms_max_segments=2,
        feedback_url=SURVEY,
    )


REVIEW_WORDS = {"en": ("Post-incident review", "Resolved"), "de": ("Nachbetrachtung", "Behoben")}


def test_the_review_email_is_its_own_kind_of_message() -> None:
    rendered = review("email")
    assert rendered.subject == "[Post-incident review] Checkout errors \u2014 Example Cloud"
    assert "post-incident review of Checkout errors is published" in rendered.text
    assert "Read the review: https://status.example.com/reviews/42" in rendered.text
    assert rendered.html is not None
    assert 'href="https://status.example.com/reviews/42"' in rendered.html


@pytest.mark.parametrize("locale", REVIEW_WORDS)
@pytest.mark.parametrize("channel", LIMITS)
def test_no_channel_calls_the_review_a_second_resolution(channel: str, locale: str) -> None:
    rendered = review(channel, locale)
    said, not_said = REVIEW_WORDS[locale]
    for part in filter(None, (rendered.text, rendered.subject, rendered.html)):
        assert not_said not in part
    assert "https://status.example.com/reviews/42" in rendered.text
    assert said.lower() in (rendered.subject or rendered.text).lower()
    assert SURVEY not in rendered.text  # the survey went with the resolution


def test_the_german_review_says_nachbetrachtung_in_subject_and_body() -> None:
    rendered = review("email", "de")
    assert rendered.subject == "[Nachbetrachtung] Checkout errors \u2014 Example Cloud"
    assert "Unsere Nachbetrachtung zu Checkout errors" in rendered.text


CREDIT = "Affected accounts get a 10% credit on this month's invoice."
SURVEY = "https://example.com/survey"


def resolved(channel: str, locale: str = "en", segments: int = 2, **changes: object) -> Rendered:
    incident, update, recipient = sample(IncidentState.RESOLVED)
    return render(
        channel,
        LIMITS[channel],
        incident,
        replace(update, **changes),  # type: ignore[arg-type]
        None if channel == "social" else replace(recipient, locale=locale),
        company_name="Example Cloud",
        support_url=SUPPORT,
        sms_max_segments=segments,
        feedback_url=SURVEY,
    )


@pytest.mark.parametrize("locale", ["en", "de"])
def test_the_credit_note_is_its_own_paragraph(locale: str) -> None:
    rendered = resolved("email", locale, credit_note=CREDIT)
    assert f"\n\n{CREDIT}\n\n" in rendered.text
    assert rendered.html is not None
    assert f">{CREDIT.replace(chr(39), '&#39;')}</p>" in rendered.html
    sms = resolved("sms", locale, segments=3, credit_note=CREDIT)
    assert f"\n{CREDIT}\n" in sms.text


def test_the_public_post_never_carries_the_credit_note_nor_the_survey() -> None:
    rendered = resolved("social", credit_note=CREDIT)
    assert "credit" not in rendered.text
    assert SURVEY not in rendered.text


def test_a_long_credit_note_is_shortened_rather_than_the_sms_lost() -> None:
    rendered = resolved("sms", credit_note="Affected accounts get a credit. " * 20)
    assert sms_segments(rendered.text) <= 2
    assert "Affected accounts" in rendered.text


@pytest.mark.parametrize(
    ("locale", "sentence"),
    [
        ("en", f"Tell us how we handled this: {SURVEY}"),
        ("de", f"Sagen Sie uns, wie wir das gemacht haben: {SURVEY}"),
    ],
)
@pytest.mark.parametrize("channel", ["email", "sms"])
def test_the_survey_is_asked_for_in_the_readers_language(
    channel: str, locale: str, sentence: str
) -> None:
    rendered = resolved(channel, locale, message="Fixed.", credit_note=None)
    assert sentence in rendered.text
    assert "Tell us" not in rendered.text or locale == "en"


def test_the_survey_gives_way_before_the_operators_words() -> None:
    rendered = resolved("sms", message="Rolled back; payments work again.", credit_note=CREDIT)
    assert "Rolled back; payments work again." in rendered.text
    assert CREDIT in rendered.text
    assert SURVEY not in rendered.text
    assert sms_segments(rendered.text) <= 2


def test_a_maintenance_that_ended_asks_for_no_survey() -> None:
    rendered = resolved("email", milestone="completed")
    assert SURVEY not in rendered.text
