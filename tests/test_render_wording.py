"""What every message says, in every channel and language: the estimated fix while it is set,
and each incident's title and components once."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from dispatcher.models import IncidentState
from dispatcher.render.messages import render
from dispatcher.render.samples import sample
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
