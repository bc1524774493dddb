"""Double opt-in end to end: a public sign-up, the confirmation on each channel, and only then
incident updates. Through the real adapters and the sandbox, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from fastapi.testclient import TestClient

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents import lifecycle
from dispatcher.links import LinkPurpose
from dispatcher.models import IncidentIn, Severity, SuppressionReason
from dispatcher.render.textfit import sms_segments
from dispatcher.sandbox.server import Sandbox
from dispatcher.subscribers import confirmations, preferences
from dispatcher.subscribers.suppressions import suppress
from tests.conftest import settle

SIGNUP = {
    "name": "Ada",
    "email": "ada@example.org",
    "phone": "+1 415 555 0100",
    "channels": ["email", "sms"],
}


def pipeline_of(client: TestClient) -> Pipeline:
    pipeline: Pipeline = client.app.state.pipeline  # type: ignore[attr-defined]
    return pipeline


def link_in(text: str, kind: str) -> str:
    found = re.search(rf"https?://\S+/{kind}/[\w.-]+", text)
    assert found, f"no /{kind}/ link in {text!r}"
    return urlsplit(found.group(0)).path


def announce(pipeline: Pipeline) -> None:
    posted = lifecycle.open_incident(
        pipeline.store, IncidentIn(title="API errors", severity=Severity.MAJOR, components=["api"])
    )
    pipeline.announce(posted.update_id)
    settle(pipeline, posted.incident_id)


def test_sign_up_then_confirm_by_link_then_updates_arrive(
    client: TestClient, sandbox: Sandbox
) -> None:
    pipeline = pipeline_of(client)
    assert client.post("/api/subscribers", json=SIGNUP).status_code == 202
    (email,) = sandbox.messages("email")
    (sms,) = sandbox.messages("sms")
    assert email["to"] == "ada@example.org" and sms["to"] == "+14155550100"
    assert email["subject"] == "Confirm your Example Cloud status updates"
    assert "/preferences/" in email["body"], "the preference link is in every email"
    assert "/preferences/" in sms["body"], "and in the confirmation SMS"
    assert "reply YES" in sms["body"]
    assert sms_segments(sms["body"]) <= 3

    sandbox.clear()
    announce(pipeline)
    assert sandbox.messages("email") == [], "nothing but the confirmation before confirming"

    confirm = link_in(email["body"], "confirm")
    page = client.get(confirm)
    assert page.status_code == 200 and "Yes, confirm my email address" in page.text
    assert preferences.get(pipeline.store, 1).email_confirmed_at is None, "GET confirms nothing"
    done = client.post(confirm)
    assert done.status_code == 200 and "Your email address is confirmed" in done.text
    assert client.post(confirm).status_code == 200, "a second click is harmless"

    announce(pipeline)
    assert [m["to"] for m in sandbox.messages("email")] == ["ada@example.org"]
    assert sandbox.messages("sms") == [], "the phone is still waiting for its confirmation"


def test_a_confirmation_link_does_not_confirm_a_changed_address(
    client: TestClient, sandbox: Sandbox
) -> None:
    pipeline = pipeline_of(client)
    client.post("/api/subscribers", json={**SIGNUP, "phone": None, "channels": ["email"]})
    old_link = link_in(sandbox.messages("email")[0]["body"], "confirm")
    preferences.update_preferences(
        pipeline.store, pipeline.registry, 1, {"email": "ada@new.example.org"}, actor="subscriber"
    )
    response = client.post(old_link)
    assert response.status_code == 410
    assert "has since been changed" in response.text
    assert preferences.get(pipeline.store, 1).email_confirmed_at is None


def test_a_confirmation_link_for_a_deleted_subscriber_is_410(client: TestClient) -> None:
    pipeline = pipeline_of(client)
    client.post("/api/subscribers", json=SIGNUP)
    ada = preferences.get(pipeline.store, 1)
    token = pipeline.links.token(LinkPurpose.CONFIRM, ada, "email:0123456789abcdef")
    preferences.erase(pipeline.store, 1, actor="operator")
    assert client.get(f"/confirm/{token}").status_code == 410
    assert client.get("/confirm/not-a-token").status_code == 403


def test_suppressed_addresses_get_no_confirmation(client: TestClient, sandbox: Sandbox) -> None:
    pipeline = pipeline_of(client)
    with pipeline.store.session() as session:
        suppress(session, "email", "ada@example.org", SuppressionReason.SPAM_REPORT, actor="test")
    assert client.post("/api/subscribers", json=SIGNUP).status_code == 202
    assert sandbox.messages("email") == []
    assert [m["to"] for m in sandbox.messages("sms")] == ["+14155550100"]


def test_reply_yes_confirms_the_number(client: TestClient, sandbox: Sandbox) -> None:
    pipeline = pipeline_of(client)
    client.post("/api/subscribers", json=SIGNUP)
    assert confirmations.confirm_reply(pipeline.store, "+14155550100") == [1]
    assert confirmations.confirm_reply(pipeline.store, "+14155550100") == [], "only once"
    assert preferences.get(pipeline.store, 1).phone_confirmed_at is not None


def test_request_reports_a_provider_failure_without_raising(
    client: TestClient, sandbox: Sandbox
) -> None:
    pipeline = pipeline_of(client)
    sandbox.inject_recipient_failure("+14155550100")
    client.post("/api/subscribers", json=SIGNUP)
    results = confirmations.request(pipeline, 1)
    assert {(r.field, r.sent) for r in results} == {("email", True), ("phone", False)}
