"""Monitoring webhooks end to end: real-shaped payloads over HTTP, what the sandbox received.

The app runs in-process with its embedded runner; tests wait for the fan-out by draining the
pipeline (the runner does the same on its own), never by sleeping.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from channels.webhook import sign
from dispatcher.incidents import reports
from dispatcher.sandbox.server import Sandbox
from dispatcher.settings import Settings
from dispatcher.store import Incident, utcnow
from dispatcher.web.app import create_app
from tests.conftest import API_TOKEN, WEBHOOK_TOKEN
from tests.webhooks_support import (
    AUTH,
    emails,
    fixture,
    post,
    publishing,
    settings_marker,
    settle,
    webhook_app,
)


@pytest.fixture
def app_client(web_settings: Settings, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    with webhook_app(web_settings, **settings_marker(request)) as running:
        yield running


pytestmark = pytest.mark.usefixtures("app_client")


def test_alertmanager_group_lifecycle(app_client: TestClient, sandbox: Sandbox) -> None:
    firing = post(app_client, "alertmanager", fixture("alertmanager_firing"))
    assert firing.status_code == 202
    assert firing.json()["changed"] is True
    [incident_id] = firing.json()["incidents"]
    settle(app_client)
    assert len(emails(sandbox)) == 1

    again = post(app_client, "alertmanager", fixture("alertmanager_firing"))
    assert again.json() == {
        "incidents": [incident_id],
        "updates": 0,
        "changed": False,
        "test": False,
    }
    settle(app_client)
    assert len(emails(sandbox)) == 1, "a repeated notification sends nothing"

    joined = post(app_client, "alertmanager", fixture("alertmanager_third_alert"))
    assert joined.json()["updates"] == 1
    settle(app_client)  # minutes pass between notifications (else the resolve supersedes it)
    mixed = post(app_client, "alertmanager", fixture("alertmanager_mixed"))
    assert mixed.json()["changed"] is False, "one alert resolving while others fire says nothing"
    still_firing = post(app_client, "alertmanager", fixture("alertmanager_resolved"))
    assert still_firing.json()["changed"] is False, "the third alert has not resolved yet"
    all_resolved = fixture("alertmanager_third_alert")
    all_resolved["status"] = "resolved"
    for alert in all_resolved["alerts"]:
        alert["status"] = "resolved"
    resolved = post(app_client, "alertmanager", all_resolved)
    assert resolved.json()["updates"] == 1
    pipeline = settle(app_client)

    found, updates = reports.incident(pipeline.store, incident_id)
    assert found.state == "resolved"
    assert [u.state for u in updates] == ["investigating", "investigating", "resolved"]
    assert len(emails(sandbox)) == 3


@pytest.mark.parametrize(
    ("source", "down", "up"),
    [
        ("grafana", "grafana_firing", "grafana_resolved"),
        ("uptime-kuma", "uptime_kuma_down", "uptime_kuma_up"),
        ("generic", "generic_firing", "generic_resolved"),
    ],
)
def test_each_source_opens_and_resolves(
    app_client: TestClient, sandbox: Sandbox, source: str, down: str, up: str
) -> None:
    opened = post(app_client, source, fixture(down))
    assert opened.status_code == 202, opened.text
    assert opened.json()["changed"] is True
    settle(app_client)
    closed = post(app_client, source, fixture(up))
    assert closed.json()["incidents"] == opened.json()["incidents"]
    settle(app_client)
    subjects = emails(sandbox)
    assert len(subjects) == 2
    assert "resolved" in subjects[1].lower()


@pytest.mark.parametrize("name", ["uptime_kuma_pending", "uptime_kuma_maintenance"])
def test_uptime_kuma_pending_and_maintenance_are_accepted_and_change_nothing(
    app_client: TestClient, name: str
) -> None:
    answer = post(app_client, "uptime-kuma", fixture(name))
    assert answer.status_code == 202
    assert answer.json() == {"incidents": [], "updates": 0, "changed": False, "test": False}


@pytest.mark.settings(flap_window_s=3600)
def test_a_flapping_alert_reopens_the_same_incident(
    app_client: TestClient, sandbox: Sandbox
) -> None:
    first = post(app_client, "generic", fixture("generic_firing")).json()["incidents"]
    post(app_client, "generic", fixture("generic_resolved"))
    again = post(app_client, "generic", fixture("generic_firing"))
    assert again.json()["incidents"] == first
    pipeline = settle(app_client)
    found, updates = reports.incident(pipeline.store, first[0])
    assert found.state == "investigating"
    assert [u.state for u in updates] == ["investigating", "resolved", "investigating"]
    assert "returned" in (updates[-1].message or "")


@pytest.mark.settings(flap_window_s=60)
def test_firing_after_the_flap_window_opens_a_new_incident(app_client: TestClient) -> None:
    first = post(app_client, "generic", fixture("generic_firing")).json()["incidents"]
    post(app_client, "generic", fixture("generic_resolved"))
    pipeline = settle(app_client)
    with pipeline.store.session() as session:  # the resolution is now long past
        session.execute(update(Incident).values(resolved_at=utcnow() - timedelta(hours=2)))
    second = post(app_client, "generic", fixture("generic_firing")).json()["incidents"]
    assert second != first


@pytest.mark.settings(resolve_hold_s=3600)
def test_a_resolve_is_announced_only_once_it_has_held(
    app_client: TestClient, sandbox: Sandbox
) -> None:
    [incident_id] = post(app_client, "generic", fixture("generic_firing")).json()["incidents"]
    assert post(app_client, "generic", fixture("generic_resolved")).json()["updates"] == 0
    pipeline = settle(app_client)
    assert reports.incident(pipeline.store, incident_id)[0].state == "investigating"

    # A blip: firing again before the hold ended cancels the pending resolve, silently.
    assert post(app_client, "generic", fixture("generic_firing")).json()["updates"] == 0
    post(app_client, "generic", fixture("generic_resolved"))
    with pipeline.store.session() as session:  # the hold has now passed
        long_ago = utcnow() - timedelta(hours=2)
        session.execute(update(Incident).values(resolve_pending_since=long_ago))
    settle(app_client)  # the sweep announces it
    assert reports.incident(pipeline.store, incident_id)[0].state == "resolved"
    assert len(emails(sandbox)) == 2


@pytest.mark.settings(auto_publish={})
def test_machine_incidents_are_drafts_until_approved(
    app_client: TestClient, sandbox: Sandbox
) -> None:
    [incident_id] = post(app_client, "generic", fixture("generic_firing")).json()["incidents"]
    settle(app_client)
    assert len(emails(sandbox, "ops@example.org")) == 1, "the team hears at once"
    assert emails(sandbox) == [], "customers hear nothing from a draft"
    assert sandbox.messages("social") == []

    approved = app_client.post(
        f"/api/incidents/{incident_id}/approve",
        json={"title": "Checkout is slow"},
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    )
    assert approved.status_code == 200, approved.text
    settle(app_client)
    assert emails(sandbox) == [emails(sandbox, "customer@example.org")[0]]
    assert "Checkout is slow" in emails(sandbox)[0]
    assert len(emails(sandbox, "ops@example.org")) == 1, "the team is not told twice"
    assert len(sandbox.messages("social")) == 1
    again = app_client.post(
        f"/api/incidents/{incident_id}/approve",
        json={},
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    )
    assert again.status_code == 409


def test_auto_publish_threshold_per_source(web_settings: Settings, sandbox: Sandbox) -> None:
    config = publishing(web_settings, auto_publish={"generic": "critical"})
    with TestClient(create_app(config)) as client:
        payload = {**fixture("generic_firing"), "severity": "minor"}
        [minor] = post(client, "generic", payload).json()["incidents"]
        payload = {**fixture("generic_firing"), "key": "other", "severity": "critical"}
        [critical] = post(client, "generic", payload).json()["incidents"]
        pipeline = settle(client)
        assert reports.incident(pipeline.store, minor)[0].draft is True
        assert reports.incident(pipeline.store, critical)[0].draft is False


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {WEBHOOK_TOKEN}"}],
)
def test_missing_or_wrong_token_is_401_and_stores_nothing(
    app_client: TestClient, headers: dict[str, str]
) -> None:
    answer = app_client.post(
        "/webhooks/alertmanager", json=fixture("alertmanager_firing"), headers=headers
    )
    assert answer.status_code == 401
    assert WEBHOOK_TOKEN not in answer.text
    pipeline = settle(app_client)
    assert reports.incidents(pipeline.store) == []


def test_per_source_token_overrides_the_shared_one(web_settings: Settings) -> None:
    config = publishing(web_settings, webhook_tokens={"grafana": "grafana-only"})
    with TestClient(create_app(config)) as client:
        shared = post(client, "grafana", fixture("grafana_firing"))
        own = client.post(
            "/webhooks/grafana",
            json=fixture("grafana_firing"),
            headers={"Authorization": "Bearer grafana-only"},
        )
    assert shared.status_code == 401
    assert own.status_code == 202


def test_no_token_configured_refuses_everything(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        answer = client.post(
            "/webhooks/generic",
            json=fixture("generic_firing"),
            headers={"Authorization": "Bearer anything"},
        )
    assert answer.status_code == 401
    assert "OUTAGE_WEBHOOK_TOKEN" in answer.json()["detail"]


def test_generic_source_may_sign_the_body_instead(web_settings: Settings) -> None:
    config = publishing(web_settings, generic_hmac_secret="shared-secret")
    body = json.dumps(fixture("generic_firing")).encode()
    with TestClient(create_app(config)) as client:
        good = client.post(
            "/webhooks/generic",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-Outage-Signature": sign("shared-secret", int(time.time()), body),
            },
        )
        forged = client.post(
            "/webhooks/generic",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-Outage-Signature": sign("not-the-secret", int(time.time()), body),
            },
        )
    assert good.status_code == 202
    assert forged.status_code == 401


def test_oversized_body_is_413(app_client: TestClient) -> None:
    huge = {**fixture("generic_firing"), "message": "x" * 2_000_000}
    assert post(app_client, "generic", huge).status_code == 413


@pytest.mark.parametrize(
    ("source", "payload", "field"),
    [
        ("alertmanager", {"version": "4", "groupKey": "g", "status": "firing"}, "alerts"),
        ("alertmanager", {**fixture("alertmanager_firing"), "alerts": "nope"}, "alerts"),
        ("generic", {**fixture("generic_firing"), "status": "exploded"}, "status"),
        ("generic", {**fixture("generic_firing"), "colour": "red"}, "colour"),
        # Blank text would reach the public as "We are investigating  affecting billing."
        ("generic", {**fixture("generic_firing"), "title": "   "}, "title"),
        ("generic", {**fixture("generic_firing"), "components": ["billing", " "]}, "components"),
        ("generic", {**fixture("generic_firing"), "message": " "}, "message"),
        ("uptime-kuma", {"heartbeat": {"monitorID": 1}, "monitor": None, "msg": ""}, "status"),
    ],
)
def test_wrong_shape_is_422_naming_the_field(
    app_client: TestClient, source: str, payload: dict[str, Any], field: str
) -> None:
    answer = post(app_client, source, payload)
    assert answer.status_code == 422
    assert field in json.dumps(answer.json()["detail"])


def test_blank_annotations_and_labels_are_read_as_missing(
    app_client: TestClient, sandbox: Sandbox
) -> None:
    payload = copy.deepcopy(fixture("alertmanager_firing"))
    for alert in payload["alerts"]:
        alert["annotations"].update(customer_title=" ", description=" ", summary="")
        alert["labels"].update(component=" ", service=" ")
    answer = post(app_client, "alertmanager", payload)
    assert answer.status_code == 202, answer.text
    [incident_id] = answer.json()["incidents"]
    operator = {"Authorization": f"Bearer {API_TOKEN}"}
    shown = app_client.get(f"/api/incidents/{incident_id}", headers=operator).json()
    assert shown["title"] == "Disruption affecting general"
    assert shown["components"] == ["general"]
    assert shown["updates"][0]["message"] is None


def test_malformed_json_is_422(app_client: TestClient) -> None:
    answer = app_client.post(
        "/webhooks/generic",
        content=b"{not json",
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert answer.status_code == 422
    assert "JSON" in answer.text


def test_a_mixed_payload_counts_each_alert_by_its_status(app_client: TestClient) -> None:
    payload = copy.deepcopy(fixture("alertmanager_mixed"))
    statuses = {a["status"] for a in payload["alerts"]}
    assert statuses == {"firing", "resolved"}
    answer = post(app_client, "alertmanager", payload)
    assert answer.json()["changed"] is True  # the firing one opens the incident
