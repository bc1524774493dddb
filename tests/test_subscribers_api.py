"""`/api/subscribers`: public sign-up validated strictly, and the operator's list, get, update,
delete and export. Bad input is a 422 whose `loc` names the field, never a 500."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.models import SuppressionReason
from dispatcher.sandbox.server import Sandbox
from dispatcher.store import AuditEvent
from dispatcher.subscribers import imports, preferences, records
from dispatcher.subscribers.suppressions import suppress
from tests.conftest import API_TOKEN

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
ADA = {
    "name": "Ada",
    "email": "ada@example.org",
    "phone": "+14155550100",
    "channels": ["sms", "email"],
}


def pipeline_of(client: TestClient) -> Pipeline:
    pipeline: Pipeline = client.app.state.pipeline  # type: ignore[attr-defined]
    return pipeline


def fields_in(response_json: dict[str, object]) -> set[str]:
    return {str(error["loc"][1]) for error in response_json["detail"]}  # type: ignore[attr-defined, index]


def operator_add(client: TestClient, **fields: object) -> dict[str, object]:
    response = client.post(
        "/api/subscribers", json={**ADA, "confirmed": True, **fields}, headers=AUTH
    )
    assert response.status_code == 201, response.text
    data: dict[str, object] = response.json()
    return data


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**ADA, "confirmed": True}, "confirmed"),
        ({**ADA, "tier": 9}, "tier"),
        ({**ADA, "internal": True}, "internal"),
        ({**ADA, "webhook": "https://x.example.org/h", "channels": ["webhook"]}, "webhook"),
        ({**ADA, "email": "nope"}, "email"),
        ({**ADA, "phone": "+1 555"}, "phone"),
        ({**ADA, "channels": []}, "channels"),
        ({**ADA, "channels": [""]}, "channels"),
        ({**ADA, "channels": [" ", ""]}, "channels"),
        ({**ADA, "channels": ["pigeon"]}, "channels"),
        ({**ADA, "phone": None}, "channels"),
        ({**ADA, "components": ["nonexistent"]}, "components"),
        ({**ADA, "quiet_start": "25:00", "quiet_end": "07:00"}, "quiet_start"),
        ({**ADA, "timezone": "Mars/Olympus"}, "timezone"),
        ({**ADA, "surprise": 1}, "surprise"),
    ],
)
def test_public_sign_up_is_validated_strictly(
    client: TestClient, body: dict[str, object], field: str
) -> None:
    response = client.post("/api/subscribers", json=body)
    assert response.status_code == 422, response.text
    assert field in fields_in(response.json())
    assert records.list_all(pipeline_of(client).store) == []


def test_public_sign_up_is_pending_and_never_duplicates(
    client: TestClient, sandbox: Sandbox
) -> None:
    pipeline = pipeline_of(client)
    first = client.post("/api/subscribers", json=ADA)
    again = client.post("/api/subscribers", json={**ADA, "name": "Someone else"})
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json(), "the answer does not tell a known address from a new one"
    (ada,) = records.list_all(pipeline.store)
    assert ada.email_confirmed_at is None and ada.phone_confirmed_at is None
    assert len(sandbox.messages("email")) == 2, "the pending confirmation is sent again"
    with pipeline.store.session() as session:
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "subscriber_added")
        ).one()
    assert (event.actor, event.detail["confirmed_by_operator"]) == ("subscriber", False)


def test_public_sign_up_can_be_switched_off(web_settings: object) -> None:
    from dispatcher.settings import Settings
    from dispatcher.web.app import create_app

    assert isinstance(web_settings, Settings)
    settings = web_settings.model_copy(update={"signup_enabled": False})
    with TestClient(create_app(settings)) as running:
        assert running.post("/api/subscribers", json=ADA).status_code == 403
        assert (
            running.post(
                "/api/subscribers", json={**ADA, "confirmed": True}, headers=AUTH
            ).status_code
            == 201
        )


def test_operator_routes_need_the_token(client: TestClient) -> None:
    for method, url in [
        ("GET", "/api/subscribers"),
        ("GET", "/api/subscribers/1"),
        ("PATCH", "/api/subscribers/1"),
        ("DELETE", "/api/subscribers/1"),
        ("GET", "/api/subscribers/export"),
    ]:
        assert client.request(method, url, json={}).status_code == 401
    wrong = {"Authorization": "Bearer wrong"}
    assert client.post("/api/subscribers", json=ADA, headers=wrong).status_code == 401


def test_operator_add_get_list(client: TestClient, sandbox: Sandbox) -> None:
    added = operator_add(
        client, webhook="https://hooks.example.org/x", channels=["webhook", "email"]
    )
    assert added["webhook_secret"], "the signing secret is shown once, when made"
    assert sandbox.messages() == [], "confirmed by the operator: no confirmation is sent"
    got = client.get(f"/api/subscribers/{added['id']}", headers=AUTH).json()
    assert got["email_confirmed"] is True and got["webhook_secret"] is None
    operator_add(client, name="Ben", email="ben@example.org", phone=None, channels=["email"])
    listed = client.get("/api/subscribers", params={"limit": 1, "offset": 1}, headers=AUTH).json()
    assert [s["name"] for s in listed] == ["Ben"]
    missing = client.get("/api/subscribers/99", headers=AUTH)
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no subscriber with id 99"}
    assert client.get("/api/subscribers", params={"limit": 0}, headers=AUTH).status_code == 422


def test_patch_changes_only_what_is_given_and_validates_the_whole(
    client: TestClient, sandbox: Sandbox
) -> None:
    ada = operator_add(client)
    url = f"/api/subscribers/{ada['id']}"
    patched = client.patch(
        url,
        json={"channels": ["email", "sms"], "quiet_start": "22:00", "quiet_end": "07:00"},
        headers=AUTH,
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["channels"] == ["email", "sms"] and body["quiet_start"] == "22:00"
    assert body["email"] == "ada@example.org"

    for bad, field in [
        ({"quiet_start": "23:00", "quiet_end": None}, "body"),
        ({"email": None}, "channels"),
        ({"min_severity": "dire"}, "min_severity"),
        ({"colour": "blue"}, "colour"),
        ({"unsubscribed": "maybe"}, "unsubscribed"),
    ]:
        response = client.patch(url, json=bad, headers=AUTH)
        assert response.status_code == 422, (bad, response.text)
        locs = [error["loc"] for error in response.json()["detail"]]
        assert any(field in loc for loc in locs), (bad, locs)
    assert client.get(url, headers=AUTH).json()["quiet_end"] == "07:00", "nothing changed"

    moved = client.patch(url, json={"phone": "+14155550199"}, headers=AUTH).json()
    assert moved["phone_confirmed"] is False, "a new number starts unconfirmed"
    assert [m["to"] for m in sandbox.messages("sms")] == ["+14155550199"]
    vouched = client.patch(url, json={"phone": "+14155550177", "confirmed": True}, headers=AUTH)
    assert vouched.json()["phone_confirmed"] is True

    assert client.patch(url, json={"unsubscribed": True}, headers=AUTH).json()["unsubscribed"]
    assert not client.patch(url, json={"unsubscribed": False}, headers=AUTH).json()["unsubscribed"]
    assert client.patch("/api/subscribers/99", json={}, headers=AUTH).status_code == 404


def test_delete_erases_the_subscriber_but_keeps_the_opt_out(client: TestClient) -> None:
    ada = operator_add(client)
    pipeline = pipeline_of(client)
    with pipeline.store.session() as session:
        suppress(session, "email", "ada@example.org", SuppressionReason.UNSUBSCRIBED, actor="t")
    assert client.delete(f"/api/subscribers/{ada['id']}", headers=AUTH).status_code == 204
    assert client.get(f"/api/subscribers/{ada['id']}", headers=AUTH).status_code == 404
    assert client.delete(f"/api/subscribers/{ada['id']}", headers=AUTH).status_code == 404
    again = operator_add(client)
    with pipeline.store.session() as session:
        row = records.find_by_address(session, "ada@example.org", None)
        assert row is not None and row.id == again["id"]
        assert records.opt_outs(session, row) == {"email": SuppressionReason.UNSUBSCRIBED}


def test_export_json_and_csv_round_trips_through_import(client: TestClient, tmp_path: Path) -> None:
    operator_add(
        client, components=[], quiet_start="22:00", quiet_end="07:00", timezone="Europe/Paris"
    )
    operator_add(
        client, name="=HYPERLINK(1)", email="ben@example.org", phone=None, channels=["email"]
    )
    as_json = client.get("/api/subscribers/export", headers=AUTH)
    assert as_json.headers["content-disposition"].startswith("attachment;")
    rows = json.loads(as_json.text)
    assert [r["name"] for r in rows] == ["Ada", "=HYPERLINK(1)"]
    assert rows[0]["timezone"] == "Europe/Paris" and rows[0]["channels"] == ["sms", "email"]

    as_csv = client.get("/api/subscribers/export", params={"format": "csv"}, headers=AUTH)
    assert as_csv.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert table[0]["phone"] == "+14155550100" and table[0]["channels"] == "sms;email"
    assert table[1]["name"] == "'=HYPERLINK(1)", "a formula is not run by a spreadsheet"
    exported = tmp_path / "export.csv"
    exported.write_text(as_csv.text)
    pipeline = pipeline_of(client)
    again = imports.import_file(pipeline.store, pipeline.registry, exported)
    assert (again.imported, again.errors, len(again.skipped)) == (0, [], 2), "never twice"
    for row in rows:
        preferences.erase(pipeline.store, row["id"], actor="operator")
    report = imports.import_file(pipeline.store, pipeline.registry, exported)
    assert (report.imported, report.errors) == (2, [])
    assert [s.timezone for s in records.list_all(pipeline.store)] == ["Europe/Paris", "UTC"]
    assert (
        client.get("/api/subscribers/export", params={"format": "xml"}, headers=AUTH).status_code
        == 422
    )


def test_a_name_with_control_characters_is_refused_not_a_server_error(client: TestClient) -> None:
    answer = client.post(
        "/api/subscribers",
        json={"name": "Eve\u0000", "email": "eve@example.org", "channels": ["email"]},
    )
    assert answer.status_code == 422
    assert "name" in answer.text
