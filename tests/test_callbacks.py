"""Provider callbacks over HTTP, through the real signature checks: Twilio's RequestValidator and
SendGrid's ECDSA EventWebhook helper. The sandbox signs them as the providers do; a bad or
missing signature is 403 and stores nothing."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import time_machine
import uvicorn
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from channels import email_events, sms_events
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents import reports
from dispatcher.models import DeliveryStatus
from dispatcher.sandbox import receipts
from dispatcher.sandbox.receipts import SignedRequest
from dispatcher.sandbox.server import Sandbox
from dispatcher.settings import Settings
from dispatcher.store import Receipt, Suppression
from dispatcher.web.app import create_app
from tests.conftest import tell_one_subscriber

EVENTS_PATH = "/callbacks/sendgrid/events"


def post(client: TestClient, request: SignedRequest) -> int:
    return client.post(request.path, content=request.body, headers=request.headers).status_code


def status_of(pipeline: Pipeline, incident_id: int, channel: str) -> DeliveryStatus:
    [line] = [x for x in reports.deliveries(pipeline.store, incident_id) if x.channel == channel]
    return line.status


def wait_for(pipeline: Pipeline, incident_id: int, channel: str, wanted: DeliveryStatus) -> None:
    """The app's own runner sends what a callback queued: poll, with a bound."""
    deadline = time.monotonic() + 10
    while status_of(pipeline, incident_id, channel) != wanted:
        assert time.monotonic() < deadline, f"{channel} never became {wanted}"
        time.sleep(0.05)


def stored_receipts(pipeline: Pipeline) -> int:
    with pipeline.store.session() as session:
        return session.scalar(select(func.count()).select_from(Receipt)) or 0


def test_a_twilio_status_callback_marks_the_sms_delivered(
    client: TestClient, sandbox: Sandbox
) -> None:
    pipeline: Pipeline = client.app.state.pipeline  # type: ignore[attr-defined]
    incident_id = tell_one_subscriber(pipeline, ["sms"])
    [sms] = sandbox.messages("sms")
    assert sms["meta"]["status_callback"].startswith(
        f"{pipeline.settings.public_url}/callbacks/twilio/status?delivery_id="
    )

    assert post(client, receipts.twilio_status(sandbox, "+14155550100", "sent")) == 204
    assert status_of(pipeline, incident_id, "sms") == DeliveryStatus.SENT  # still on its way
    assert post(client, receipts.twilio_status(sandbox, "+14155550100", "delivered")) == 204
    assert status_of(pipeline, incident_id, "sms") == DeliveryStatus.DELIVERED
    assert stored_receipts(pipeline) == 2


@pytest.mark.parametrize("tamper", ["status", "signature", "no signature", "url"])
def test_a_twilio_callback_that_does_not_verify_is_refused_and_changes_nothing(
    client: TestClient, sandbox: Sandbox, tamper: str
) -> None:
    pipeline: Pipeline = client.app.state.pipeline  # type: ignore[attr-defined]
    incident_id = tell_one_subscriber(pipeline, ["sms", "email"])
    signed = receipts.twilio_status(sandbox, "+14155550100", "undelivered")
    headers, body, path = dict(signed.headers), signed.body, signed.path
    if tamper == "status":
        body = body.replace(b"undelivered", b"delivered")
    elif tamper == "signature":
        headers["X-Twilio-Signature"] = base64.b64encode(b"x" * 20).decode()
    elif tamper == "no signature":
        del headers["X-Twilio-Signature"]
    else:
        path = path.replace("delivery_id=", "delivery_id=9")  # pointed at another delivery
    assert client.post(path, content=body, headers=headers).status_code == 403
    assert stored_receipts(pipeline) == 0
    assert status_of(pipeline, incident_id, "sms") == DeliveryStatus.SENT


def test_a_sendgrid_bounce_suppresses_the_address_and_sends_on_the_next_channel(
    client: TestClient, sandbox: Sandbox
) -> None:
    pipeline: Pipeline = client.app.state.pipeline  # type: ignore[attr-defined]
    incident_id = tell_one_subscriber(pipeline, ["email", "sms"])
    bounce = receipts.sendgrid_event(sandbox, EVENTS_PATH, "a@example.org", "bounce")

    assert post(client, bounce) == 204
    assert post(client, bounce) == 204, "SendGrid retries a POST: applied once"

    wait_for(pipeline, incident_id, "sms", DeliveryStatus.SENT)
    assert status_of(pipeline, incident_id, "email") == DeliveryStatus.FELL_BACK
    assert [m["to"] for m in sandbox.messages("sms")] == ["+14155550100"]
    assert stored_receipts(pipeline) == 1
    with pipeline.store.session() as session:
        [suppression] = session.scalars(select(Suppression)).all()
        assert (suppression.address, suppression.reason) == ("a@example.org", "bounce")


