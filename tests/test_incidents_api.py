"""`/api/incidents`: the same operations as the CLI, for scripts, behind the operator token."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from dispatcher.models import SubscriberIn
from dispatcher.sandbox.server import Sandbox
from dispatcher.subscribers import records
from tests.conftest import API_TOKEN, settle

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
INCIDENT = {"title": "Login fails", "severity": "major", "components": ["auth"]}


def test_open_update_resolve_and_read_back(client: TestClient) -> None:
    opened = client.post(
        "/api/incidents", json={**INCIDENT, "message": "Some logins fail."}, headers=AUTH
    )
    assert opened.status_code == 201
    incident_id = opened.json()["incident_id"]

    for state in ("identified", "monitoring", "resolved"):
        answer = client.post(
            f"/api/incidents/{incident_id}/updates",
            json={"state": state, "message": f"now {state}"},
            headers=AUTH,
        )
        assert answer.status_code == 201, answer.text

    shown = client.get(f"/api/incidents/{incident_id}", headers=AUTH).json()
    assert shown["state"] == "resolved"
    assert [u["state"] for u in shown["updates"]] == [
        "investigating",
        "identified",
        "monitoring",
        "resolved",
    ]
    listed = client.get("/api/incidents", headers=AUTH).json()
    assert [i["id"] for i in listed] == [incident_id]


def test_unknown_incident_is_404_and_a_closed_one_409(client: TestClient) -> None:
    missing = client.post("/api/incidents/999/updates", json={"state": "monitoring"}, headers=AUTH)
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no incident with id 999"}
    incident_id = client.post("/api/incidents", json=INCIDENT, headers=AUTH).json()["incident_id"]
    client.post(f"/api/incidents/{incident_id}/updates", json={"state": "resolved"}, headers=AUTH)
    again = client.post(
        f"/api/incidents/{incident_id}/updates", json={"state": "resolved"}, headers=AUTH
    )
    assert again.status_code == 409
    assert again.json() == {"detail": f"incident {incident_id} is already resolved"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**INCIDENT, "severity": "dire"}, "severity"),
        ({**INCIDENT, "components": []}, "components"),
        ({"severity": "major", "components": ["x"]}, "title"),
        ({**INCIDENT, "colour": "red"}, "colour"),
        ({**INCIDENT, "title": "   "}, "title"),
        ({**INCIDENT, "components": ["api", " "]}, "components"),
        ({**INCIDENT, "message": ""}, "message"),
        ({**INCIDENT, "eta": "2020-01-01T10:00:00Z"}, "eta"),
        ({**INCIDENT, "next_update_at": "2030-01-01T10:00:00"}, "next_update_at"),  # no zone
    ],
)
def test_bad_incident_is_422_naming_the_field(
    client: TestClient, body: dict[str, object], field: str
) -> None:
    answer = client.post("/api/incidents", json=body, headers=AUTH)
    assert answer.status_code == 422
    assert field in answer.text
    assert client.get("/api/incidents", headers=AUTH).json() == [], "nothing is stored"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"state": "identified", "message": ""}, "message"),
        ({"state": "identified", "message": "x", "eta": "2020-01-01T10:00:00Z"}, "eta"),
        ({"state": "monitoring", "credit_note": "10% off"}, "credit_note"),
        ({"state": "resolved", "next_update_at": "2030-01-01T10:00:00Z"}, "next_update_at"),
    ],
)
def test_bad_update_is_422_naming_the_field_and_posts_nothing(
    client: TestClient, body: dict[str, object], field: str
) -> None:
    incident_id = client.post("/api/incidents", json=INCIDENT, headers=AUTH).json()["incident_id"]
    answer = client.post(f"/api/incidents/{incident_id}/updates", json=body, headers=AUTH)
    assert answer.status_code == 422
    assert field in answer.text
    shown = client.get(f"/api/incidents/{incident_id}", headers=AUTH).json()
    assert [u["state"] for u in shown["updates"]] == ["investigating"]


def test_a_resolution_offers_the_credit_to_subscribers_and_not_the_public(
    client: TestClient, sandbox: Sandbox
) -> None:
    pipeline = client.app.state.pipeline  # type: ignore[attr-defined]
    records.add(
        pipeline.store,
        pipeline.registry,
        SubscriberIn(name="a", email="a@example.org", channels=["email"], confirmed=True),
    )
    incident_id = client.post("/api/incidents", json=INCIDENT, headers=AUTH).json()["incident_id"]
    credit = "Affected accounts get a 10% credit."
    answer = client.post(
        f"/api/incidents/{incident_id}/updates",
        json={"state": "resolved", "message": "Fixed.", "credit_note": credit},
        headers=AUTH,
    )
    assert answer.status_code == 201, answer.text
    settle(pipeline, incident_id)
    assert credit in sandbox.messages("email")[-1]["body"]
    posts = [m["body"] for m in sandbox.messages("social")]
    assert "Fixed." in posts[-1] and all(credit not in post for post in posts)
    page = client.get(f"/incidents/{incident_id}")
    assert "Fixed." in page.text and credit not in page.text


def test_operator_token_is_required(client: TestClient) -> None:
    assert client.get("/api/incidents").status_code == 401
    assert client.get("/api/incidents", headers={"Authorization": "Bearer no"}).status_code == 401
    assert client.post("/api/incidents", json=INCIDENT).status_code == 401


WINDOW = {"starts_at": "2099-06-01T02:00:00Z", "ends_at": "2099-06-01T04:00:00Z"}
MAINTENANCE = {"title": "Database upgrade", "components": ["payments"], **WINDOW}


def test_maintenance_is_scheduled_moved_cancelled_and_listed(client: TestClient) -> None:
    scheduled = client.post("/api/maintenance", json=MAINTENANCE, headers=AUTH)
    assert scheduled.status_code == 201, scheduled.text
    maintenance_id = scheduled.json()["incident_id"]
    refused = client.post(
        f"/api/incidents/{maintenance_id}/updates",
        json={"state": "identified", "message": "x"},
        headers=AUTH,
    )
    assert refused.status_code == 409 and "planned maintenance" in refused.json()["detail"]
    moved = client.post(
        f"/api/maintenance/{maintenance_id}/reschedule",
        json={"starts_at": "2099-06-02T02:00:00Z", "ends_at": "2099-06-02T03:00:00Z"},
        headers=AUTH,
    )
    assert moved.status_code == 201, moved.text
    [listed] = client.get("/api/maintenance", headers=AUTH).json()
    assert listed["started_at"].startswith("2099-06-02T02:00")
    cancelled = client.post(f"/api/maintenance/{maintenance_id}/cancel", json={}, headers=AUTH)
    assert cancelled.status_code == 201, cancelled.text
    again = client.post(f"/api/maintenance/{maintenance_id}/cancel", json={}, headers=AUTH)
    assert again.status_code == 409
    assert client.get("/api/maintenance", headers=AUTH).json() == []
    [listed] = client.get("/api/maintenance", params={"all": "true"}, headers=AUTH).json()
    assert listed["state"] == "cancelled"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**MAINTENANCE, "ends_at": "2099-06-01T01:00:00Z"}, "ends_at"),
        (
            {**MAINTENANCE, "starts_at": "2020-01-01T01:00:00Z", "ends_at": "2020-01-01T02:00:00Z"},
            "ends_at",
        ),
        ({**MAINTENANCE, "title": " "}, "title"),
        ({**MAINTENANCE, "components": []}, "components"),
    ],
)
def test_bad_maintenance_is_422_naming_the_field(
    client: TestClient, body: dict[str, object], field: str
) -> None:
    answer = client.post("/api/maintenance", json=body, headers=AUTH)
    assert answer.status_code == 422 and field in answer.text
    assert client.get("/api/maintenance", params={"all": "true"}, headers=AUTH).json() == []


def test_reopen_is_refused_on_an_open_incident_and_reopens_a_resolved_one(
    client: TestClient,
) -> None:
    incident_id = client.post("/api/incidents", json=INCIDENT, headers=AUTH).json()["incident_id"]
    url = f"/api/incidents/{incident_id}/reopen"
    assert client.post(url, json={"message": "Again."}, headers=AUTH).status_code == 409
    client.post(f"/api/incidents/{incident_id}/updates", json={"state": "resolved"}, headers=AUTH)
    assert client.post(url, json={"message": ""}, headers=AUTH).status_code == 422
    assert client.post(url, json={"message": "Again."}, headers=AUTH).status_code == 201
    shown = client.get(f"/api/incidents/{incident_id}", headers=AUTH).json()
    assert shown["state"] == "investigating" and shown["resolved_at"] is None
