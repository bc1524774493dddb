"""German messages: every channel and state, GSM-7 SMS within budget, dates in German and in the
subscriber's time zone, and English (dates too) wherever a German template is missing."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dispatcher.models import IncidentState
from dispatcher.render import templates
from dispatcher.render.calendar import clock, day, formatting, window
from dispatcher.render.messages import render
from dispatcher.render.samples import sample
from dispatcher.render.textfit import sms_encoding, sms_segments, tweet_length
from dispatcher.render.views import RecipientView, Rendered
from dispatcher.settings import TEMPLATES_DIR
from tests.test_render import LIMITS, LONG, SUPPORT, run

BERLIN = "Europe/Berlin"
WINTER = datetime(2025, 1, 15, 10, 0, tzinfo=UTC)  # CET, UTC+1
# What each state says first, on every channel: the message is German, not English with a date.
GERMAN_WORDS = {
    IncidentState.INVESTIGATING: "untersuchen",
    IncidentState.IDENTIFIED: "Ursache",
    IncidentState.MONITORING: "Lösung",
    IncidentState.RESOLVED: "ehoben",  # "Behoben:" in SMS, "ist behoben" in email
    IncidentState.SCHEDULED: "Wartung",
    IncidentState.CANCELLED: "abgesagt",
}


def german(recipient: RecipientView, zone: str = BERLIN) -> RecipientView:
    return replace(recipient, locale="de-DE", timezone=zone)


def run_de(channel: str, state: IncidentState, zone: str = BERLIN, **changes: object) -> Rendered:
    incident, update, recipient = sample(state)
    update = replace(update, **changes)  # type: ignore[arg-type]
    return render(
        channel,
        LIMITS[channel],
        incident,
        update,
        german(recipient, zone),  # the social post too: its German templates are checked here
        company_name="Example Cloud",
        support_url=SUPPORT,
        sms_max_segments=2,
    )


ALL = [(channel, state) for channel in LIMITS for state in IncidentState]


@pytest.mark.parametrize(("channel", "state"), ALL)
def test_every_channel_and_state_has_german_wording(channel: str, state: IncidentState) -> None:
    incident, _, _ = sample(state)
    rendered = run_de(channel, state, message=None)  # the sample's operator text is English
    assert GERMAN_WORDS[state] in rendered.text
    assert incident.url in rendered.text
    assert "None" not in rendered.text
    assert "\n\n\n" not in rendered.text
    for english in ("We are", "Next update", "sorry", "UTC"):
        assert english not in rendered.text, english
    if channel == "email":
        assert rendered.html is not None and rendered.subject is not None
        assert 'lang="de"' in rendered.html
        assert "Zur Statusseite" in rendered.html
        assert "Abmelden" in rendered.text and "Abmelden" in rendered.html
        assert rendered.subject.endswith("— Example Cloud")
    if channel == "social":
        assert tweet_length(rendered.text) <= 280


@pytest.mark.parametrize("state", list(IncidentState))
@pytest.mark.parametrize("message", [None, "sample", LONG])
def test_german_sms_is_gsm7_and_within_the_segment_budget(
    state: IncidentState, message: str | None
) -> None:
    incident, _, _ = sample(state)
    changes = {} if message == "sample" else {"message": message}
    rendered = run_de("sms", state, **changes)
    assert sms_encoding(rendered.text) == "GSM-7"
    assert sms_segments(rendered.text) <= 2
    assert rendered.text.startswith("Example Cloud: ")
    assert rendered.text.splitlines()[-1] == incident.url


def test_german_sms_keeps_umlauts_which_are_gsm7() -> None:
    text = run_de("sms", IncidentState.INVESTIGATING).text
    assert "Nächstes Update" in text
    assert "Störung" in text
    assert sms_encoding("ä ö ü Ä Ö Ü ß") == "GSM-7"


def test_times_are_in_the_subscribers_zone_and_german() -> None:
    # The sample's next update is 14:38 UTC in May: 16:38 in Berlin (summer time).
    assert "Nächstes Update bis 16:38 Uhr MESZ." in run_de("sms", IncidentState.INVESTIGATING).text
    winter = run_de(
        "email",
        IncidentState.INVESTIGATING,
        created_at=datetime(2025, 1, 15, 9, 30, tzinfo=UTC),
        next_update_at=WINTER,
    )
    assert "Nächstes Update bis 11:00 Uhr MEZ." in winter.text
    assert winter.html is not None and "11:00 Uhr MEZ" in winter.html


def test_the_day_is_shown_when_it_differs_in_the_subscribers_zone() -> None:
    # 22:30 and 23:30 UTC on 14 Jan are the same UTC day, but 23:30 and 00:30 in Berlin.
    rendered = run_de(
        "email",
        IncidentState.INVESTIGATING,
        created_at=datetime(2025, 1, 14, 22, 30, tzinfo=UTC),
        next_update_at=datetime(2025, 1, 14, 23, 30, tzinfo=UTC),
    )
    assert "Nächstes Update bis Mi., 15. Jan., 00:30 Uhr MEZ." in rendered.text


def test_the_maintenance_window_is_written_in_german_local_time() -> None:
    # The sample window is 02:00-04:00 UTC on Wed 21 May: 04:00-06:00 in Berlin.
    text = run_de("email", IncidentState.SCHEDULED).text
    assert "Mi., 21. Mai, 04:00-06:00 Uhr MESZ" in text


def test_an_english_subscriber_in_another_zone_gets_english_local_times() -> None:
    incident, update, recipient = sample(IncidentState.INVESTIGATING)
    rendered = run("sms", incident, update, replace(recipient, timezone="America/New_York"))
    assert "Next update by 10:38 EDT." in rendered.text


def test_an_unknown_time_zone_falls_back_to_utc_instead_of_failing() -> None:
    text = run_de("sms", IncidentState.INVESTIGATING, zone="Mars/Olympus_Mons").text
    assert "Nächstes Update bis 14:38 Uhr UTC." in text


def test_a_broadcast_stays_english_and_utc() -> None:
    incident, update, recipient = sample(IncidentState.INVESTIGATING)
    post = run("social", incident, update, german(recipient))  # run() drops the recipient
    assert "Next update by 14:38 UTC." in post.text


def test_dates_outside_a_render_are_english_utc_and_inside_formatting_german() -> None:
    assert clock(WINTER) == "10:00 UTC"
    assert day(WINTER) == "Wed 15 Jan"
    with formatting("de", BERLIN):
        assert clock(WINTER) == "11:00 Uhr MEZ"
        assert day(WINTER) == "Mi., 15. Jan."
        assert window(WINTER, None) == "Mi., 15. Jan., ab 11:00 Uhr MEZ"
    with formatting("en", "Asia/Dubai"):
        assert clock(WINTER) == "14:00 UTC+4"  # the tz database has no letters for it
    with formatting("xx", "UTC"):
        assert clock(WINTER) == "10:00 UTC"  # no table for the language: English
    assert clock(WINTER) == "10:00 UTC"


@pytest.fixture
def german_sms_without_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    root = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, root)
    (root / "sms" / "de" / "resolved.text.j2").unlink()
    monkeypatch.setenv("OUTAGE_TEMPLATES_DIR", str(root))
    templates.environment.cache_clear()
    yield
    templates.environment.cache_clear()


@pytest.mark.usefixtures("german_sms_without_resolved")
def test_a_missing_german_template_falls_back_to_english_with_english_dates() -> None:
    text = run_de("sms", IncidentState.RESOLVED).text
    assert "Resolved: Checkout errors." in text
    # English wording, so English date words; the subscriber's zone still applies.
    assert "17:10 CEST" in text
    assert "Uhr" not in text
    assert "Wird untersucht" not in text
    assert (
        GERMAN_WORDS[IncidentState.INVESTIGATING] in run_de("sms", IncidentState.INVESTIGATING).text
    )


@pytest.mark.parametrize("locale", ["fr", "xx-YY", "../../etc"])
def test_a_language_without_templates_is_english(locale: str) -> None:
    incident, update, recipient = sample(IncidentState.INVESTIGATING)
    rendered = run("email", incident, update, replace(recipient, locale=locale))
    assert rendered.text == run("email", incident, update, recipient).text
