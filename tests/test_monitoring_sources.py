"""Monitoring sources as they really send, end to end: each product's own bodies (fixtures written
from its source, named at the top of each) over HTTP, and what the sandbox then received.

Grafana's and Uptime Kuma's "Test" buttons and PagerDuty's ping are answered 2xx, recorded,
and reach nobody; Uptime Kuma arrives as JSON, form-data or GET and names components by its
tags; PagerDuty signs its bodies.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents import reports
from dispatcher.models import SubscriberIn
from dispatcher.ops import doctor
from dispatcher.sandbox.server import Sandbox
from dispatcher.settings import Settings
from dispatcher.store import Alert
from dispatcher.subscribers import records
from tests.webhooks_support import (
    AUTH,
    TEAM,
    bodies,
    emails,
    fixture,
    post,
    settings_marker,
    settle,
    webhook_app,
)

PD_SECRET = "pd-subscription-secret"
MAPPED = {"pagerduty_services": {"PF9KMXH": "checkout"}}
NOW = datetime(2025, 3, 4, 10, 2, 11, tzinfo=UTC)
NOTHING = {"incidents": [], "updates": 0, "changed": False, "test": False}
TESTED = {**NOTHING, "test": True}


@pytest.fixture
def app_client(web_settings: Settings, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    overrides = {"ingest": MAPPED, "pagerduty_webhook_secret": PD_SECRET}
    with webhook_app(web_settings, **{**overrides, **settings_marker(request)}) as running:
        yield running


@pytest.fixture
def clock() -> Iterator[time_machine.Coordinates]:
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def pipeline_of(client: TestClient) -> Pipeline:
    pipeline: Pipeline = client.app.state.pipeline  # type: ignore[attr-defined]
    return pipeline


def nothing_reached_anyone(client: TestClient, sandbox: Sandbox) -> None:
    pipeline = settle(client)
    assert reports.incidents(pipeline.store) == []
    assert sandbox.messages() == [], "no email, SMS, webhook nor public post"


def last_tests(client: TestClient) -> dict[str, float]:
    """The sources' last tests as /metrics shows them."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "outage_monitoring_test_received_timestamp_seconds":
                found[sample.labels["source"]] = sample.value
    return found


def doctor_says(client: TestClient) -> str:
    pipeline = pipeline_of(client)
    context = doctor.Context(pipeline.settings, pipeline.store.engine, registry=pipeline.registry)
    [finding] = doctor.check_monitoring(context)
    return finding.detail


def follower_of(client: TestClient, component: str, email: str) -> None:
    pipeline = pipeline_of(client)
    records.add(
        pipeline.store,
        pipeline.registry,
        SubscriberIn(
            name=component, email=email, channels=["email"], components=[component], confirmed=True
        ),
    )


# --- Grafana's "Test" button ----------------------------------------------------------------

TEST_PRESSES = [
    "grafana_test_webhook",
    "grafana_test_contact_point",
    "grafana_test_custom",
    "grafana_test_legacy",
]


@pytest.mark.parametrize("press", TEST_PRESSES)
def test_grafana_test_press_reaches_nobody_and_is_recorded(
    app_client: TestClient, sandbox: Sandbox, clock: time_machine.Coordinates, press: str
) -> None:
    answer = post(app_client, "grafana", fixture(press))

    assert answer.status_code == 202, answer.text  # Grafana shows anything else as failed
    assert answer.json() == TESTED
    nothing_reached_anyone(app_client, sandbox)
    assert last_tests(app_client) == {"grafana": NOW.timestamp()}
    assert doctor_says(app_client) == "grafana: last test 2025-03-04 10:02:11 UTC"

    clock.shift(timedelta(minutes=5))
    again = post(app_client, "grafana", fixture(press))  # every press is a group of its own
    assert again.json() == TESTED
    nothing_reached_anyone(app_client, sandbox)
    assert doctor_says(app_client) == "grafana: last test 2025-03-04 10:07:11 UTC"


@pytest.mark.settings(auto_publish={})
def test_grafana_test_press_opens_no_draft_either(app_client: TestClient, sandbox: Sandbox) -> None:
    for press in TEST_PRESSES:
        assert post(app_client, "grafana", fixture(press)).json() == TESTED
    nothing_reached_anyone(app_client, sandbox)


# --- Grafana's real notifications ----------------------------------------------------------


