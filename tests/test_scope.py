"""Incidents with a scope: only the subscribers whose attributes match are told, the rest are left
alone; a scope widens (the newly affected are told) and never narrows silently; a scoped
incident stays off the public page, the feed and the X account unless made public. Through the
CLI and the HTTP app, on SQLite and PostgreSQL; the dry run counts without keeping anything.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.sandbox.server import Sandbox
from dispatcher.store import AuditEvent, Delivery, Incident, Update
from tests.conftest import API_TOKEN
from tests.scoping import add, cli_env, outage, people, settled, told

__all__ = ["cli_env"]  # the fixture, imported

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
NOON = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def open_scoped(*args: str) -> dict[str, object]:
    code, out, err = outage(
        "incident", "open", "--title", "Login fails in Europe", "--severity", "major",
        "--component", "api", "--json", *args,
    )  # fmt: skip
    assert code == 0, err
    answer: dict[str, object] = json.loads(out)
    return answer


def test_only_matching_subscribers_the_unscoped_and_the_team_are_told(
    cli_env: str, pipeline: Pipeline, sandbox: Sandbox
) -> None:
    people(pipeline)
    code, out, err = outage(
        "incident", "open", "--title", "Login fails in Europe", "--severity", "major",
        "--component", "api", "--affects", "region=eu-west",
    )  # fmt: skip
    assert code == 0, err
    assert "told 4 of 5: region=eu-west" in out
    assert "by scope: region not set 1, region=eu-west 2, the team 1" in out
    assert told(sandbox) == ["ana", "ben", "dee", "team"]
    assert sandbox.messages("social") == [], "a scoped incident is not posted publicly"
    code, out, _ = outage("incident", "show", "1")
    assert code == 0 and "affects region=eu-west (private)" in out
    code, out, _ = outage("incident", "show", "1", "--json")
    shown = json.loads(out)
    assert (shown["scope"], shown["private"]) == ({"region": ["eu-west"]}, True)


def test_unscoped_exclude_leaves_subscribers_without_the_attribute_alone(
    cli_env: str, pipeline: Pipeline, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    people(pipeline)
    monkeypatch.setenv("OUTAGE_UNSCOPED", "exclude")
    answer = open_scoped("--affects", "region=eu-west")
    assert answer["reach"]["told"] == 3  # type: ignore[index]
    assert told(sandbox) == ["ana", "ben", "team"]


def test_or_within_a_key_and_across_keys(
    cli_env: str, pipeline: Pipeline, sandbox: Sandbox
) -> None:
    people(pipeline)
    open_scoped("--affects", "region=eu-west", "--affects", "region=us-east", "--affects",
                "plan=enterprise")  # fmt: skip
    # Ana (eu-west, enterprise); Cy has no plan and Dee nothing: told, as OUTAGE_UNSCOPED says.
    assert told(sandbox) == ["ana", "cy", "dee", "team"]


def test_a_widened_scope_tells_the_newly_affected_once_on_every_channel(
    cli_env: str, pipeline: Pipeline, sandbox: Sandbox
) -> None:
    people(pipeline)
    opened = open_scoped("--affects", "region=eu-west")
    sandbox.clear()
    code, out, err = outage(
        "incident", "update", str(opened["incident_id"]), "--state", "identified", "--message",
        "A certificate expired.", "--affects", "region=eu-west", "--affects", "region=us-east",
    )  # fmt: skip
    assert code == 0, err
    assert "told 5 of 5: region=eu-west,us-east" in out
    assert "told for the first time (with the story so far): 1" in out
    # Cy only takes texts, which carry an incident's opening and end: for Cy this is the opening.
    assert [m["to"] for m in sandbox.messages("sms")] == ["+14155550101"]
    assert told(sandbox) == ["ana", "ben", "cy", "dee", "team"]
    sandbox.clear()
    code, _, err = outage(
        "incident", "update", str(opened["incident_id"]), "--state", "identified", "--message",
        "Renewed; watching.",
    )  # fmt: skip
    assert code == 0, err
    assert sandbox.messages("sms") == [], "told once: the next update follows Cy's cadence"


def test_a_narrowed_scope_still_reaches_everyone_told_before(
    cli_env: str, pipeline: Pipeline, sandbox: Sandbox
) -> None:
    people(pipeline)
    opened = open_scoped("--affects", "region=eu-west")
    sandbox.clear()
    code, out, err = outage(
        "incident", "update", str(opened["incident_id"]), "--state", "monitoring", "--message",
        "It was only in us-east after all.", "--affects", "region=us-east", "--json",
    )  # fmt: skip
    assert code == 0, err
    reach = json.loads(out)["reach"]
    assert reach["segments"] == {
        "told before": 2,  # Ana and Ben, out of the new scope, still told
        "region=us-east": 1,
        "region not set": 1,
        "the team": 1,
    }
    assert reach["newcomers"] == 1  # Cy, by text: for Cy the incident opens now
    assert told(sandbox) == ["ana", "ben", "cy", "dee", "team"]
    with pipeline.store.session() as session:
        incident = session.get_one(Incident, opened["incident_id"])
        assert incident.scope == {"region": ["us-east"]}
        scopes = session.scalars(select(Update.scope).order_by(Update.id)).all()
    assert scopes == [{"region": ["eu-west"]}, {"region": ["us-east"]}]


def test_everyone_lifts_the_scope_and_makes_the_incident_public(
    cli_env: str, pipeline: Pipeline, sandbox: Sandbox
) -> None:
    people(pipeline)
    opened = open_scoped("--affects", "region=eu-west")
    code, out, err = outage(
        "incident", "update", str(opened["incident_id"]), "--state", "identified", "--message",
        "Everyone is affected.", "--everyone",
    )  # fmt: skip
    assert code == 0, err
    assert "told 5\n" in out
    assert len(sandbox.messages("social")) == 1
    with pipeline.store.session() as session:
        incident = session.get_one(Incident, opened["incident_id"])
        assert (incident.scope, incident.private) == ({}, False)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--affects", "region"), "--affects: 'region' is not key=value"),
        (("--affects", "region=eu west"), "--affects: region 'eu west' is not a short slug"),
        (("--note-for", "plan", "x"), "--note-for: 'plan' is not key=value"),
        (("--note-for", "plan=pro", " "), "--note-for: text: must not be blank"),
    ],
)
def test_a_bad_scope_is_refused_naming_the_option_and_nothing_is_stored(
    cli_env: str, pipeline: Pipeline, args: tuple[str, ...], named: str
) -> None:
    code, _, err = outage(
        "incident", "open", "--title", "x", "--severity", "major", "--component", "api", *args
    )
    assert code == 2 and named in err, err
    assert "Traceback" not in err
    with pipeline.store.session() as session:
        assert session.scalar(select(func.count()).select_from(Incident)) == 0


def test_update_refuses_everyone_with_affects_and_a_second_note(cli_env: str) -> None:
    code, _, err = outage(
        "incident", "update", "1", "--state", "identified", "--message", "m", "--everyone",
        "--affects", "region=x",
    )  # fmt: skip
    assert code == 2 and "--everyone: give it or --affects, not both" in err
    code, _, err = outage(
        "incident", "update", "1", "--state", "identified", "--message", "m", "--note-for",
        "plan=a", "one", "--note-for", "plan=b", "two",
    )  # fmt: skip
    assert code == 2 and "--note-for" in err and "give it once" in err


@pytest.mark.time_machine(NOON, tick=False)
def test_dry_run_counts_channels_scope_values_and_held_and_keeps_nothing(
    cli_env: str, pipeline: Pipeline, sandbox: Sandbox
) -> None:
    people(pipeline)
    with pipeline.store.session() as session:  # Ben's quiet hours are now (UTC)
        session.execute(text("UPDATE subscribers SET quiet_start='10:00', quiet_end='14:00' "
                             "WHERE name='ben'"))  # fmt: skip
    before = counts(pipeline)
    code, out, err = outage(
        "incident", "open", "--title", "Login fails", "--severity", "major", "--component",
        "api", "--affects", "region=eu-west", "--affects", "region=us-east", "--dry-run",
    )  # fmt: skip
    assert code == 0, err
    assert "dry run: nothing is stored and nothing is sent" in out
    assert "would be told 5 of 5: region=eu-west,us-east" in out
    assert "by channel: email 4, sms 1" in out
    assert "by scope: region not set 1, region=eu-west 2, region=us-east 1, the team 1" in out
    assert "held: quiet_hours 1" in out
    assert "private: not on the public page" in out

    code, out, err = outage(
        "incident", "open", "--title", "Login fails", "--severity", "major", "--component",
        "api", "--affects", "region=eu-west", "--dry-run", "--json",
    )  # fmt: skip
    assert code == 0, err
    preview = json.loads(out)
    assert preview == {
        "dry_run": True,
        "scope": {"region": ["eu-west"]},
        "private": True,
        "told": 4,
        "of": 5,
        "channels": {"email": 4},
        "public": [],
        "held": {"quiet_hours": 1},
        "segments": {"region=eu-west": 2, "region not set": 1, "the team": 1},
        "newcomers": 0,
    }
    assert sandbox.messages() == []
    assert counts(pipeline) == before, "no incident, update, delivery or audit event is kept"

    # The real command states the same counts.
    answer = open_scoped("--affects", "region=eu-west")
    assert {"dry_run": True, **answer["reach"]} == preview | {  # type: ignore[dict-item]
        "incident_id": answer["incident_id"],
        "update_id": answer["update_id"],
    }


def test_dry_run_of_an_update_refuses_what_the_update_would(
    cli_env: str, pipeline: Pipeline
) -> None:
    people(pipeline)
    opened = open_scoped("--affects", "region=eu-west")
    code, out, err = outage(
        "incident", "update", str(opened["incident_id"]), "--state", "identified", "--message",
        "m", "--affects", "region=us-east", "--dry-run",
    )  # fmt: skip
    assert code == 0, err
    assert "would be told 5 of 5: region=us-east" in out
    assert "told before 2" in out
    code, _, err = outage(
        "incident", "update", "99", "--state", "identified", "--message", "m", "--dry-run"
    )
    assert code == 2 and "no incident with id 99" in err
    with pipeline.store.session() as session:
        assert session.get_one(Incident, opened["incident_id"]).scope == {"region": ["eu-west"]}


def counts(pipeline: Pipeline) -> tuple[int, ...]:
    with pipeline.store.session() as session:
        return tuple(
            session.scalar(select(func.count()).select_from(table)) or 0
            for table in (Incident, Update, Delivery, AuditEvent)
        )


def test_a_scoped_incident_stays_off_every_public_place_unless_public(
    client: TestClient, sandbox: Sandbox
) -> None:
    pipeline: Pipeline = client.app.state.pipeline  # type: ignore[attr-defined]
    people(pipeline)
    scoped = client.post(
        "/api/incidents",
        json={"title": "Login fails in Europe", "severity": "major", "components": ["api"],
              "affects": {"region": ["eu-west"]}},
        headers=AUTH,
    )  # fmt: skip
    assert scoped.status_code == 201, scoped.text
    assert scoped.json()["reach"]["told"] == 4
    incident_id = scoped.json()["incident_id"]
    assert "Login fails in Europe" not in client.get("/").text
    assert "Login fails in Europe" not in client.get("/feed.atom").text
    assert client.get("/api/status").json()["incidents"] == []
    assert client.get(f"/incidents/{incident_id}").status_code == 404
    listed = client.get(f"/api/incidents/{incident_id}", headers=AUTH).json()
    assert (listed["scope"], listed["private"]) == ({"region": ["eu-west"]}, True)

    public = client.post(
        "/api/incidents",
        json={"title": "Search is slow in Europe", "severity": "major", "components": ["api"],
              "affects": {"region": ["eu-west"]}, "public": True},
        headers=AUTH,
    )  # fmt: skip
    assert public.status_code == 201
    assert public.json()["reach"]["public"] == ["social"]
    assert "Search is slow in Europe" in client.get("/").text
    assert client.get(f"/incidents/{public.json()['incident_id']}").status_code == 200
    posts = settled(lambda: [m["body"] for m in sandbox.messages("social")])
    assert len(posts) == 1 and "Search is slow" in posts[0]


def test_api_dry_run_counts_and_keeps_nothing(client: TestClient, sandbox: Sandbox) -> None:
    pipeline: Pipeline = client.app.state.pipeline  # type: ignore[attr-defined]
    people(pipeline)
    body = {"title": "Login fails", "severity": "major", "components": ["api"],
            "affects": {"region": ["eu-west"], "plan": ["enterprise"]}}  # fmt: skip
    preview = client.post("/api/incidents?dry_run=true", json=body, headers=AUTH)
    assert preview.status_code == 200, preview.text
    assert preview.json() | {"held": {}} == {
        "dry_run": True,
        "scope": {"plan": ["enterprise"], "region": ["eu-west"]},
        "private": True,
        "told": 3,
        "of": 5,
        "channels": {"email": 3},
        "public": [],
        "held": {},
        "segments": {
            "plan=enterprise": 1,
            "region=eu-west": 1,
            "plan not set": 1,
            "region not set": 1,
            "the team": 1,
        },
        "newcomers": 0,
    }
    assert client.get("/api/incidents", headers=AUTH).json() == []
    assert sandbox.messages() == []

    opened = client.post("/api/incidents", json=body, headers=AUTH).json()
    pipeline.fan_out(opened["update_id"])  # its rows written now, not when the runner gets to it
    update = {"state": "identified", "message": "m", "affects": {"region": ["us-east"]}}
    url = f"/api/incidents/{opened['incident_id']}/updates"
    preview = client.post(f"{url}?dry_run=true", json=update, headers=AUTH)
    assert preview.status_code == 200
    assert preview.json()["segments"]["told before"] == 1  # Ana, out of the new scope
    assert client.post(f"{url}?dry_run=true", json={**update, "state": "resolved"},
                       headers=AUTH).status_code == 200  # fmt: skip
    missing = client.post("/api/incidents/99/updates?dry_run=true", json=update, headers=AUTH)
    assert missing.status_code == 404
    real = client.post(url, json=update, headers=AUTH)
    assert real.status_code == 201
    assert real.json()["reach"]["scope"] == {"region": ["us-east"]}


@pytest.mark.parametrize(
    "affects",
    [{"region": "eu west"}, {"region": []}, {"Re gion": ["x"]}, ["region"], {"region": [1]}],
)
def test_api_refuses_a_bad_scope_with_a_422_naming_it(client: TestClient, affects: object) -> None:
    body = {"title": "x", "severity": "major", "components": ["api"], "affects": affects}
    response = client.post("/api/incidents", json=body, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][:2] == ["body", "affects"]
    assert client.get("/api/incidents", headers=AUTH).json() == []


def test_key_accounts_still_go_first_within_a_scope(pipeline: Pipeline) -> None:
    add(pipeline, "low", attributes={"region": "eu-west"})
    add(pipeline, "key", tier=5, attributes={"region": "eu-west"})
    add(pipeline, "away", attributes={"region": "us-east"})
    from dispatcher.incidents import lifecycle
    from dispatcher.models import IncidentIn

    posted = lifecycle.open_incident(
        pipeline.store,
        IncidentIn(title="x", severity="major", components=["api"],
                   affects={"region": ["eu-west"]}),
    )  # fmt: skip
    pipeline.fan_out(posted.update_id)
    with pipeline.store.session() as session:
        rows = session.execute(
            select(Delivery.recipient, Delivery.priority).order_by(Delivery.priority.desc())
        ).all()
    assert [priority for _, priority in rows] == [52, 2]
    assert len(rows) == 2, "us-east is left alone"


def test_choosing_a_scoped_audience_uses_the_attribute_index(pipeline: Pipeline) -> None:
    """On SQLite and PostgreSQL the database finds the subscribers by (key, value) through the
    index, not by reading every attribute row."""
    from dispatcher.policy.scope import sql_condition
    from dispatcher.store import Subscriber

    query = select(Subscriber.id).where(sql_condition({"region": ["eu-west"]}, "exclude"))
    with pipeline.store.session() as session:
        compiled = query.compile(session.get_bind(), compile_kwargs={"literal_binds": True})
        if pipeline.store.dialect == "sqlite":
            plan = session.execute(text(f"EXPLAIN QUERY PLAN {compiled}")).all()
            detail = " ".join(str(row[-1]) for row in plan)
        else:
            session.execute(text("SET LOCAL enable_seqscan = off"))
            plan = session.execute(text(f"EXPLAIN {compiled}")).all()
            detail = " ".join(str(row[0]) for row in plan)
    assert "ix_subscriber_attributes_key_value" in detail, detail
