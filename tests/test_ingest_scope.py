"""Monitoring labels that say whom an alert hits (`[ingest] audience_labels`): the incident is
scoped to them, alerts of one group in several regions widen it to all, and one without the
label (or with a value that is no slug) lifts it: in doubt, everyone is told. Over HTTP, from
each source's real shape (Alertmanager labels, Grafana's, Uptime Kuma tags, the generic
`affects`), on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.ingest import alertmanager, uptime_kuma
from dispatcher.ingest.events import IngestMapping
from dispatcher.sandbox.server import Sandbox
from dispatcher.settings import Settings
from dispatcher.store import Incident, Update
from dispatcher.web.app import create_app
from tests.scoping import add, body_for
from tests.test_webhooks import fixture, post, publishing, settle

MAPPING = IngestMapping(audience_labels=["region", "account"])


@pytest.fixture
def scoped_app(web_settings: Settings) -> Iterator[TestClient]:
    """Sources publish at once; region and account labels scope incidents. Ana is in eu-west,
    Bo in us-east, Cai in ap-south; Dee has no region."""
    settings = publishing(web_settings).model_copy(update={"ingest": MAPPING})
    with TestClient(create_app(settings)) as running:
        pipeline: Pipeline = running.app.state.pipeline  # type: ignore[attr-defined]
        for name, region in (("ana", "eu-west"), ("bo", "us-east"), ("cai", "ap-south")):
            add(pipeline, name, attributes={"region": region})
        add(pipeline, "dee")
        yield running


def regional(*regions: str | None) -> dict[str, Any]:
    """The Alertmanager fixture's group with one alert per region (None: no region label)."""
    payload = fixture("alertmanager_firing")
    first = payload["alerts"][0]
    payload["alerts"] = []
    for n, region in enumerate(regions):
        alert = copy.deepcopy(first)
        alert["labels"] = {**alert["labels"], "instance": f"probe-{n}"}
        if region is not None:
            alert["labels"]["region"] = region
        alert["fingerprint"] = f"{n:016x}"
        payload["alerts"].append(alert)
    return payload


def scope_of(pipeline: Pipeline) -> tuple[dict[str, list[str]], bool]:
    with pipeline.store.session() as session:
        (incident,) = session.query(Incident).all()
        return incident.scope, incident.private


def recipients(sandbox: Sandbox) -> list[str]:
    return sorted({m["to"].split("@")[0] for m in sandbox.messages("email")})


def test_alerts_in_two_regions_scope_the_incident_to_both(
    scoped_app: TestClient, sandbox: Sandbox
) -> None:
    assert post(scoped_app, "alertmanager", regional("eu-west", "us-east")).status_code == 202
    pipeline = settle(scoped_app)
    assert scope_of(pipeline) == ({"region": ["eu-west", "us-east"]}, True)
    assert recipients(sandbox) == ["ana", "bo", "dee"]  # Dee: no region, OUTAGE_UNSCOPED
    assert sandbox.messages("social") == [], "scoped: not on the public account"


def test_a_later_alert_in_another_region_widens_the_scope_and_tells_the_story(
    scoped_app: TestClient, sandbox: Sandbox
) -> None:
    post(scoped_app, "alertmanager", regional("eu-west"))
    settle(scoped_app)
    sandbox.clear()
    post(scoped_app, "alertmanager", regional("eu-west", "ap-south"))
    pipeline = settle(scoped_app)
    assert scope_of(pipeline)[0] == {"region": ["ap-south", "eu-west"]}
    (cai,) = body_for(sandbox, "cai")
    assert "So far:" in cai, "newly affected: told what happened before"
    (ana,) = body_for(sandbox, "ana")
    assert "So far:" not in ana
    assert "bo" not in recipients(sandbox)
    # The same payload again changes nothing and tells nobody.
    sandbox.clear()
    post(scoped_app, "alertmanager", regional("eu-west", "ap-south"))
    settle(scoped_app)
    assert sandbox.messages() == []