def test_grafana_real_body_opens_repeats_and_resolves(
    app_client: TestClient, sandbox: Sandbox
) -> None:
    opened = post(app_client, "grafana", fixture("grafana_firing"))
    assert opened.status_code == 202, opened.text
    [incident_id] = opened.json()["incidents"]
    settle(app_client)
    assert emails(sandbox) == [
        "[Investigating] Checkout is failing for some customers — Example Cloud"
    ]
    assert "Checkout errors above 5% in eu-west" in bodies(sandbox)[0]
    generator = "https://grafana.example.com/alerting/grafana/ddlq2v9xyz0zkb/view?orgId=1"
    assert generator in bodies(sandbox, TEAM)[0], "the team gets the link to the rule"
    assert generator not in bodies(sandbox)[0]

    repeated = post(app_client, "grafana", fixture("grafana_repeat"))  # fresh values, 4 h later
    assert repeated.json() == {**NOTHING, "incidents": [incident_id]}

    resolved = post(app_client, "grafana", fixture("grafana_resolved"))
    assert resolved.json()["updates"] == 1
    pipeline = settle(app_client)
    found, updates = reports.incident(pipeline.store, incident_id)
    assert (found.state, found.severity, found.components) == ("resolved", "critical", ["checkout"])
    assert updates[-1].message == "Checkout is working normally again."
    assert len(emails(sandbox)) == 2


# --- Uptime Kuma ----------------------------------------------------------------------------


def kuma_json(client: TestClient, payload: dict[str, Any]) -> Any:
    return post(client, "uptime-kuma", payload)


def kuma_form(client: TestClient, payload: dict[str, Any]) -> Any:
    """form-data: one field `data` holding the JSON, no file name (the npm form-data package)."""
    return client.post(
        "/webhooks/uptime-kuma", files={"data": (None, json.dumps(payload))}, headers=AUTH
    )


def kuma_get(client: TestClient, payload: dict[str, Any]) -> Any:
    """GET: msg, and heartbeat and monitor JSON-encoded, as query parameters (2.1+)."""
    params = {"msg": payload["msg"]}
    params |= {k: json.dumps(payload[k]) for k in ("heartbeat", "monitor") if payload[k]}
    return client.get("/webhooks/uptime-kuma", params=params, headers=AUTH)


MODES = {"json": kuma_json, "form-data": kuma_form, "get": kuma_get}


@pytest.mark.parametrize("mode", MODES)
def test_uptime_kuma_each_body_mode_opens_resends_and_resolves(
    app_client: TestClient, sandbox: Sandbox, mode: str
) -> None:
    send = MODES[mode]
    follower_of(app_client, "checkout", "follows-checkout@example.org")

    opened = send(app_client, fixture("uptime_kuma_down"))
    assert opened.status_code == 202, opened.text
    assert opened.json()["changed"] is True
    settle(app_client)
    assert send(app_client, fixture("uptime_kuma_resend")).json() == {
        **NOTHING,
        "incidents": opened.json()["incidents"],
    }
    closed = send(app_client, fixture("uptime_kuma_up"))
    assert closed.json()["updates"] == 1
    pipeline = settle(app_client)

    # The component comes from the monitor's `service` tag, so its follower hears of it.
    assert emails(sandbox, "follows-checkout@example.org") == [
        "[Investigating] Disruption affecting checkout — Example Cloud",
        "[Resolved] Disruption affecting checkout — Example Cloud",
    ]
    found, updates = reports.incident(pipeline.store, opened.json()["incidents"][0])
    assert (found.severity, updates[-1].message) == (
        "critical",
        "Checkout is working normally again.",
    )
    for text in bodies(sandbox):
        assert "200 - OK" not in text and "503" not in text, "the checker's words stay internal"
    assert "[Checkout API] [✅ Up] 200 - OK" in bodies(sandbox, TEAM)[-1]


def test_uptime_kuma_1_23_bodies_open_and_resolve(app_client: TestClient, sandbox: Sandbox) -> None:
    opened = post(app_client, "uptime-kuma", fixture("uptime_kuma_v1_down"))
    assert opened.status_code == 202, opened.text
    settle(app_client)
    closed = post(app_client, "uptime-kuma", fixture("uptime_kuma_v1_up"))
    assert closed.json()["incidents"] == opened.json()["incidents"]
    settle(app_client)
    assert emails(sandbox) == [
        "[Investigating] Disruption affecting checkout — Example Cloud",
        "[Resolved] Disruption affecting checkout — Example Cloud",
    ]


@pytest.mark.parametrize("mode", MODES)
def test_uptime_kuma_test_button_reaches_nobody_and_is_recorded(
    app_client: TestClient, sandbox: Sandbox, clock: time_machine.Coordinates, mode: str
) -> None:
    answer = MODES[mode](app_client, fixture("uptime_kuma_test"))

    assert answer.status_code == 202, answer.text
    assert answer.json() == TESTED
    nothing_reached_anyone(app_client, sandbox)
    assert last_tests(app_client) == {"uptime-kuma": NOW.timestamp()}


