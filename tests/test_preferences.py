"""The preference centre and one-click unsubscribe over HTTP, and the core they call.

Runs on SQLite and PostgreSQL (the `client` fixture's database). What matters most: a bad link
changes nothing (403 forged or wrong page, 410 expired or erased), GET never changes anything,
bad input is a 422 page that names each field and keeps what was typed, and an opt-out outlives
re-imports and deletion.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from itsdangerous import TimestampSigner
from sqlalchemy import select
from typer.testing import CliRunner

from dispatcher.cli import app as cli
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents import lifecycle
from dispatcher.links import LinkPurpose
from dispatcher.models import (
    DeliveryStatus,
    IncidentIn,
    Severity,
    SubscriberIn,
    SuppressionReason,
)
from dispatcher.sandbox.server import Sandbox
from dispatcher.settings import Settings
from dispatcher.store import AuditEvent, Delivery, Subscriber
from dispatcher.subscribers import imports, preferences, records
from dispatcher.subscribers.suppressions import suppress
from dispatcher.web.app import create_app

COMPONENTS = ["api", "checkout", "search"]


@pytest.fixture
def web(web_settings: Settings) -> Iterator[TestClient]:
    """The app with a configured list of components."""
    settings = web_settings.model_copy(update={"components": COMPONENTS})
    with TestClient(create_app(settings)) as running:
        yield running


def pipeline_of(client: TestClient) -> Pipeline:
    pipeline: Pipeline = client.app.state.pipeline  # type: ignore[attr-defined]
    return pipeline


def add(pipeline: Pipeline, **fields: object) -> Subscriber:
    data = SubscriberIn.model_validate(
        {
            "name": "Ada",
            "email": "ada@example.org",
            "phone": "+14155550100",
            "channels": ["sms", "email"],
            "confirmed": True,
            **fields,
        }
    )
    return records.add(pipeline.store, pipeline.registry, data)


def path(pipeline: Pipeline, purpose: LinkPurpose, subscriber: Subscriber) -> str:
    return urlsplit(pipeline.links.url(purpose, subscriber)).path


def form(**overrides: object) -> dict[str, object]:
    """The preference form as the page submits it for Ada, with changes."""
    return {
        "order": ["sms", "email"],
        "channels": ["sms", "email"],
        "email": "ada@example.org",
        "phone": "+14155550100",
        "min_severity": "minor",
        "timezone": "UTC",
        "locale": "en",
        **overrides,
    }


def errors_on(page: str) -> dict[str, str]:
    return dict(re.findall(r'<p class="error" id="([a-z_]+)-error">([^<]*)</p>', page))


def test_page_shows_the_preferences_with_safe_headers(web: TestClient) -> None:
    pipeline = pipeline_of(web)
    ada = add(pipeline, components=["checkout"], quiet_start="22:00", quiet_end="07:00")
    response = web.get(path(pipeline, LinkPurpose.MANAGE, ada))
    assert response.status_code == 200
    page = response.text
    assert 'value="ada@example.org"' in page and 'value="+14155550100"' in page
    assert re.search(r'value="checkout" checked', page)
    assert 'value="22:00"' in page
    for component in COMPONENTS:
        assert f'value="{component}"' in page
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    # Every form control has a label pointing at it.
    for control in re.findall(r'<(?:input|select)[^>]* id="([^"]+)"', page):
        assert f'for="{control}"' in page, f"no label for #{control}"


def test_saving_changes_channels_quiet_hours_and_filters(web: TestClient) -> None:
    pipeline = pipeline_of(web)
    ada = add(pipeline)
    url = path(pipeline, LinkPurpose.MANAGE, ada)
    response = web.post(
        url,
        data=form(
            order=["email", "sms"],
            components=["checkout", "api"],
            min_severity="major",
            quiet="on",
            quiet_start="22:00",
            quiet_end="07:00",
            timezone="Europe/Berlin",
        ),
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"{url}?done=saved"
    saved = preferences.get(pipeline.store, ada.id)
    assert saved.channels == ["email", "sms"]
    assert saved.components == ["api", "checkout"]
    assert saved.min_severity == Severity.MAJOR
    assert (saved.quiet_start, saved.quiet_end, saved.timezone) == (
        "22:00",
        "07:00",
        "Europe/Berlin",
    )
    assert saved.email_confirmed_at is not None, "an unchanged address stays confirmed"
    assert "Your preferences are saved." in web.get(response.headers["location"]).text
    with pipeline.store.session() as session:
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "preferences_updated")
        ).one()
    assert event.actor == "subscriber"
    assert "ada@" not in str(event.detail), "the audit trail names fields, not addresses"


def test_bad_input_is_a_422_page_naming_each_field_and_nothing_changes(web: TestClient) -> None:
    pipeline = pipeline_of(web)
    ada = add(pipeline)
    response = web.post(
        path(pipeline, LinkPurpose.MANAGE, ada),
        data=form(
            email="not-an-address",
            phone="",
            quiet="on",
            quiet_start="22:00",
            timezone="Mars/Olympus",
            components=["nonsense"],
        ),
    )
    assert response.status_code == 422
    errors = errors_on(response.text)
    assert set(errors) == {"email", "phone", "quiet_start", "timezone", "components"}
    assert "Traceback" not in response.text
    assert 'value="not-an-address"' in response.text, "what was typed is kept"
    assert preferences.get(pipeline.store, ada.id).email == "ada@example.org"


def test_no_channel_ticked_is_refused(web: TestClient) -> None:
    pipeline = pipeline_of(web)
    ada = add(pipeline)
    response = web.post(path(pipeline, LinkPurpose.MANAGE, ada), data=form(channels=[]))
    assert response.status_code == 422
    assert "Choose at least one way to reach you" in errors_on(response.text)["channels"]


def test_moving_a_channel_without_javascript_reorders_but_does_not_save(web: TestClient) -> None:
    pipeline = pipeline_of(web)
    ada = add(pipeline)
    response = web.post(path(pipeline, LinkPurpose.MANAGE, ada), data=form(move="email:up"))
    assert response.status_code == 200
    order = re.findall(r'<input type="hidden" name="order" value="([a-z]+)">', response.text)
    assert order == ["email", "sms"]
    assert "Save your preferences to keep it" in response.text
    assert preferences.get(pipeline.store, ada.id).channels == ["sms", "email"]


def test_a_new_address_must_be_confirmed_and_is_sent_a_confirmation(
    web: TestClient, sandbox: Sandbox
) -> None:
    """An address added where there was none (replacing a confirmed one: test_link_takeover)."""
    pipeline = pipeline_of(web)
    ada = add(pipeline, phone=None, channels=["email"])
    web.post(path(pipeline, LinkPurpose.MANAGE, ada), data=form(phone="+14155550199"))
    saved = preferences.get(pipeline.store, ada.id)
    assert saved.phone == "+14155550199"
    assert saved.phone_confirmed_at is None
    assert saved.email_confirmed_at is not None
    (sent,) = sandbox.messages("sms")
    assert sent["to"] == "+14155550199"
    assert "/confirm/" in sent["body"]


@pytest.mark.parametrize("purpose", [LinkPurpose.UNSUBSCRIBE, LinkPurpose.CONFIRM])
def test_a_link_for_another_page_is_403(web: TestClient, purpose: LinkPurpose) -> None:
    pipeline = pipeline_of(web)
    ada = add(pipeline)
    token = pipeline.links.token(purpose, ada, "email:x")
    assert web.get(f"/preferences/{token}").status_code == 403
    assert web.post(f"/preferences/{token}", data=form(channels=["email"])).status_code == 403
    assert preferences.get(pipeline.store, ada.id).channels == ["sms", "email"]


def test_a_forged_link_is_403_and_changes_nothing(web: TestClient) -> None:
    pipeline = pipeline_of(web)
    ada = add(pipeline)
    ben = add(pipeline, name="Ben", email="ben@example.org", phone=None, channels=["email"])
    token = pipeline.links.token(LinkPurpose.MANAGE, ada)
    payload, rest = token.split(".", 1)
    # Ada's token with Ben's id in it: the signature no longer matches.
    other = pipeline.links.token(LinkPurpose.MANAGE, ben).split(".", 1)[0]
    for forged in (f"{other}.{rest}", token[:-2] + "xx", "garbage"):
        response = web.post(f"/preferences/{forged}", data=form(channels=["email"]))
        assert response.status_code == 403
        assert "This link does not work" in response.text
    assert web.post(f"/unsubscribe/{payload}.{rest[:-1]}").status_code == 403
    assert preferences.get(pipeline.store, ada.id).unsubscribed_at is None


def test_an_expired_link_is_410(web: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline = pipeline_of(web)
    ada = add(pipeline)
    long_ago = int(time.time()) - 31 * 86400  # the preference link lives 30 days
    with monkeypatch.context() as patched:
        patched.setattr(TimestampSigner, "get_timestamp", lambda self: long_ago)
        url = path(pipeline, LinkPurpose.MANAGE, ada)
    response = web.post(url, data=form(channels=["email"]))
    assert response.status_code == 410
    assert "expired" in response.text
    assert web.get(url).status_code == 410
    assert preferences.get(pipeline.store, ada.id).channels == ["sms", "email"]


def test_a_link_of_an_erased_subscriber_is_410(web: TestClient) -> None:
    pipeline = pipeline_of(web)
    ada = add(pipeline)
    url = path(pipeline, LinkPurpose.MANAGE, ada)
    preferences.erase(pipeline.store, ada.id, actor="operator")
    assert web.get(url).status_code == 410


def test_one_click_unsubscribe_get_asks_and_post_unsubscribes(web: TestClient) -> None:
    pipeline = pipeline_of(web)
    ada = add(pipeline)
    url = path(pipeline, LinkPurpose.UNSUBSCRIBE, ada)
    page = web.get(url)
    assert page.status_code == 200 and "Unsubscribe from everything" in page.text
    assert preferences.get(pipeline.store, ada.id).unsubscribed_at is None, "GET changes nothing"
    # RFC 8058: a mail client POSTs List-Unsubscribe=One-Click, no cookies, no redirects.
    response = web.post(
        url,
        content="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert response.status_code == 200
    assert "You are unsubscribed" in response.text
    assert web.post(url).status_code == 200, "a second click is harmless"
    with pipeline.store.session() as session:
        assert records.opt_outs(session, preferences.get(pipeline.store, ada.id)) == {
            "email": SuppressionReason.UNSUBSCRIBED,
            "phone": SuppressionReason.UNSUBSCRIBED,
        }


def test_unsubscribe_all_and_back_lifts_only_the_persons_own_opt_outs(web: TestClient) -> None:
    pipeline = pipeline_of(web)
    ada = add(pipeline)
    with pipeline.store.session() as session:  # the phone texted STOP earlier
        suppress(session, "phone", "+14155550100", SuppressionReason.STOP, actor="test")
    url = path(pipeline, LinkPurpose.MANAGE, ada)
    response = web.post(url, data={"action": "unsubscribe_all"}, follow_redirects=False)
    assert response.headers["location"].endswith("?done=unsubscribed")
    assert "You are unsubscribed from everything" in web.get(url).text
    web.post(url, data={"action": "resubscribe"})
    again = preferences.get(pipeline.store, ada.id)
    assert again.unsubscribed_at is None
    with pipeline.store.session() as session:
        assert records.opt_outs(session, again) == {"phone": SuppressionReason.STOP}


def test_an_opt_out_survives_a_re_import_and_the_next_update_skips_it(
    pipeline: Pipeline, sandbox: Sandbox, tmp_path: Path
) -> None:
    ada = add(pipeline, phone=None, channels=["email"])
    preferences.unsubscribe_all(pipeline.store, ada.id, actor="subscriber")
    preferences.erase(pipeline.store, ada.id, actor="operator")
    csv_file = tmp_path / "again.csv"
    csv_file.write_text(
        "name,email,channels,confirmed\nAda,ada@example.org,email,yes\nBen,ben@example.org,email,yes\n"
    )
    report = imports.import_file(pipeline.store, pipeline.registry, csv_file)
    assert (report.imported, report.still_suppressed) == (2, 1)
    posted = lifecycle.open_incident(
        pipeline.store, IncidentIn(title="API errors", severity=Severity.MAJOR, components=["api"])
    )
    pipeline.announce(posted.update_id, wait_s=5)
    assert [m["to"] for m in sandbox.messages("email")] == ["ben@example.org"]


def test_erasing_keeps_anonymous_delivery_statistics_only(
    pipeline: Pipeline, sandbox: Sandbox
) -> None:
    ada = add(pipeline, phone=None, channels=["email"])
    posted = lifecycle.open_incident(
        pipeline.store, IncidentIn(title="API errors", severity=Severity.MAJOR, components=["api"])
    )
    pipeline.announce(posted.update_id, wait_s=5)
    preferences.erase(pipeline.store, ada.id, actor="operator")
    with pipeline.store.session() as session:
        assert session.get(Subscriber, ada.id) is None
        (delivery,) = session.scalars(select(Delivery).where(Delivery.channel == "email")).all()
        assert delivery.status is DeliveryStatus.SENT
        assert (delivery.subscriber_id, delivery.provider_id, delivery.last_error) == (
            None,
            None,
            None,
        )
        actions = session.scalars(
            select(AuditEvent.action).where(AuditEvent.subscriber_id == ada.id)
        ).all()
    assert "subscriber_erased" in actions


def test_cli_prints_a_working_link(
    tmp_path: Path, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dispatcher.settings import get_settings

    monkeypatch.setenv("OUTAGE_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.sqlite3'}")
    monkeypatch.setenv("OUTAGE_SANDBOX_URL", sandbox.url)
    monkeypatch.setenv("OUTAGE_PUBLIC_URL", "https://status.example.com/")
    monkeypatch.setenv("OUTAGE_SECRET_KEY", "k" * 32)
    runner = CliRunner()
    add_args = ["subscriber", "add", "--name", "Ada", "--email", "a@example.org"]
    added = runner.invoke(cli, [*add_args, "--channels", "email", "--confirmed"])
    assert added.exit_code == 0, added.output
    get_settings.cache_clear()
    printed = runner.invoke(cli, ["subscriber", "link", "1"])
    assert printed.exit_code == 0
    url = printed.stdout.strip()
    assert url.startswith("https://status.example.com/preferences/")
    get_settings.cache_clear()
    settings = get_settings().model_copy(update={"api_token": None})
    with TestClient(create_app(settings)) as running:
        assert running.get(urlsplit(url).path).status_code == 200
    get_settings.cache_clear()
    missing = runner.invoke(cli, ["subscriber", "link", "9"])
    assert missing.exit_code == 2 and "no subscriber with id 9" in missing.stderr