@pytest.mark.parametrize(
    ("event", "reason"), [("spamreport", "spam_report"), ("unsubscribe", "unsubscribed")]
)
def test_spam_reports_and_unsubscribes_suppress_the_address(
    client: TestClient, sandbox: Sandbox, event: str, reason: str
) -> None:
    pipeline: Pipeline = client.app.state.pipeline  # type: ignore[attr-defined]
    incident_id = tell_one_subscriber(pipeline, ["email", "sms"])
    signed = receipts.sendgrid_event(sandbox, EVENTS_PATH, "a@example.org", event)
    assert post(client, signed) == 204
    with pipeline.store.session() as session:
        assert session.scalars(select(Suppression.reason)).all() == [reason]
    assert status_of(pipeline, incident_id, "email") == DeliveryStatus.SENT, "it was delivered"


def test_sendgrid_events_that_do_not_verify_are_refused(
    client: TestClient, sandbox: Sandbox
) -> None:
    pipeline: Pipeline = client.app.state.pipeline  # type: ignore[attr-defined]
    tell_one_subscriber(pipeline, ["email"])
    signed = receipts.sendgrid_event(sandbox, EVENTS_PATH, "a@example.org", "delivered")
    forged = signed.body.replace(b"delivered", b"bounce")
    assert client.post(EVENTS_PATH, content=forged, headers=signed.headers).status_code == 403
    stale = dict(signed.headers, **{"X-Twilio-Email-Event-Webhook-Timestamp": "1"})
    assert client.post(EVENTS_PATH, content=signed.body, headers=stale).status_code == 403
    unsigned = {"Content-Type": "application/json"}
    assert client.post(EVENTS_PATH, content=signed.body, headers=unsigned).status_code == 403
    assert stored_receipts(pipeline) == 0


def test_a_signed_event_from_long_ago_is_refused_as_a_replay(
    client: TestClient, sandbox: Sandbox
) -> None:
    """A captured POST replayed a year later carries SendGrid's signature still: its timestamp
    is what gives it away (OUTAGE_SENDGRID_EVENT_TOLERANCE_S, five minutes by default)."""
    pipeline: Pipeline = client.app.state.pipeline  # type: ignore[attr-defined]
    incident_id = tell_one_subscriber(pipeline, ["email", "sms"])
    with time_machine.travel(datetime.now(UTC) - timedelta(days=365)):
        captured = receipts.sendgrid_event(sandbox, EVENTS_PATH, "a@example.org", "bounce")
    with time_machine.travel(datetime.now(UTC) - timedelta(minutes=1)):
        late = receipts.sendgrid_event(sandbox, EVENTS_PATH, "a@example.org", "delivered")
    response = client.post(captured.path, content=captured.body, headers=captured.headers)
    assert response.status_code == 403
    assert "timestamp" in response.json()["detail"]
    assert stored_receipts(pipeline) == 0
    assert status_of(pipeline, incident_id, "email") == DeliveryStatus.SENT
    assert post(client, late) == 204, "a minute late is within the window"
    assert status_of(pipeline, incident_id, "email") == DeliveryStatus.DELIVERED


