"""Logs as an operator and an auditor read them: one structured line per delivery attempt with
every id, and never a full phone number, email address or secret, even when a provider quotes
one in its error."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import requests
from requests_oauthlib import OAuth1

from channels.base import Message
from dispatcher.delivery.registry import ChannelRegistry
from dispatcher.logs import (
    RedactingFilter,
    log_attempt,
    mask_address,
    mask_email,
    mask_phone,
    redact,
    setup_logging,
)
from dispatcher.models import DeliveryStatus, FailureReason
from dispatcher.sandbox.server import Sandbox
from dispatcher.settings import Settings, get_settings


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    """Our handler installed as on a server (JSON lines); removed afterwards."""
    root = logging.getLogger()
    level = root.level
    setup_logging(logging.INFO, json_lines=True)
    yield capsys
    for handler in list(root.handlers):
        if handler.get_name() == "outage":
            root.removeHandler(handler)
    root.setLevel(level)


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]


def test_masks_keep_what_helps_diagnosis_and_hide_the_person() -> None:
    assert mask_phone("+14155550123") == "+14*******23"
    assert mask_email("ada.lovelace@example.org") == "a***@example.org"
    assert (
        mask_address("https://hooks.example.org/T0/B1/secret?x=1")
        == "https://hooks.example.org/***"
    )
    assert mask_address("social") == "social"


def test_redact_removes_secrets_and_addresses_from_any_text() -> None:
    text = (
        "POST https://user:hunter2@api.example.com/x?token=abc123 with "
        "Authorization: Bearer eyJhbGciOi.payload key SG.abcdefghij.klmnopqrstuv "
        "for ada@example.org and +14155550123"
    )
    cleaned = redact(text)
    for secret in ("hunter2", "abc123", "eyJhbGciOi", "SG.abcdefghij", "ada@", "+14155550123"):
        assert secret not in cleaned
    assert "a***@example.org" in cleaned
    assert "+14*******23" in cleaned


def test_one_json_line_per_delivery_attempt(json_logs: pytest.CaptureFixture[str]) -> None:
    log_attempt(
        incident_id=7,
        update_id=12,
        delivery_id=345,
        channel="sms",
        status=DeliveryStatus.QUEUED,
        to="+14155550123",
        provider_id=None,
        duration_s=0.2503,
        attempts=3,
        reason=FailureReason.RATE_LIMITED,
        error="sms: Twilio error 20429 (HTTP 429)",
    )
    (line,) = lines(json_logs)
    assert line["event"] == "delivery_attempt"
    assert line["level"] == "info"
    assert line["logger"] == "outage.delivery"
    assert (line["incident_id"], line["update_id"], line["delivery_id"]) == (7, 12, 345)
    assert line["outcome"] == "retry", "queued again after a failure reads as a retry"
    assert line["reason"] == "rate_limited"
    assert line["duration_ms"] == 250.3
    assert line["to"] == "+14*******23"
    assert "+14155550123" not in json.dumps(line)


def test_failed_attempts_are_warnings(json_logs: pytest.CaptureFixture[str]) -> None:
    log_attempt(
        incident_id=1,
        update_id=1,
        delivery_id=1,
        channel="email",
        status=DeliveryStatus.FELL_BACK,
        to="ada@example.org",
        attempts=1,
        reason=FailureReason.REJECTED,
        error="email: Does not contain a valid address. (HTTP 400)",
    )
    (line,) = lines(json_logs)
    assert line["level"] == "warning"
    assert line["outcome"] == "fell_back"
    assert line["to"] == "a***@example.org"


def test_a_provider_quoting_the_number_in_its_error_is_masked(
    json_logs: pytest.CaptureFixture[str], settings: Settings, sandbox: Sandbox
) -> None:
    """Twilio answers "The 'To' number +1… is not a valid phone number"; the adapter logs it."""
    sandbox.inject_recipient_failure("+14155550199")
    registry = ChannelRegistry(settings)
    try:
        (outcome,) = registry.get("sms").send([Message(key=9, to="+14155550199", text="Down")])
    finally:
        registry.close()
    assert outcome.error is not None and "+14155550199" in outcome.error  # the raw answer has it
    output = [line for line in lines(json_logs) if line["logger"] == "channels.base"]
    assert output, "the adapter logged the failure"
    assert all("+14155550199" not in str(line) for line in output)
    assert "+14*******99" in str(output[0]["message"])


def test_exceptions_are_redacted_too() -> None:
    try:
        raise ValueError("could not send to grace@example.org")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, None)
        record.exc_info = sys.exc_info()
    RedactingFilter().filter(record)
    assert record.exc_text is not None
    assert "grace@example.org" not in record.exc_text
    assert "g***@example.org" in record.exc_text


def test_a_terminal_gets_readable_lines_not_json(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    level = root.level
    setup_logging("info", json_lines=True)
    setup_logging("info", json_lines=False)
    try:
        logging.getLogger("outage.test").info("hello ada@example.org")
        ours = [h for h in root.handlers if h.get_name() == "outage"]
        assert len(ours) == 1, "calling setup_logging again replaces, never duplicates"
        assert type(ours[0]).__name__ == "RichHandler"
    finally:
        for handler in list(root.handlers):
            if handler.get_name() == "outage":
                root.removeHandler(handler)
        root.setLevel(level)


X_CREDENTIALS = {
    "X_API_KEY": "xkeyLive4f9Q2mZ81",
    "X_API_SECRET": "xsecretLive/+Zt7Qp0w9LmN3vB6",
    "X_ACCESS_TOKEN": "1234567890-xtokenLiveAb7Cd8Ef9",
    "X_ACCESS_TOKEN_SECRET": "xtsecretLive0Hj2Kl4Mn6",
}


def test_third_party_debug_lines_carry_no_credential(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What `outage --log-level debug` printed: oauthlib and requests-oauthlib, signing a post
    to X, log the consumer key and access token in four shapes (a tuple, a query string, a
    percent-encoded base string, a header). Their real code, our handler."""
    for name, value in X_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    settings = get_settings()  # the process's settings: their secrets are masked from here on
    root = logging.getLogger()
    level = root.level
    setup_logging("debug", json_lines=True)
    try:
        assert settings.x_api_key and settings.x_api_secret
        assert settings.x_access_token and settings.x_access_token_secret
        auth = OAuth1(
            settings.x_api_key.get_secret_value(),
            settings.x_api_secret.get_secret_value(),
            settings.x_access_token.get_secret_value(),
            settings.x_access_token_secret.get_secret_value(),
        )
        requests.Request(
            "POST", "https://api.twitter.com/2/tweets", json={"text": "API down"}, auth=auth
        ).prepare()
    finally:
        for handler in list(root.handlers):
            if handler.get_name() == "outage":
                root.removeHandler(handler)
        root.setLevel(level)
    logged = capsys.readouterr().err
    assert "oauthlib.oauth1.rfc5849" in logged, "the library logged its debug lines"
    for name, value in X_CREDENTIALS.items():
        for shape in (value, quote(value, safe=""), quote(quote(value, safe=""), safe="")):
            assert shape not in logged, f"{name} leaked as {shape}"


def test_credentials_in_the_shapes_libraries_log_them_are_redacted() -> None:
    """Secrets the settings do not know of, as libraries print them."""
    samples = {
        "Collected params: [('oauth_consumer_key', 'ck-111111'), ('oauth_token', 'tk-222222')]": (
            "ck-111111",
            "tk-222222",
        ),
        "base string: POST&u&oauth_consumer_key%3Dck-333333%26oauth_nonce%3D1": ("ck-333333",),
        "'Authorization': 'OAuth oauth_consumer_key=\"ck-444444\", oauth_token=\"tk-555555\"'": (
            "ck-444444",
            "tk-555555",
        ),
        "<Client client_key=ck-666666, resource_owner_key=tk-777777, nonce=None>": (
            "ck-666666",
            "tk-777777",
        ),
        '{"api_key": "ak-888888", "password": "pw-999999"}': ("ak-888888", "pw-999999"),
    }
    for text, secrets in samples.items():
        cleaned = redact(text)
        for secret in secrets:
            assert secret not in cleaned, (text, cleaned)
