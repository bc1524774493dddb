"""Logs as an operator and an auditor read them: one structured line per delivery attempt with
every id, and never a full phone number, email address or secret, even when a provider quotes
one in its error."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import pytest

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
from dispatcher.settings import Settings


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
