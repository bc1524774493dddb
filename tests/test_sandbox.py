"""The provider sandbox over plain HTTP: provider routes, recording, control API, faults, bad input.

These tests speak raw HTTP (httpx) so they pin the wire shapes the SDKs depend on; the SDKs
themselves are exercised in test_channels.py.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from dispatcher.sandbox.server import Sandbox
from dispatcher.sandbox.twilio import sms_segments
from dispatcher.sandbox.x import weighted_length

TWILIO_PATH = "/2010-04-01/Accounts/AC123/Messages.json"
BASIC = "Basic " + base64.b64encode(b"AC123:token").decode()


@pytest.fixture(scope="module")
def running_sandbox() -> Iterator[Sandbox]:
    with Sandbox() as running:
        yield running


@pytest.fixture
def provider_sandbox(running_sandbox: Sandbox) -> Sandbox:
    """One server for the module, reset to a blank state for every test."""
    running_sandbox.clear()
    running_sandbox.clear_faults()
    running_sandbox.set_latency(0)
    running_sandbox.timeout_hold_s = 0.05
    return running_sandbox


@pytest.fixture
def http(provider_sandbox: Sandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=provider_sandbox.url, timeout=5) as client:
        yield client


def twilio(http: httpx.Client, to: str = "+14155550100", **fields: str) -> httpx.Response:
    form = {"To": to, "From": "+15005550006", "Body": "Service degraded", **fields}
    return http.post(TWILIO_PATH, data=form, headers={"Authorization": BASIC})


def mail(**overrides: object) -> dict[str, object]:
    document: dict[str, object] = {
        "personalizations": [
            {"to": [{"email": "a@example.com"}], "custom_args": {"delivery_id": "1"}},
            {"to": [{"email": "b@example.com"}], "headers": {"List-Unsubscribe": "<u>"}},
        ],
        "from": {"email": "status@example.com"},
        "subject": "Outage",
        "content": [
            {"type": "text/plain", "value": "down"},
            {"type": "text/html", "value": "<p>down</p>"},
        ],
    }
    document.update(overrides)
    return document


def sendgrid(http: httpx.Client, document: object, key: str = "SG.key") -> httpx.Response:
    return http.post("/v3/mail/send", json=document, headers={"Authorization": f"Bearer {key}"})


def tweet(http: httpx.Client, text: str) -> httpx.Response:
    return http.post("/2/tweets", json={"text": text}, headers={"Authorization": "OAuth x"})


# -- Twilio ---------------------------------------------------------------------------------


def test_twilio_accepts_and_records(http: httpx.Client, provider_sandbox: Sandbox) -> None:
    response = twilio(http, StatusCallback="https://cb.example.com/sms")
    assert response.status_code == 201
    body = response.json()
    assert re.fullmatch(r"SM[0-9a-f]{32}", body["sid"])
    assert body["status"] == "queued"
    assert (body["to"], body["from"], body["account_sid"]) == (
        "+14155550100",
        "+15005550006",
        "AC123",
    )
    assert body["num_segments"] == "1"
    assert body["uri"] == f"/2010-04-01/Accounts/AC123/Messages/{body['sid']}.json"
    [record] = provider_sandbox.messages("sms")
    assert record["to"] == "+14155550100"
    assert record["body"] == "Service degraded"
    assert record["provider_id"] == body["sid"]
    assert record["headers"]["Authorization"] == "[redacted]"
    assert record["meta"]["status_callback"] == "https://cb.example.com/sms"
    assert record["at"].endswith("+00:00")


def test_twilio_requires_basic_auth(http: httpx.Client) -> None:
    response = http.post(TWILIO_PATH, data={"To": "+14155550100", "From": "+1", "Body": "x"})
    assert response.status_code == 401
    assert response.json()["code"] == 20003


def test_twilio_rejects_an_invalid_number(http: httpx.Client) -> None:
    response = twilio(http, to="0415 555")
    assert response.status_code == 400
    assert response.json() == {
        "code": 21211,
        "message": "The 'To' number 0415 555 is not a valid phone number.",
        "more_info": "https://www.twilio.com/docs/errors/21211",
        "status": 400,
    }


@pytest.mark.parametrize(
    ("fields", "code"),
    [({"Body": ""}, 21602), ({"From": ""}, 21603), ({"To": ""}, 21604)],
)
def test_twilio_requires_fields(http: httpx.Client, fields: dict[str, str], code: int) -> None:
    form = {"To": "+14155550100", "From": "+15005550006", "Body": "x", **fields}
    response = http.post(TWILIO_PATH, data=form, headers={"Authorization": BASIC})
    assert response.status_code == 400
    assert response.json()["code"] == code


def test_twilio_accepts_a_messaging_service(http: httpx.Client) -> None:
    response = twilio(http, From="", MessagingServiceSid="MG123")
    assert response.status_code == 201
    assert response.json()["messaging_service_sid"] == "MG123"


def test_twilio_failing_recipient(http: httpx.Client, provider_sandbox: Sandbox) -> None:
    provider_sandbox.inject_recipient_failure("+14155550123")
    response = twilio(http, to="+14155550123")
    assert response.status_code == 400
    assert response.json()["code"] == 21211
    assert provider_sandbox.messages() == []


def test_sms_segments() -> None:
    assert sms_segments("x" * 160) == 1
    assert sms_segments("x" * 161) == 2
    assert sms_segments("{" * 80) == 1  # extension characters count two septets
    assert sms_segments("\u00e9" * 160) == 1  # é is in the GSM basic set
    assert sms_segments("\u0107" * 71) == 2  # ć is not: UCS-2, 70 per single part


# -- SendGrid -------------------------------------------------------------------------------


def test_sendgrid_records_one_message_per_recipient(
    http: httpx.Client, provider_sandbox: Sandbox
) -> None:
    response = sendgrid(http, mail())
    assert response.status_code == 202
    assert response.content == b""
    message_id = response.headers["X-Message-Id"]
    records = provider_sandbox.messages("email")
    assert [r["to"] for r in records] == ["a@example.com", "b@example.com"]
    assert {r["provider_id"] for r in records} == {message_id}
    assert records[0]["subject"] == "Outage"
    assert (records[0]["body"], records[0]["html"]) == ("down", "<p>down</p>")
    assert records[0]["meta"]["custom_args"] == {"delivery_id": "1"}
    assert records[1]["meta"]["mail_headers"] == {"List-Unsubscribe": "<u>"}


def test_sendgrid_requires_a_bearer_key(http: httpx.Client) -> None:
    response = http.post("/v3/mail/send", json=mail())
    assert response.status_code == 401
    [error] = response.json()["errors"]
    assert set(error) == {"message", "field", "help"}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"from": None}, "from"),
        ({"from": {"email": "not-an-address"}}, "from.email"),
        ({"personalizations": []}, "personalizations"),
        ({"personalizations": [{"to": []}]}, "personalizations.0.to"),
        ({"personalizations": [{"to": [{"email": "x"}]}]}, "personalizations.0.to.0.email"),
        ({"subject": None}, "subject"),
        ({"content": []}, "content"),
        (
            {
                "content": [
                    {"type": "text/html", "value": "h"},
                    {"type": "text/plain", "value": "t"},
                ]
            },
            "content",
        ),
        (
            {
                "personalizations": [
                    {"to": [{"email": "a@example.com"}, {"email": "A@example.com"}]}
                ]
            },
            "personalizations.0.to.1.email",
        ),
        (
            {"personalizations": [{"to": [{"email": f"u{i}@example.com"}]} for i in range(1001)]},
            "personalizations",
        ),
    ],
)
def test_sendgrid_names_the_invalid_field(
    http: httpx.Client, provider_sandbox: Sandbox, overrides: dict[str, object], field: str
) -> None:
    response = sendgrid(http, mail(**overrides))
    assert response.status_code == 400
    assert field in [error["field"] for error in response.json()["errors"]]
    assert provider_sandbox.messages() == []


def test_sendgrid_subject_per_personalization_is_enough(http: httpx.Client) -> None:
    document = mail(
        subject=None, personalizations=[{"to": [{"email": "a@example.com"}], "subject": "S"}]
    )
    assert sendgrid(http, document).status_code == 202


def test_sendgrid_rejects_bad_json(http: httpx.Client) -> None:
    response = http.post("/v3/mail/send", content=b"{nope", headers={"Authorization": "Bearer k"})
    assert response.status_code == 400
    assert response.json()["errors"][0]["message"] == "Bad Request"


def test_sendgrid_one_failing_recipient_fails_the_request(
    http: httpx.Client, provider_sandbox: Sandbox
) -> None:
    provider_sandbox.inject_recipient_failure("B@example.com")
    response = sendgrid(http, mail())
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "personalizations.1.to.0.email"
    assert provider_sandbox.messages() == []


# -- X --------------------------------------------------------------------------------------


def test_x_posts_and_refuses_duplicates(http: httpx.Client, provider_sandbox: Sandbox) -> None:
    first = tweet(http, "API degraded")
    assert first.status_code == 201
    data = first.json()["data"]
    assert data["id"].isdigit()
    assert data["text"] == "API degraded"
    again = tweet(http, "API degraded")
    assert again.status_code == 403
    assert again.json() == {
        "detail": "You are not allowed to create a Tweet with duplicate content.",
        "type": "about:blank",
        "title": "Forbidden",
        "status": 403,
    }
    [record] = provider_sandbox.messages("social")
    assert (record["body"], record["provider_id"], record["to"]) == (
        "API degraded",
        data["id"],
        None,
    )


def test_x_requires_authorization(http: httpx.Client) -> None:
    assert http.post("/2/tweets", json={"text": "x"}).status_code == 401


@pytest.mark.parametrize("document", [{"text": "x" * 281}, {"text": ""}, {}, ["text"]])
def test_x_rejects_invalid_posts(http: httpx.Client, document: object) -> None:
    response = http.post("/2/tweets", json=document, headers={"Authorization": "OAuth x"})
    assert response.status_code == 400
    assert response.json()["title"] == "Invalid Request"


def test_x_weighted_length() -> None:
    assert weighted_length("x" * 280) == 280
    assert weighted_length("see https://status.example.com/incidents/123456789") == 4 + 23
    assert weighted_length("\u969c\u5bb3") == 4  # CJK counts two


# -- webhook receiver -----------------------------------------------------------------------


def test_webhook_records_raw_body_and_headers(
    http: httpx.Client, provider_sandbox: Sandbox
) -> None:
    body = b'{"state":"investigating", "id": 7}'
    response = http.post("/hooks/acme?x=1", content=body, headers={"X-Outage-Delivery": "7"})
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    [record] = provider_sandbox.messages("webhook")
    assert record["to"] == "/hooks/acme?x=1"
    assert record["body"] == body.decode()
    assert record["headers"]["X-Outage-Delivery"] == "7"
    assert response.headers["X-Request-Id"] == record["provider_id"]


def test_webhook_rejects_non_json(http: httpx.Client) -> None:
    response = http.post("/hooks/acme", content=b"not json")
    assert response.status_code == 400
    assert response.json()["ok"] is False


def test_webhook_gone_for_a_failing_url(http: httpx.Client, provider_sandbox: Sandbox) -> None:
    provider_sandbox.inject_recipient_failure(f"{provider_sandbox.url}/hooks/old")
    assert http.post("/hooks/old", json={}).status_code == 410
    assert http.post("/hooks/new", json={}).status_code == 200


# -- faults ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["429", "500", "503"])
def test_injected_failures_then_recovery(
    http: httpx.Client, provider_sandbox: Sandbox, kind: str
) -> None:
    provider_sandbox.inject_failures(2, kind)  # type: ignore[arg-type]
    assert [twilio(http).status_code for _ in range(3)] == [int(kind), int(kind), 201]
    assert provider_sandbox.stats()["failures_injected"][kind] == 2


def test_rate_limit_shapes(http: httpx.Client, provider_sandbox: Sandbox) -> None:
    provider_sandbox.inject_failures(1, "429", channel="sms", retry_after_s=2)
    provider_sandbox.inject_failures(1, "429", channel="social", retry_after_s=30)
    response = twilio(http)
    assert response.headers["Retry-After"] == "2"
    assert response.json()["code"] == 20429
    before = time.time()
    limited = tweet(http, "hello")
    assert limited.status_code == 429
    assert before + 29 <= int(limited.headers["x-rate-limit-reset"]) <= time.time() + 31


def test_failures_scoped_to_a_channel(http: httpx.Client, provider_sandbox: Sandbox) -> None:
    provider_sandbox.inject_failures(1, "503", channel="email")
    assert twilio(http).status_code == 201
    assert sendgrid(http, mail()).status_code == 503
    assert sendgrid(http, mail()).status_code == 202


def test_timeout_holds_then_answers_504(http: httpx.Client, provider_sandbox: Sandbox) -> None:
    provider_sandbox.inject_failures(1, "timeout", channel="webhook")
    response = http.post("/hooks/slow", json={})
    assert response.status_code == 504
    provider_sandbox.timeout_hold_s = 2
    provider_sandbox.inject_failures(1, "timeout")
    with pytest.raises(httpx.ReadTimeout):
        http.post("/hooks/slow", json={}, timeout=0.1)
    assert http.post("/hooks/slow", json={}).status_code == 200  # a new connection is fine


def test_python_api_validates(provider_sandbox: Sandbox) -> None:
    with pytest.raises(ValueError, match="count"):
        provider_sandbox.inject_failures(0, "429")
    with pytest.raises(ValueError, match="kind"):
        provider_sandbox.inject_failures(1, "418")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="channel"):
        provider_sandbox.inject_failures(1, "429", channel="fax")
    with pytest.raises(ValueError, match="latency"):
        provider_sandbox.set_latency(-1)


# -- control API ----------------------------------------------------------------------------


def test_control_api(http: httpx.Client, provider_sandbox: Sandbox) -> None:
    assert http.get("/sandbox/health").json()["ok"] is True
    twilio(http)
    sendgrid(http, mail())
    assert len(http.get("/sandbox/messages").json()) == 3
    assert [m["channel"] for m in http.get("/sandbox/messages?channel=sms").json()] == ["sms"]
    stats = http.get("/sandbox/stats").json()
    assert stats["requests"] == {"sms": 1, "email": 1, "social": 0, "webhook": 0}
    assert stats["recorded"]["email"] == 2
    assert http.delete("/sandbox/messages").json() == {"ok": True}
    assert http.get("/sandbox/messages").json() == []

    assert http.post("/sandbox/faults", json={"recipient": "+14155550123"}).status_code == 200
    fault = {"count": 1, "kind": "503", "channel": "sms", "retry_after_s": 1}
    assert http.post("/sandbox/faults", json=fault).status_code == 200
    assert http.get("/sandbox/stats").json()["pending_faults"] == 1
    assert twilio(http).status_code == 503
    assert twilio(http, to="+14155550123").status_code == 400
    assert http.delete("/sandbox/faults").status_code == 200
    assert twilio(http, to="+14155550123").status_code == 201


def test_latency(http: httpx.Client, provider_sandbox: Sandbox) -> None:
    assert http.post("/sandbox/latency", json={"latency_ms": 50}).status_code == 200
    assert provider_sandbox.stats()["latency_ms"] == 50
    started = time.monotonic()
    twilio(http)
    assert time.monotonic() - started >= 0.05


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/nowhere", None, 404),
        ("GET", "/v3/mail/send", None, 405),
        ("PUT", "/sandbox/stats", None, 405),
        ("GET", "/sandbox/nope", None, 404),
        ("POST", "/sandbox/faults", b"{bad", 400),
        ("POST", "/sandbox/faults", b"[]", 400),
        ("POST", "/sandbox/faults", b'{"count": 1, "kind": "418"}', 400),
        ("POST", "/sandbox/faults", b'{"count": 0, "kind": "429"}', 400),
        ("POST", "/sandbox/faults", b'{"kind": "429"}', 400),
        ("POST", "/sandbox/faults", b'{"count": 1, "kind": "429", "channel": "fax"}', 400),
        ("POST", "/sandbox/latency", b'{"latency_ms": "fast"}', 400),
        ("GET", "/sandbox/messages?channel=fax", None, 400),
    ],
)
def test_bad_requests_get_json_errors(
    http: httpx.Client, method: str, path: str, body: bytes | None, status: int
) -> None:
    response = http.request(method, path, content=body)
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert "error" in response.json() or "errors" in response.json()


def test_malformed_http_gets_a_json_error(provider_sandbox: Sandbox) -> None:
    port = int(provider_sandbox.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(b"NONSENSE\r\n\r\n")
        reply = b""
        while chunk := connection.recv(4096):  # the sandbox closes after a malformed request
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert "error" in json.loads(body)


def test_keep_alive_survives_errors(http: httpx.Client) -> None:
    """An error answered before the body was needed must not desynchronise the connection."""
    assert http.post("/nowhere", content=b"x" * 10_000).status_code == 404
    assert twilio(http).status_code == 201


def test_lifecycle() -> None:
    sandbox = Sandbox()
    with pytest.raises(RuntimeError):
        _ = sandbox.url
    url = sandbox.start()
    with pytest.raises(RuntimeError, match="already running"):
        sandbox.start()
    assert httpx.get(f"{url}/sandbox/health").status_code == 200
    sandbox.stop()
    sandbox.stop()  # idempotent
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/sandbox/health")


def test_stop_wakes_held_requests() -> None:
    """A request held by a timeout fault must not keep stop() (or a test run) waiting."""
    sandbox = Sandbox(timeout_hold_s=60)
    url = sandbox.start()
    sandbox.inject_failures(1, "timeout")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/hooks/x", json={}, timeout=0.1)
    started = time.monotonic()
    sandbox.stop()
    assert time.monotonic() - started < 5