def test_sendgrid_events_are_checked_against_the_configured_key(
    web_settings: Settings, sandbox: Sandbox
) -> None:
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    key = base64.b64encode(other.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
    settings = web_settings.model_copy(update={"sendgrid_event_public_key": key.decode()})
    with TestClient(create_app(settings)) as client:
        pipeline: Pipeline = client.app.state.pipeline  # type: ignore[attr-defined]
        tell_one_subscriber(pipeline, ["email"])
        signed = receipts.sendgrid_event(sandbox, EVENTS_PATH, "a@example.org", "bounce")
        assert post(client, signed) == 403, "signed by the sandbox, not by the configured key"
        assert stored_receipts(pipeline) == 0


def test_malformed_but_signed_events_are_refused_as_unprocessable(client: TestClient) -> None:
    signed = receipts.signed_events(EVENTS_PATH, json.dumps({"event": "x"}).encode())
    assert post(client, signed) == 422


def test_the_signature_checks_say_yes_only_to_what_the_provider_signed() -> None:
    """The checks themselves, without HTTP: garbage is a no, never an exception."""
    url = "https://status.example.com/callbacks/twilio/status?delivery_id=3"
    form = {"MessageStatus": "sent"}
    signature = RequestValidator("token").compute_signature(url, form)
    assert sms_events.verify("token", url, form, signature)
    assert not sms_events.verify("token", url, {"MessageStatus": "delivered"}, signature)
    assert not sms_events.verify("token", url.replace("=3", "=4"), form, signature)
    assert not sms_events.verify("another token", url, form, signature)
    assert not sms_events.verify("token", url, form, "")

    signing = ec.generate_private_key(ec.SECP256R1())
    public = signing.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    key, body, stamp = base64.b64encode(public).decode(), b'[{"event":"delivered"}]', "1700000000"
    sent = base64.b64encode(signing.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
    then = 1_700_000_000
    assert email_events.verify(key, body, sent, stamp, now=then)
    assert email_events.verify(key, body, sent, stamp, now=then + 300)
    assert not email_events.verify(key, body, sent, stamp, now=then + 301), "stale: a replay"
    assert not email_events.verify(key, body, sent, stamp, now=then - 301), "from the future"
    assert email_events.verify(key, body, sent, stamp, tolerance_s=3600, now=then + 301)
    assert not email_events.verify(
        key, body.replace(b"delivered", b"bounce"), sent, stamp, now=then
    )
    assert not email_events.verify(key, body, sent, "1700000001", now=then)
    assert not email_events.verify(key, body, sent, "soon", now=then)
    assert not email_events.verify(key, b"\xff", sent, stamp, now=then)
    assert not email_events.verify("not a key", body, sent, stamp, now=then)
    assert not email_events.verify(key, body, "?!", stamp, now=then)
    assert not email_events.verify(key, body, "", stamp, now=then)


# -- end to end: the sandbox posts to a real server --------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def served(web_settings: Settings) -> Iterator[tuple[str, Pipeline]]:
    """The app on a real port (as `outage serve`), its public URL the one Twilio is given."""
    port = free_port()
    settings = web_settings.model_copy(update={"public_url": f"http://127.0.0.1:{port}"})
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    yield settings.public_url, app.state.pipeline
    server.should_exit = True
    thread.join(timeout=10)


def test_the_sandbox_posts_receipts_that_the_served_app_verifies(
    served: tuple[str, Pipeline], sandbox: Sandbox
) -> None:
    base_url, pipeline = served
    incident_id = tell_one_subscriber(pipeline, ["sms", "email"])
    answer = httpx.post(
        f"{sandbox.url}/sandbox/receipts",
        json={"channel": "sms", "to": "+14155550100", "status": "undelivered", "error_code": 30003},
    )
    assert answer.json() == {"ok": True, "receiver_status": 204}
    wait_for(pipeline, incident_id, "email", DeliveryStatus.SENT)
    [line] = [x for x in reports.deliveries(pipeline.store, incident_id) if x.channel == "sms"]
    assert line.status == DeliveryStatus.FELL_BACK
    assert line.last_error == "twilio reported it undelivered (error 30003)"

    answer = httpx.post(
        f"{sandbox.url}/sandbox/receipts",
        json={
            "channel": "email",
            "to": "a@example.org",
            "status": "delivered",
            "url": f"{base_url}{EVENTS_PATH}",
        },
    )
    assert answer.json()["receiver_status"] == 204
    assert status_of(pipeline, incident_id, "email") == DeliveryStatus.DELIVERED


@pytest.mark.parametrize(
    ("document", "error"),
    [
        ({"channel": "sms"}, "expected"),
        ({"channel": "email", "to": "a@example.org", "status": "bounce"}, "url"),
        ({"channel": "sms", "to": "+14155550199", "status": "delivered"}, "no sms message"),
    ],
)
def test_the_sandbox_refuses_receipts_it_cannot_send(
    sandbox: Sandbox, document: dict[str, str], error: str
) -> None:
    answer = httpx.post(f"{sandbox.url}/sandbox/receipts", json=document)
    assert answer.status_code == 400 and error in answer.json()["error"]