@pytest.mark.parametrize("name", ["uptime_kuma_cert_expiry", "uptime_kuma_domain_expiry"])
def test_uptime_kuma_expiry_warnings_reach_no_customer(
    app_client: TestClient, sandbox: Sandbox, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="dispatcher.web.webhooks"):
        answer = post(app_client, "uptime-kuma", fixture(name))

    assert answer.json() == NOTHING
    nothing_reached_anyone(app_client, sandbox)
    assert any("will expire in" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("request_it", "where"),
    [
        (
            lambda c: c.post("/webhooks/uptime-kuma", files={"x": (None, "{}")}, headers=AUTH),
            "data",
        ),
        (
            lambda c: c.post("/webhooks/uptime-kuma", files={"data": (None, "{no")}, headers=AUTH),
            "data",
        ),
        (
            lambda c: c.post(
                "/webhooks/uptime-kuma",
                content=b"--x\r\nbroken",
                headers={**AUTH, "Content-Type": "multipart/form-data; boundary=x"},
            ),
            "body",
        ),
        (
            lambda c: c.get(
                "/webhooks/uptime-kuma", params={"msg": "m", "heartbeat": "[1"}, headers=AUTH
            ),
            "heartbeat",
        ),
        (lambda c: c.get("/webhooks/uptime-kuma", headers=AUTH), "msg"),
    ],
)
def test_uptime_kuma_bad_form_or_query_is_422_naming_where(
    app_client: TestClient, request_it: Any, where: str
) -> None:
    answer = request_it(app_client)

    assert answer.status_code == 422, answer.text
    assert where in json.dumps(answer.json()["detail"])
    assert reports.incidents(pipeline_of(app_client).store) == []


def test_uptime_kuma_get_without_the_token_is_401_and_stores_nothing(
    app_client: TestClient,
) -> None:
    payload = fixture("uptime_kuma_down")
    params = {k: json.dumps(payload[k]) for k in ("heartbeat", "monitor")} | {"msg": payload["msg"]}
    answer = app_client.get("/webhooks/uptime-kuma", params=params)

    assert answer.status_code == 401
    with pipeline_of(app_client).store.session() as session:
        assert session.scalar(select(func.count()).select_from(Alert)) == 0


@pytest.mark.settings(webhook_max_bytes=4096)
def test_uptime_kuma_query_over_the_size_limit_is_refused(app_client: TestClient) -> None:
    limit = pipeline_of(app_client).settings.webhook_max_bytes
    answer = app_client.get("/webhooks/uptime-kuma", params={"msg": "x" * limit}, headers=AUTH)

    assert answer.status_code == 414


# --- PagerDuty ------------------------------------------------------------------------------


def signature(body: bytes, *secrets: str) -> str:
    return ",".join("v1=" + hmac.new(s.encode(), body, hashlib.sha256).hexdigest() for s in secrets)


def pagerduty(client: TestClient, name: str, *secrets: str, body: bytes | None = None) -> Any:
    raw = body if body is not None else json.dumps(fixture(name)).encode()
    headers = {"Content-Type": "application/json"}
    if secrets:
        headers["X-PagerDuty-Signature"] = signature(raw, *secrets)
    return client.post("/webhooks/pagerduty", content=raw, headers=headers)


def test_pagerduty_incident_lifecycle(
    app_client: TestClient, sandbox: Sandbox, clock: time_machine.Coordinates
) -> None:
    opened = pagerduty(app_client, "pagerduty_triggered", PD_SECRET)
    assert opened.status_code == 202, opened.text
    [incident_id] = opened.json()["incidents"]
    settle(app_client)
    assert emails(sandbox) == ["[Investigating] Disruption affecting checkout — Example Cloud"]
    assert "CRITICAL: checkout-api" not in bodies(sandbox)[0], "the responders' title stays inside"
    assert "PagerDuty incident #37 triggered" in bodies(sandbox, TEAM)[0]

    for quiet in ("pagerduty_acknowledged", "pagerduty_escalated", "pagerduty_annotated"):
        answer = pagerduty(app_client, quiet, PD_SECRET)
        assert answer.status_code == 202, answer.text
        assert answer.json()["changed"] is False, quiet
    assert pagerduty(app_client, "pagerduty_triggered", PD_SECRET).json()["changed"] is False

    assert pagerduty(app_client, "pagerduty_resolved", PD_SECRET).json()["updates"] == 1
    settle(app_client)
    clock.shift(timedelta(hours=2))  # well past the flap window: PagerDuty says it is the same
    reopened = pagerduty(app_client, "pagerduty_reopened", PD_SECRET)
    assert reopened.json()["incidents"] == [incident_id]
    pipeline = settle(app_client)

    found, updates = reports.incident(pipeline.store, incident_id)
    assert [u.state for u in updates] == ["investigating", "resolved", "investigating"]
    assert updates[1].message == "Checkout is working normally again."
    assert found.state == "investigating"
    assert len(emails(sandbox)) == 3


