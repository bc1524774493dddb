"""A German subscriber gets German everywhere: the confirmation messages and the answer to JA,
the preference centre with its errors, the confirmation and unsubscribe pages, and a bad link's
page for a German browser. Errors from phonenumbers and email-validator are plain sentences,
translated by their code, never "((0) Missing or invalid default region.)". Through the app,
the real adapters and the sandbox, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import tomllib
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from twilio.request_validator import RequestValidator

from channels.transport import SANDBOX_CREDENTIAL
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.links import LinkPurpose
from dispatcher.models import SubscriberIn
from dispatcher.render.textfit import sms_encoding, sms_segments
from dispatcher.sandbox.server import Sandbox
from dispatcher.settings import TEMPLATES_DIR
from dispatcher.subscribers import confirmations, preferences, records
from dispatcher.subscribers.records import describe

PHONE = "+4915123456789"
ENGLISH_LEFTOVERS = ("Your notification", "Save preferences", "Unsubscribe", "Quiet hours", "Hi ")


def pipeline_of(client: TestClient) -> Pipeline:
    pipeline: Pipeline = client.app.state.pipeline  # type: ignore[attr-defined]
    return pipeline


def add_german(client: TestClient, *, confirmed: bool = True) -> int:
    pipeline = pipeline_of(client)
    data = SubscriberIn(
        name="Jürgen",
        email="juergen@example.de",
        phone=PHONE,
        channels=["email", "sms"],
        locale="de-DE",
        confirmed=confirmed,
    )
    return records.add(pipeline.store, pipeline.registry, data).id


def path(client: TestClient, purpose: LinkPurpose, subscriber_id: int) -> str:
    pipeline = pipeline_of(client)
    subscriber = preferences.get(pipeline.store, subscriber_id)
    return urlsplit(pipeline.links.url(purpose, subscriber)).path


def test_the_confirmations_are_german(client: TestClient, sandbox: Sandbox) -> None:
    subscriber_id = add_german(client, confirmed=False)
    confirmations.request(pipeline_of(client), subscriber_id)
    (email,) = sandbox.messages("email")
    (sms,) = sandbox.messages("sms")
    assert email["subject"] == "Bestätigen Sie Ihre Statusmeldungen von Example Cloud"
    assert email["body"].startswith("Hallo Jürgen,")
    assert "/confirm/" in email["body"] and "/preferences/" in email["body"]
    assert "Antworten Sie JA" in sms["body"] and "/confirm/" in sms["body"]
    assert sms_encoding(sms["body"]) == "GSM-7"
    assert sms_segments(sms["body"]) <= 3


def test_replying_ja_confirms_and_is_answered_in_german(client: TestClient) -> None:
    subscriber_id = add_german(client, confirmed=False)
    params = {"MessageSid": "SM" + "2" * 32, "From": PHONE, "To": "+15005550006", "Body": "Ja"}
    url = pipeline_of(client).settings.public_url.rstrip("/") + "/webhooks/twilio/inbound"
    signature = RequestValidator(SANDBOX_CREDENTIAL).compute_signature(url, params)
    response = client.post(
        "/webhooks/twilio/inbound", data=params, headers={"X-Twilio-Signature": signature}
    )
    assert response.status_code == 200
    assert "Diese Nummer ist für Störungsmeldungen bestätigt" in response.text
    subscriber = preferences.get(pipeline_of(client).store, subscriber_id)
    assert subscriber.phone_confirmed_at is not None


def test_the_preference_centre_is_german(client: TestClient) -> None:
    response = client.get(path(client, LinkPurpose.MANAGE, add_german(client)))
    assert response.status_code == 200
    assert '<html lang="de">' in response.text
    assert response.headers["content-language"] == "de"
    for german in ("Ihre Benachrichtigungseinstellungen", "Hallo Jürgen", "Ruhezeiten"):
        assert german in response.text
    for english in ENGLISH_LEFTOVERS:
        assert english not in response.text


def errors_on(page: str) -> dict[str, str]:
    return dict(re.findall(r'<p class="error" id="([a-z_]+)-error">([^<]*)</p>', page))


@pytest.mark.parametrize(
    ("field", "typed", "german"),
    [
        ("phone", "0151 23456789", "Geben Sie die Nummer mit Ländervorwahl ein"),
        ("phone", "call me", "Das ist keine Telefonnummer."),
        (
            "email",
            "juergen-at-example.de",
            "Geben Sie eine E-Mail-Adresse wie name@example.com ein.",
        ),
    ],
)
def test_an_address_error_is_a_german_sentence(
    client: TestClient, field: str, typed: str, german: str
) -> None:
    subscriber_id = add_german(client)
    form = {
        "order": ["email", "sms"],
        "channels": ["email", "sms"],
        "email": "juergen@example.de",
        "phone": PHONE,
        "min_severity": "minor",
        "timezone": "Europe/Berlin",
        "locale": "de",
        field: typed,
    }
    response = client.post(path(client, LinkPurpose.MANAGE, subscriber_id), data=form)
    assert response.status_code == 422
    assert german in errors_on(response.text)[field]
    assert "Bitte prüfen Sie diese Angabe:" in response.text
    for noise in ("(0)", "default region", "@-sign", "Value error"):
        assert noise not in response.text


def test_a_missing_address_is_said_in_german(client: TestClient) -> None:
    subscriber_id = add_german(client)
    form = {
        "order": ["email", "sms"],
        "channels": ["email", "sms"],
        "email": "juergen@example.de",
        "phone": "",
        "min_severity": "minor",
        "timezone": "UTC",
        "locale": "de",
    }
    response = client.post(path(client, LinkPurpose.MANAGE, subscriber_id), data=form)
    assert errors_on(response.text)["phone"] == (
        "Geben Sie Ihre Handynummer ein, oder entfernen Sie das Häkchen bei SMS."
    )


def test_the_confirmation_and_unsubscribe_pages_are_german(client: TestClient) -> None:
    pipeline = pipeline_of(client)
    subscriber_id = add_german(client, confirmed=False)
    (asked, *_) = confirmations.request(pipeline, subscriber_id, ["email"])
    assert asked.field == "email"
    token = pipeline.links.url(
        LinkPurpose.CONFIRM,
        preferences.get(pipeline.store, subscriber_id),
        confirmations.confirmation_detail(
            pipeline.settings.secret_key.get_secret_value(),  # type: ignore[union-attr]
            "email",
            "juergen@example.de",
        ),
    )
    confirm = client.get(urlsplit(token).path)
    assert "Bestätigen Sie Ihre E-Mail-Adresse" in confirm.text
    assert "Ja, meine E-Mail-Adresse bestätigen" in confirm.text
    done = client.post(urlsplit(token).path)
    assert "Ihre E-Mail-Adresse ist bestätigt" in done.text
    unsubscribe = client.get(path(client, LinkPurpose.UNSUBSCRIBE, subscriber_id))
    assert "Alle Statusmeldungen von Example Cloud abbestellen?" in unsubscribe.text
    gone = client.post(path(client, LinkPurpose.UNSUBSCRIBE, subscriber_id))
    assert "Sie haben abbestellt" in gone.text
    for page in (confirm, done, unsubscribe, gone):
        assert '<html lang="de">' in page.text


def test_a_bad_link_speaks_the_browsers_language(client: TestClient) -> None:
    german = client.get("/preferences/not-a-token", headers={"Accept-Language": "de-CH, en;q=0.5"})
    assert german.status_code == 403
    assert "Dieser Link funktioniert nicht" in german.text
    english = client.get("/preferences/not-a-token", headers={"Accept-Language": "fr, en;q=0.8"})
    assert "This link does not work" in english.text


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("0151 23456789", "phone: enter the number with its country code, like +14155550100"),
        ("call me", "phone: not a phone number"),
        ("+1 555", "phone: not a valid phone number"),
    ],
)
def test_the_operator_reads_a_plain_sentence_for_a_bad_number(value: str, said: str) -> None:
    with pytest.raises(ValidationError) as caught:
        SubscriberIn(name="x", phone=value, channels=["sms"])
    assert describe(caught.value) == said


def catalogue(language: str) -> dict[str, str]:
    with (TEMPLATES_DIR / "web" / language / "words.toml").open("rb") as handle:
        sections = tomllib.load(handle)
    return {f"{s}.{k}": v for s, entries in sections.items() for k, v in entries.items()}


def test_every_page_sentence_exists_in_every_language() -> None:
    english, german = catalogue("en"), catalogue("de")
    assert set(english) == set(german)
    for key, text in english.items():  # the same {names}, so a page can fill either in
        assert re.findall(r"{(\w+)}", text) == re.findall(r"{(\w+)}", german[key]), key
    used = set()
    for template in (TEMPLATES_DIR / "web").glob("*.html.j2"):
        used.update(re.findall(r"""\bt\(["']([a-z_.]+)["']""", template.read_text()))
    assert used and used <= set(english), used - set(english)
