"""More for those hit hardest: an update's note for a segment reaches only the subscribers in it,
in every channel's message (SMS only when it fits), and the team sees every note with its
segment; whoever is told of an incident only when its scope widens reads the story so far,
once. Through the CLI and the HTTP app, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.sandbox.server import Sandbox
from tests.conftest import API_TOKEN
from tests.scoping import CY_PHONE, add, body_for, cli_env, outage, people

__all__ = ["cli_env"]  # the fixture, imported

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
CALL = "Your account manager will call you within the hour."


def open_incident(*args: str) -> dict[str, object]:
    code, out, err = outage(
        "incident", "open", "--title", "Login fails in Europe", "--severity", "major",
        "--component", "api", "--message", "Some logins fail.", "--json", *args,
    )  # fmt: skip
    assert code == 0, err
    answer: dict[str, object] = json.loads(out)
    return answer


def test_a_segment_note_reaches_only_the_segment_and_the_team_sees_it_marked(
    cli_env: str, pipeline: Pipeline, sandbox: Sandbox
) -> None:
    people(pipeline)
    open_incident("--affects", "region=eu-west", "--note-for", "plan=enterprise", CALL)
    (ana,) = body_for(sandbox, "ana")
    assert "Some logins fail." in ana and CALL in ana
    (ben,) = body_for(sandbox, "ben")
    assert "Some logins fail." in ben and CALL not in ben
    (dee,) = body_for(sandbox, "dee")
    assert CALL not in dee, "without the attribute, not in the segment (OUTAGE_UNSCOPED aside)"
    (team,) = body_for(sandbox, "team")
    assert f"[For plan=enterprise] {CALL}" in team
    (html,) = [m["html"] for m in sandbox.messages("email") if m["to"] == "ana@example.org"]
    assert CALL in html


def test_an_sms_carries_the_note_only_when_it_fits(
    cli_env: str, pipeline: Pipeline, sandbox: Sandbox
) -> None:
    add(pipeline, "cy", email=None, phone=CY_PHONE, channels=["sms"],
        attributes={"plan": "enterprise"})  # fmt: skip
    open_incident("--note-for", "plan=enterprise", "Call 0800 123 456.")
    (short,) = body_for(sandbox, "cy")
    assert "Call 0800 123 456." in short and "Some logins fail." in short
    sandbox.clear()
    long_note = "Your account manager will call you within the hour. " * 4
    open_incident("--note-for", "plan=enterprise", long_note.strip())
    (fitted,) = body_for(sandbox, "cy")
    assert "account manager" not in fitted, "a note that does not fit is left out"
    assert "Some logins fail." in fitted, "the operator's message is kept whole"


def test_notes_for_several_segments_by_api_reach_webhooks_too(
    client: TestClient, sandbox: Sandbox
) -> None:
    pipeline: Pipeline = client.app.state.pipeline  # type: ignore[attr-defined]
    add(pipeline, "hook", email=None, webhook="https://hooks.example.org/acme",
        channels=["webhook"], attributes={"account": "acme", "plan": "enterprise"})  # fmt: skip
    add(pipeline, "eve", attributes={"account": "globex", "plan": "enterprise"})
    opened = client.post(
        "/api/incidents",
        json={
            "title": "Reports are late", "severity": "minor", "components": ["api"],
            "notes": [
                {"segment": {"plan": ["enterprise"]}, "text": "Priority support: +1 555 0100."},
                {"segment": {"account": ["acme"], "plan": ["enterprise"]},
                 "text": "Your nightly export will be re-run."},
            ],
        },
        headers=AUTH,
    )  # fmt: skip
    assert opened.status_code == 201, opened.text
    pipeline.fan_out(opened.json()["update_id"])
    pipeline.drain(wait_s=5)
    (hook,) = [json.loads(m["body"]) for m in sandbox.messages("webhook")]
    assert hook["update"]["note"] == (
        "Priority support: +1 555 0100.\nYour nightly export will be re-run."
    )
    assert "re-run" in hook["text"]
    (eve,) = body_for(sandbox, "eve")
    assert "Priority support" in eve and "re-run" not in eve


def test_a_bad_note_is_a_422_naming_it(client: TestClient) -> None:
    for note in ({"segment": {}, "text": "x"}, {"segment": {"plan": ["a b"]}, "text": "x"},
                 {"segment": {"plan": ["pro"]}, "text": " "}, {"text": "x"}):  # fmt: skip
        body = {"title": "x", "severity": "minor", "components": ["api"], "notes": [note]}
        response = client.post("/api/incidents", json=body, headers=AUTH)
        assert response.status_code == 422, note
        assert response.json()["detail"][0]["loc"][:3] == ["body", "notes", 0]
    assert client.get("/api/incidents", headers=AUTH).json() == []


def test_the_newly_affected_read_the_story_so_far_once(
    cli_env: str, pipeline: Pipeline, sandbox: Sandbox
) -> None:
    people(pipeline)
    add(pipeline, "fay", attributes={"region": "us-east"})
    opened = open_incident("--affects", "region=eu-west")
    sandbox.clear()
    code, _, err = outage(
        "incident", "update", str(opened["incident_id"]), "--state", "identified", "--message",
        "A certificate expired; renewing it.", "--affects", "region=eu-west", "--affects",
        "region=us-east",
    )  # fmt: skip
    assert code == 0, err
    (fay,) = body_for(sandbox, "fay")
    assert "A certificate expired; renewing it." in fay
    assert "So far:" in fay and "Investigating: Some logins fail." in fay
    (cy,) = body_for(sandbox, "cy")  # by text: the update, its message shortened to fit the link
    assert "We found the cause" in cy and "So far:" not in cy
    (ana,) = body_for(sandbox, "ana")
    assert "So far:" not in ana, "told before: no story again"
    sandbox.clear()
    code, _, err = outage(
        "incident", "update", str(opened["incident_id"]), "--state", "monitoring", "--message",
        "Renewed; watching.",
    )  # fmt: skip
    assert code == 0, err
    (fay,) = body_for(sandbox, "fay")
    assert "So far:" not in fay, "the story is told once"