@pytest.mark.settings(auto_publish={})
def test_pagerduty_opens_a_draft_by_default(app_client: TestClient, sandbox: Sandbox) -> None:
    [incident_id] = pagerduty(app_client, "pagerduty_triggered", PD_SECRET).json()["incidents"]
    pipeline = settle(app_client)

    assert reports.incident(pipeline.store, incident_id)[0].draft is True
    assert len(emails(sandbox, TEAM)) == 1
    assert emails(sandbox) == []
    assert sandbox.messages("social") == []


def test_pagerduty_ping_and_unmapped_services_reach_nobody(
    app_client: TestClient, sandbox: Sandbox, clock: time_machine.Coordinates
) -> None:
    assert pagerduty(app_client, "pagerduty_ping", PD_SECRET).json() == TESTED
    other = fixture("pagerduty_triggered")
    other["event"]["data"]["service"]["id"] = "PINTERN"
    answer = pagerduty(app_client, "", PD_SECRET, body=json.dumps(other).encode())
    assert answer.json() == NOTHING
    nothing_reached_anyone(app_client, sandbox)
    assert last_tests(app_client) == {"pagerduty": NOW.timestamp()}


@pytest.mark.settings(pagerduty_webhook_secret=f"new-secret,{PD_SECRET}")
def test_pagerduty_signatures_while_secrets_rotate(app_client: TestClient) -> None:
    # PagerDuty rotating: it signs with the old and the new secret; we know one of them.
    assert pagerduty(app_client, "pagerduty_ping", "unknown", PD_SECRET).status_code == 202
    # We rotating: two secrets configured, PagerDuty still on one.
    assert pagerduty(app_client, "pagerduty_ping", "new-secret").status_code == 202


@pytest.mark.parametrize(
    "secrets",
    [(), ("not-the-secret",), ("not-the-secret", "neither")],
    ids=["missing", "forged", "forged-twice"],
)
def test_pagerduty_forged_or_missing_signature_is_401_and_stores_nothing(
    app_client: TestClient, secrets: tuple[str, ...]
) -> None:
    answer = pagerduty(app_client, "pagerduty_triggered", *secrets)

    assert answer.status_code == 401
    assert PD_SECRET not in answer.text
    pipeline = settle(app_client)
    assert reports.incidents(pipeline.store) == []
    with pipeline.store.session() as session:
        assert session.scalar(select(func.count()).select_from(Alert)) == 0


def test_pagerduty_a_body_changed_after_signing_is_401(app_client: TestClient) -> None:
    body = json.dumps(fixture("pagerduty_triggered")).encode()
    tampered = body.replace(b'"urgency": "high"', b'"urgency": "low"')
    answer = app_client.post(
        "/webhooks/pagerduty",
        content=tampered,
        headers={"X-PagerDuty-Signature": signature(body, PD_SECRET)},
    )
    assert answer.status_code == 401


@pytest.mark.settings(pagerduty_webhook_secret=None)
def test_pagerduty_without_a_secret_configured_refuses_everything(app_client: TestClient) -> None:
    answer = pagerduty(app_client, "pagerduty_triggered", PD_SECRET)

    assert answer.status_code == 401
    assert "PAGERDUTY_WEBHOOK_SECRET" in answer.json()["detail"]


def test_pagerduty_wrong_shape_after_a_good_signature_is_422(app_client: TestClient) -> None:
    broken = fixture("pagerduty_triggered")
    del broken["event"]["data"]["service"]
    answer = pagerduty(app_client, "", PD_SECRET, body=json.dumps(broken).encode())

    assert answer.status_code == 422
    assert "service" in json.dumps(answer.json()["detail"])


# --- Alertmanager's newer fields ------------------------------------------------------------


def test_alertmanager_newer_fields_are_accepted_and_ignored(
    app_client: TestClient, sandbox: Sandbox
) -> None:
    opened = post(app_client, "alertmanager", fixture("alertmanager_v034_firing"))
    assert opened.status_code == 202, opened.text
    assert opened.json()["changed"] is True
    older = post(app_client, "alertmanager", fixture("alertmanager_firing"))  # same group
    assert older.json() == {**NOTHING, "incidents": opened.json()["incidents"]}
    repeat = {
        **fixture("alertmanager_v034_firing"),
        "notification_reason": "repeat interval elapsed",
    }
    assert post(app_client, "alertmanager", repeat).json()["changed"] is False
    settle(app_client)
    assert len(emails(sandbox)) == 1