def test_an_alert_without_the_label_tells_everyone(
    scoped_app: TestClient, sandbox: Sandbox
) -> None:
    post(scoped_app, "alertmanager", regional("eu-west", None))
    pipeline = settle(scoped_app)
    assert scope_of(pipeline) == ({}, False)
    assert recipients(sandbox) == ["ana", "bo", "cai", "dee"]


def test_a_label_value_that_is_no_slug_is_ignored_so_everyone_is_told(
    scoped_app: TestClient, sandbox: Sandbox
) -> None:
    post(scoped_app, "alertmanager", regional("EU West (Frankfurt)"))
    pipeline = settle(scoped_app)
    assert scope_of(pipeline) == ({}, False)
    assert recipients(sandbox) == ["ana", "bo", "cai", "dee"]


def test_grafana_labels_scope_like_alertmanagers(scoped_app: TestClient, sandbox: Sandbox) -> None:
    payload = fixture("grafana_firing")
    for alert in payload["alerts"]:
        alert["labels"]["region"] = "US-East"  # values are read as slugs: lower case
    assert post(scoped_app, "grafana", payload).status_code == 202
    pipeline = settle(scoped_app)
    assert scope_of(pipeline)[0] == {"region": ["us-east"]}
    assert recipients(sandbox) == ["bo", "dee"]


def test_uptime_kuma_tags_scope_the_monitors_incident(
    scoped_app: TestClient, sandbox: Sandbox
) -> None:
    payload = fixture("uptime_kuma_down")
    payload["monitor"]["tags"] = [
        {"id": 1, "monitor_id": 1, "tag_id": 3, "name": "region", "value": "ap-south",
         "color": "#059669"},
        {"id": 2, "monitor_id": 1, "tag_id": 4, "name": "production", "value": "",
         "color": "#2563EB"},
    ]  # fmt: skip
    assert post(scoped_app, "uptime-kuma", payload).status_code == 202
    pipeline = settle(scoped_app)
    assert scope_of(pipeline)[0] == {"region": ["ap-south"]}
    assert recipients(sandbox) == ["cai", "dee"]


def test_the_generic_format_takes_an_affects_object(
    scoped_app: TestClient, sandbox: Sandbox
) -> None:
    payload = {**fixture("generic_firing"), "affects": {"region": ["eu-west", "ap-south"]}}
    assert post(scoped_app, "generic", payload).status_code == 202
    pipeline = settle(scoped_app)
    assert scope_of(pipeline)[0] == {"region": ["ap-south", "eu-west"]}
    assert recipients(sandbox) == ["ana", "cai", "dee"]
    bad = {**fixture("generic_firing"), "key": "other", "affects": {"region": "eu west"}}
    response = post(scoped_app, "generic", bad)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][:2] == ["body", "affects"]


def test_parsers_read_the_audience_labels_only_when_configured() -> None:
    payload = regional("eu-west")
    payload["commonLabels"]["account"] = "acme"
    (event,) = alertmanager.parse(payload, MAPPING).events
    assert event.audience == {"region": ["eu-west"], "account": ["acme"]}
    (plain,) = alertmanager.parse(payload, IngestMapping()).events
    assert plain.audience == {}, "no audience_labels configured: nobody is left out"
    kuma = fixture("uptime_kuma_down")
    kuma["monitor"]["tags"] = [{"name": "account", "value": "Acme"}]
    (tagged,) = uptime_kuma.parse(kuma, MAPPING).events
    assert tagged.audience == {"account": ["acme"]}


def test_a_resolve_reaches_everyone_told_in_the_scope(
    scoped_app: TestClient, sandbox: Sandbox
) -> None:
    post(scoped_app, "alertmanager", regional("eu-west"))
    settle(scoped_app)
    sandbox.clear()
    resolved = regional("eu-west")
    resolved["status"] = "resolved"
    for alert in resolved["alerts"]:
        alert["status"] = "resolved"
    post(scoped_app, "alertmanager", resolved)
    pipeline = settle(scoped_app)
    assert recipients(sandbox) == ["ana", "dee"]
    with pipeline.store.session() as session:
        assert session.query(Update).count() == 2
