"""`/api/incidents`: the same operations as the CLI, for scripts, behind the operator token."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.conftest import API_TOKEN

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
    ],
)
def test_bad_incident_is_422_naming_the_field(
    client: TestClient, body: dict[str, object], field: str
) -> None:
    answer = client.post("/api/incidents", json=body, headers=AUTH)
    assert answer.status_code == 422
    assert field in answer.text


def test_operator_token_is_required(client: TestClient) -> None:
    assert client.get("/api/incidents").status_code == 401
    assert client.get("/api/incidents", headers={"Authorization": "Bearer no"}).status_code == 401
    assert client.post("/api/incidents", json=INCIDENT).status_code == 401
