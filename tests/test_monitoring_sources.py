"""Monitoring sources as they really send, end to end: each product's own bodies (fixtures written
from its source, named at the top of each) over HTTP, and what the sandbox then received.

Grafana's "Test" button is answered 2xx, recorded, and reaches nobody.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents import reports
from dispatcher.ops import doctor
from dispatcher.sandbox.server import Sandbox
from dispatcher.settings import Settings
from tests.webhooks_support import (
    TEAM,
    bodies,
    emails,
    fixture,
    post,
    settings_marker,
    settle,
    webhook_app,
)

NOW = datetime(2025, 3, 4, 10, 2, 11, tzinfo=UTC)
NOTHING = {"incidents": [], "updates": 0, "changed": False, "test": False}
TESTED = {**NOTHING, "test": True}


@pytest.fixture
def app_client(web_settings: Settings, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    with webhook_app(web_settings, **settings_marker(request)) as running:
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
