"""Inbound SMS keywords through Twilio's webhook, signed the way Twilio signs (its own
RequestValidator computes the signature here): STOP opts out, START/YES opts back in."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from twilio.request_validator import RequestValidator

from channels.sms_events import Keyword, keyword
from channels.transport import SANDBOX_CREDENTIAL
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.models import SubscriberIn, SuppressionReason
from dispatcher.subscribers import preferences, records

URL = "/webhooks/twilio/inbound"
NUMBER = "+14155550100"


def pipeline_of(client: TestClient) -> Pipeline:
    pipeline: Pipeline = client.app.state.pipeline  # type: ignore[attr-defined]
    return pipeline


def text(client: TestClient, body: str, *, token: str = SANDBOX_CREDENTIAL) -> tuple[int, str]:
    """Post an inbound message as Twilio would, signed over our public URL."""
    params = {"MessageSid": "SM" + "1" * 32, "From": NUMBER, "To": "+15005550006", "Body": body}
    public = pipeline_of(client).settings.public_url.rstrip("/") + URL
    signature = RequestValidator(token).compute_signature(public, params)
    response = client.post(URL, data=params, headers={"X-Twilio-Signature": signature})
    return response.status_code, response.text


def opt_outs(client: TestClient, subscriber_id: int) -> dict[str, SuppressionReason]:
    pipeline = pipeline_of(client)
    with pipeline.store.session() as session:
        return records.opt_outs(session, preferences.get(pipeline.store, subscriber_id))


def add(client: TestClient, *, confirmed: bool = True) -> int:
    pipeline = pipeline_of(client)
    data = SubscriberIn(name="Ada", phone=NUMBER, channels=["sms"], confirmed=confirmed)
    return records.add(pipeline.store, pipeline.registry, data).id


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("STOP", Keyword.OPT_OUT),
        (" stop ", Keyword.OPT_OUT),
        ("Stop all", Keyword.OPT_OUT),
        ("unsubscribe", Keyword.OPT_OUT),
        ("Cancel.", Keyword.OPT_OUT),
        ("end", Keyword.OPT_OUT),
        ("QUIT!", Keyword.OPT_OUT),
        ("START", Keyword.OPT_IN),
        ("unstop", Keyword.OPT_IN),
        ("Yes", Keyword.OPT_IN),
        ("stop the alerts please", Keyword.OTHER),
        ("thanks", Keyword.OTHER),
        ("", Keyword.OTHER),
    ],
)
def test_keywords_match_the_whole_message(body: str, expected: Keyword) -> None:
    assert keyword(body) is expected


def test_stop_opts_the_number_out_and_start_back_in(client: TestClient) -> None:
    ada = add(client)
    status, answer = text(client, "STOP")
    assert status == 200 and "<Response" in answer and "<Message>" not in answer
    assert opt_outs(client, ada) == {"phone": SuppressionReason.STOP}
    assert text(client, "STOP")[0] == 200, "twice is harmless"
    assert text(client, "start")[0] == 200
    assert opt_outs(client, ada) == {}


def test_yes_confirms_a_waiting_subscription_and_says_so(client: TestClient) -> None:
    ada = add(client, confirmed=False)
    status, answer = text(client, "YES")
    assert status == 200 and "confirmed for outage alerts" in answer
    assert preferences.get(pipeline_of(client).store, ada).phone_confirmed_at is not None


def test_other_texts_change_nothing(client: TestClient) -> None:
    ada = add(client, confirmed=False)
    assert text(client, "thanks!")[0] == 200
    assert opt_outs(client, ada) == {}
    assert preferences.get(pipeline_of(client).store, ada).phone_confirmed_at is None


def test_a_wrong_or_missing_signature_is_403_and_changes_nothing(client: TestClient) -> None:
    ada = add(client)
    assert text(client, "STOP", token="not-the-auth-token")[0] == 403
    unsigned = client.post(URL, data={"From": NUMBER, "Body": "STOP"})
    assert unsigned.status_code == 403
    assert opt_outs(client, ada) == {}


def test_live_mode_without_an_auth_token_refuses(client: TestClient) -> None:
    pipeline = pipeline_of(client)
    live = pipeline.settings.model_copy(update={"providers": "live", "twilio_auth_token": None})
    original = pipeline.settings
    pipeline.settings = live
    try:
        status, answer = text(client, "STOP")
    finally:
        pipeline.settings = original
    assert status == 401 and "TWILIO_AUTH_TOKEN" in answer
