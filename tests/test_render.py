"""Templates to messages: every channel and state renders, fits its channel, and says the facts."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from channels.base import Limits
from dispatcher.models import IncidentState
from dispatcher.render import templates
from dispatcher.render.fitting import cheaper_sms
from dispatcher.render.messages import render
from dispatcher.render.samples import sample
from dispatcher.render.templates import RenderError, TemplateMissing
from dispatcher.render.textfit import sms_encoding, sms_segments, tweet_length
from dispatcher.render.views import IncidentView, RecipientView, Rendered, UpdateView
from dispatcher.settings import TEMPLATES_DIR

LIMITS = {
    "sms": Limits(max_sms_segments=10),
    "email": Limits(has_subject=True, has_html=True),
    "social": Limits(max_weighted_chars=280),
    "webhook": Limits(max_text_chars=3000),
}
SUPPORT = "https://example.com/support"
LONG = (
    "Our payment provider\u2019s card gateway is returning errors \u2014 we\u2019re on it. " * 30
)[:1500]


def run(
    channel: str,
    incident: IncidentView,
    update: UpdateView,
    recipient: RecipientView | None,
    *,
    support_url: str | None = SUPPORT,
    sms_max_segments: int = 2,
    limits: Limits | None = None,
) -> Rendered:
    return render(
        channel,
        limits or LIMITS[channel],
        incident,
        update,
        None if channel == "social" else recipient,
        company_name="Example Cloud",
        support_url=support_url,
        sms_max_segments=sms_max_segments,
    )


def run_sample(channel: str, state: IncidentState, **changes: object) -> Rendered:
    incident, update, recipient = sample(state)
    return run(channel, incident, replace(update, **changes), recipient)  # type: ignore[arg-type]


ALL = [(channel, state) for channel in LIMITS for state in IncidentState]


@pytest.mark.parametrize(("channel", "state"), ALL)
def test_every_channel_and_state_renders_the_sample(channel: str, state: IncidentState) -> None:
    incident, _, _ = sample(state)
    rendered = run_sample(channel, state)
    assert rendered.text
    assert "\n\n\n" not in rendered.text
    assert rendered.text == rendered.text.strip()
    assert incident.url in rendered.text
    assert "None" not in rendered.text
    if channel == "email":
        assert rendered.subject and rendered.html
        assert incident.url in rendered.html
    else:
        assert rendered.subject is None
        assert rendered.html is None


# --- SMS ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", list(IncidentState))
def test_sms_with_a_huge_message_stays_gsm7_within_budget_with_its_link_intact(
    state: IncidentState,
) -> None:
    incident, _, _ = sample(state)
    rendered = run_sample("sms", state, message=LONG)
    assert sms_encoding(rendered.text) == "GSM-7"
    assert sms_segments(rendered.text) <= 2
    assert rendered.text.startswith("Example Cloud: ")
    assert rendered.text.splitlines()[-1] == incident.url
    assert "..." in rendered.text
    assert "Our payment provider's" in rendered.text


@pytest.mark.parametrize("state", list(IncidentState))
@pytest.mark.parametrize("budget", [1, 2, 3])
def test_sms_respects_the_operators_segment_budget(budget: int, state: IncidentState) -> None:
    incident, update, recipient = sample(state)
    rendered = run(
        "sms", incident, replace(update, message=LONG), recipient, sms_max_segments=budget
    )
    assert sms_segments(rendered.text) <= budget
    assert rendered.text.endswith(incident.url)


def test_one_segment_sms_takes_the_brief_form_before_giving_up() -> None:
    rendered = run_sample("sms", IncidentState.INVESTIGATING)
    assert SUPPORT in rendered.text
    assert "sorry" in rendered.text
    incident, update, recipient = sample(IncidentState.INVESTIGATING)
    brief = run("sms", incident, update, recipient, sms_max_segments=1)
    assert sms_segments(brief.text) == 1
    assert SUPPORT not in brief.text
    assert "sorry" not in brief.text
    assert "Next update by 14:38 UTC." in brief.text


def test_sms_budget_is_the_operators_setting_whatever_the_adapter_declares() -> None:
    incident, update, recipient = sample(IncidentState.INVESTIGATING)
    limits = Limits(max_sms_segments=1)
    long_update = replace(update, message=LONG)
    rendered = run("sms", incident, long_update, recipient, sms_max_segments=3, limits=limits)
    assert sms_segments(rendered.text) == 3


def test_sms_shortens_the_title_when_dropping_the_message_is_not_enough() -> None:
    incident, update, recipient = sample(IncidentState.INVESTIGATING)
    incident = replace(incident, title="Checkout errors " * 12)
    rendered = run(
        "sms",
        incident,
        replace(update, message=LONG),
        recipient,
        sms_max_segments=1,
        support_url=None,
    )
    assert sms_segments(rendered.text) == 1
    assert "Checkout errors..." in rendered.text
    assert rendered.text.endswith(incident.url)


def test_sms_that_cannot_fit_raises_render_error() -> None:
    incident, update, recipient = sample(IncidentState.INVESTIGATING)
    incident = replace(incident, url="https://status.example.com/" + "x" * 200)
    with pytest.raises(RenderError, match="sms/investigating") as caught:
        run("sms", incident, update, recipient, sms_max_segments=1)
    assert isinstance(caught.value, ValueError)


def test_sms_folds_typographic_punctuation_to_gsm7() -> None:
    rendered = run_sample(
        "sms", IncidentState.INVESTIGATING, message="We\u2019re on it \u2014 sorry."
    )
    assert "We're on it - sorry." in rendered.text
    assert sms_encoding(rendered.text) == "GSM-7"


def test_an_emoji_costs_the_operator_none_of_their_words() -> None:
    message = "Card payments fail \U0001f61e for some customers; we are investigating"
    rendered = run_sample("sms", IncidentState.INVESTIGATING, message=message)
    assert "Card payments fail for some customers; we are investigating" in rendered.text
    assert sms_encoding(rendered.text) == "GSM-7"
    assert sms_segments(rendered.text) <= 2


def test_letters_gsm7_lacks_lose_their_accents_rather_than_the_words() -> None:
    incident, update, recipient = sample(IncidentState.INVESTIGATING)
    rendered = run(
        "sms",
        replace(incident, title="Płatności w Łodzi"),
        replace(
            update, message="Płatności kartą nie działają; pracujemy nad tym i wkrótce napiszemy."
        ),
        recipient,
    )
    assert "Platnosci w Lodzi" in rendered.text
    assert "Platnosci karta nie dzialaja; pracujemy nad tym i wkrotce napiszemy." in rendered.text
    assert sms_segments(rendered.text) <= 2


def test_an_sms_keeps_its_emoji_when_folding_saves_no_segment() -> None:
    def text_of(incident: IncidentView, update: UpdateView, *, brief: bool) -> str:
        return f"{incident.title}: {update.message}"

    incident, update, _ = sample(IncidentState.INVESTIGATING)
    short = replace(update, message="down \U0001f61e")
    assert cheaper_sms(text_of, incident, short) == (incident, short)
    long = replace(update, message="down \U0001f61e " + "x" * 60)
    _, folded_update = cheaper_sms(text_of, incident, long)
    assert folded_update.message == "down " + "x" * 60


def test_a_link_inside_a_shortened_message_is_kept() -> None:
    link = "https://example.com/help/card-payments"
    message = (
        f"Card payments fail for some customers. The workaround is at {link} and we will post "
        "more as soon as we know what is causing it; thank you for bearing with us while we work "
        "on it with our payment provider."
    )
    rendered = run_sample("sms", IncidentState.INVESTIGATING, message=message)
    assert link in rendered.text
    assert "Card payments fail" in rendered.text
    assert "..." in rendered.text
    assert sms_segments(rendered.text) <= 2


def test_social_post_keeps_a_link_of_a_shortened_message() -> None:
    link = "https://example.com/help/card-payments"
    message = f"Card payments fail; the workaround is at {link}. " + "More detail follows. " * 20
    rendered = run_sample("social", IncidentState.INVESTIGATING, message=message)
    assert link in rendered.text
    assert tweet_length(rendered.text) <= 280


def test_sms_in_a_non_latin_script_is_ucs2_and_still_fits() -> None:
    incident, update, recipient = sample(IncidentState.INVESTIGATING)
    message = "\u6c7a\u6e08" * 400
    rendered = run("sms", incident, replace(update, message=message), recipient, sms_max_segments=4)
    assert sms_encoding(rendered.text) == "UCS-2"
    assert sms_segments(rendered.text) <= 4
    assert "\u6c7a\u6e08\u6c7a" in rendered.text
    assert "..." in rendered.text


def test_sms_drops_a_message_that_cannot_fit_rather_than_the_whole_sms() -> None:
    # Two UCS-2 segments cannot hold the GSM-7 frame and any Chinese text: the text goes.
    rendered = run_sample("sms", IncidentState.INVESTIGATING, message="\u6c7a\u6e08" * 400)
    assert sms_encoding(rendered.text) == "GSM-7"
    assert sms_segments(rendered.text) <= 2


# --- social -------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", list(IncidentState))
def test_social_post_fits_280_with_a_long_message(state: IncidentState) -> None:
    incident, _, recipient = sample(state)
    rendered = run_sample("social", state, message=LONG + " \U0001f600\u4f60\u597d" * 50)
    assert tweet_length(rendered.text) <= 280
    assert incident.url in rendered.text
    assert recipient.name not in rendered.text


# --- email --------------------------------------------------------------------------------------


def test_html_escapes_markup_that_the_text_part_keeps_verbatim() -> None:
    attack = '<script>alert("x")</script> & <b>bold</b>'
    incident, update, recipient = sample(IncidentState.INVESTIGATING)
    rendered = run(
        "email",
        replace(incident, title="Errors <img src=x onerror=alert(1)>"),
        replace(update, message=attack),
        recipient,
    )
    assert rendered.html is not None and rendered.subject is not None
    assert "<script>" not in rendered.html
    assert "&lt;script&gt;" in rendered.html
    assert "&lt;img src=x onerror=alert(1)&gt;" in rendered.html
    assert "<img" not in rendered.html
    assert attack in rendered.text
    assert "&lt;" not in rendered.text
    assert "<img src=x onerror=alert(1)>" in rendered.subject


def test_email_subject_names_state_title_and_company() -> None:
    rendered = run_sample("email", IncidentState.INVESTIGATING)
    assert rendered.subject == "[Investigating] Checkout errors \u2014 Example Cloud"


def test_email_text_and_html_carry_the_same_facts() -> None:
    incident, update, recipient = sample(IncidentState.IDENTIFIED)
    rendered = run("email", incident, update, recipient)
    assert rendered.html is not None
    assert recipient.manage_url and recipient.unsubscribe_url
    for fact in [
        incident.url,
        SUPPORT,
        recipient.manage_url,
        recipient.unsubscribe_url,
        "Hi Ada,",
        "Next update by 15:00 UTC.",
        "We expect it to be fixed by 15:15 UTC.",
        "checkout and payments",
    ]:
        assert fact in rendered.text, fact
        assert fact in rendered.html, fact
    assert "Manage your preferences" in rendered.html
    assert "Unsubscribe" in rendered.html
    assert 'lang="en"' in rendered.html


def test_email_without_preference_links_has_no_footer() -> None:
    incident, update, _ = sample(IncidentState.INVESTIGATING)
    bare = RecipientView(name="Ada", locale="en")
    rendered = run("email", incident, update, bare, support_url=None)
    assert rendered.html is not None
    assert "Unsubscribe" not in rendered.text
    assert "Unsubscribe" not in rendered.html
    assert "support" not in rendered.text.lower()


def test_times_are_shown_in_utc_with_the_day_when_not_today() -> None:
    incident, update, recipient = sample(IncidentState.INVESTIGATING)
    berlin = timezone(timedelta(hours=2))
    update = replace(
        update,
        created_at=datetime(2025, 5, 14, 23, 50, tzinfo=UTC),
        next_update_at=datetime(2025, 5, 15, 3, 0, tzinfo=berlin),
    )
    rendered = run("email", incident, update, recipient)
    assert "Next update by Thu 15 May 01:00 UTC." in rendered.text


# --- locale -------------------------------------------------------------------------------------


@pytest.mark.parametrize("locale", ["fr", "fr-FR", "nl_NL", "xx-YY", "../../etc"])
def test_unknown_locale_falls_back_to_english(locale: str) -> None:
    incident, update, recipient = sample(IncidentState.INVESTIGATING)
    english = run("email", incident, update, recipient)
    other = run("email", incident, update, replace(recipient, locale=locale))
    assert other == english


@pytest.fixture
def templates_with_dutch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, root)
    dutch = root / "sms" / "nl"
    dutch.mkdir()
    (dutch / "investigating.text.j2").write_text(
        "{{ company }}: Wij onderzoeken {{ incident.title }}. {{ incident.url }}\n"
    )
    monkeypatch.setenv("OUTAGE_TEMPLATES_DIR", str(root))
    templates.environment.cache_clear()
    yield root
    templates.environment.cache_clear()


@pytest.mark.usefixtures("templates_with_dutch")
def test_adding_a_language_is_adding_files() -> None:
    incident, update, recipient = sample(IncidentState.INVESTIGATING)
    dutch = run("sms", incident, update, replace(recipient, locale="nl-NL"))
    assert dutch.text.startswith("Example Cloud: Wij onderzoeken Checkout errors.")
    resolved_incident, resolved, _ = sample(IncidentState.RESOLVED)
    fallback = run("sms", resolved_incident, resolved, replace(recipient, locale="nl"))
    assert "Resolved" in fallback.text  # no Dutch file for this state yet: English


# --- webhook ------------------------------------------------------------------------------------


def test_webhook_payload_is_slack_text_plus_structured_fields() -> None:
    incident, update, recipient = sample(IncidentState.IDENTIFIED)
    rendered = run("webhook", incident, update, recipient)
    payload = rendered.payload
    assert payload is not None
    assert payload["text"] == rendered.text
    assert payload["incident"] == {
        "id": 42,
        "title": "Checkout errors",
        "severity": "major",
        "state": "identified",
        "components": ["checkout", "payments"],
        "started_at": "2025-05-14T14:05:00+00:00",
        "resolved_at": None,
        "url": incident.url,
    }
    assert payload["update"] == {
        "id": 7,
        "state": "identified",
        "message": update.message,
        "created_at": "2025-05-14T14:30:00+00:00",
        "next_update_at": "2025-05-14T15:00:00+00:00",
        "eta": "2025-05-14T15:15:00+00:00",
        "credit_note": None,
        "review_url": None,
        "note": None,
        "story": [],
    }
    assert json.loads(json.dumps(payload)) == payload
    assert len(rendered.text.splitlines()) <= 2
    assert f"<{incident.url}|Status page>" in rendered.text


def test_webhook_text_escapes_slack_control_characters_but_payload_keeps_them() -> None:
    rendered = run_sample("webhook", IncidentState.INVESTIGATING, message="<!channel> R&D <3")
    assert "&lt;!channel&gt; R&amp;D &lt;3" in rendered.text
    assert "<!channel>" not in rendered.text
    assert rendered.payload is not None
    assert rendered.payload["update"]["message"] == "<!channel> R&D <3"  # type: ignore[index]


@pytest.mark.parametrize("channel", ["sms", "email", "social"])
def test_only_webhooks_get_a_payload(channel: str) -> None:
    assert run_sample(channel, IncidentState.INVESTIGATING).payload is None


# --- missing templates --------------------------------------------------------------------------


def test_missing_template_raises_template_missing() -> None:
    incident, update, recipient = sample(IncidentState.INVESTIGATING)
    with pytest.raises(TemplateMissing, match=r"fax/investigating: no text template") as caught:
        render(
            "fax",
            Limits(),
            incident,
            update,
            recipient,
            company_name="Example Cloud",
            support_url=None,
            sms_max_segments=2,
        )
    assert isinstance(caught.value, RenderError)
    assert isinstance(caught.value, ValueError)
    assert "fax/en/investigating.text.j2" in str(caught.value)


def test_missing_html_part_raises_template_missing() -> None:
    with pytest.raises(TemplateMissing, match="no html template"):
        run("sms", *sample(IncidentState.INVESTIGATING), limits=Limits(has_html=True))


# --- what the messages say ----------------------------------------------------------------------


@pytest.mark.parametrize("channel", list(LIMITS))
def test_investigating_acknowledges_names_components_and_links_status(channel: str) -> None:
    incident, _, _ = sample(IncidentState.INVESTIGATING)
    text = run_sample(channel, IncidentState.INVESTIGATING).text
    assert "investigating" in text.lower()
    assert "checkout and payments" in text
    assert incident.url in text
    if channel != "webhook":
        assert "Next update by 14:38 UTC" in text
        assert "sorry" in text.lower()


@pytest.mark.parametrize("channel", list(LIMITS))
def test_investigating_without_a_next_update_time_still_says_what_comes_next(
    channel: str,
) -> None:
    text = run_sample(channel, IncidentState.INVESTIGATING, next_update_at=None, message=None).text
    assert "as soon as we know more" in text


@pytest.mark.parametrize("channel", list(LIMITS))
def test_resolved_says_resolved_and_thanks(channel: str) -> None:
    text = run_sample(channel, IncidentState.RESOLVED).text
    assert "resolved" in text.lower()
    assert "thank you for your patience" in text.lower()
    assert "15:10 UTC" in text


@pytest.mark.parametrize("channel", list(LIMITS))
def test_scheduled_gives_the_maintenance_window(channel: str) -> None:
    text = run_sample(channel, IncidentState.SCHEDULED).text
    assert "Wed 21 May 02:00-04:00 UTC" in text
    assert "maintenance" in text.lower()


def test_sample_covers_every_state() -> None:
    for state in IncidentState:
        incident, update, recipient = sample(state, public_url="https://status.acme.test/")
        assert update.state is state
        assert incident.url == "https://status.acme.test/incidents/42"
        assert incident.components == ("checkout", "payments")
        assert recipient.locale == "en"


@pytest.mark.parametrize("locale", ["en", "de"])
@pytest.mark.parametrize("state", list(IncidentState))
def test_every_value_a_user_can_set_is_escaped_in_email_html(
    state: IncidentState, locale: str
) -> None:
    """Names come from public sign-up and titles from monitoring payloads: none may inject
    markup into an email."""
    incident, update, recipient = sample(state)
    rendered = render(
        "email",
        LIMITS["email"],
        replace(incident, title="<i>T</i>", components=("<u>C</u>",)),
        replace(update, message="<s>M</s>"),
        replace(recipient, name="<b>N</b>", locale=locale),
        company_name="<q>Co</q>",
        support_url="https://example.org/<a>",
        sms_max_segments=2,
    )
    assert rendered.html is not None
    leaked = [tag for tag in ("<b>", "<i>", "<u>", "<s>", "<q>", "<a>") if tag in rendered.html]
    assert leaked == []
    assert "&lt;b&gt;N&lt;/b&gt;" in rendered.html
    assert "<b>N</b>" in rendered.text, "plain text is not HTML-escaped"
