"""Subscriber attributes (region=eu-west, plan=enterprise), set by an operator: the CLI, CSV
columns `attr:<key>`, the subscriber API and the preference centre, on SQLite and PostgreSQL.

Keys and values are short slugs; a bad one is exit 2 or a 422 naming it, and changes nothing.
Subscribers see their attributes in the preference centre and cannot change them there.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.links import LinkPurpose
from dispatcher.models import SubscriberIn
from dispatcher.store import SubscriberAttribute
from dispatcher.subscribers import imports, preferences, records
from tests.conftest import API_TOKEN
from tests.scoping import cli_env, outage

__all__ = ["cli_env"]  # the fixture, imported

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
ADA = {"name": "Ada", "email": "ada@example.org", "channels": ["email"]}


def add_ada(*extra: str) -> dict[str, object]:
    code, out, err = outage(
        "subscriber", "add", "--name", "Ada", "--email", "ada@example.org", "--channels",
        "email", "--confirmed", *extra, "--json",
    )  # fmt: skip
    assert code == 0, err
    added: dict[str, object] = json.loads(out)
    return added


def test_cli_adds_shows_lists_and_updates_attributes(cli_env: str) -> None:
    ada = add_ada("--attr", "region=eu-west", "--attr", "Plan=Pro")
    assert ada["attributes"] == {"plan": "pro", "region": "eu-west"}, "slugs, lower case"

    code, out, _ = outage("subscriber", "show", str(ada["id"]), "--json")
    assert code == 0 and json.loads(out)["attributes"] == ada["attributes"]
    code, out, _ = outage("subscriber", "show", str(ada["id"]))
    assert code == 0 and "plan=pro region=eu-west" in out
    code, out, _ = outage("subscriber", "list")
    assert code == 0 and "plan=pro" in out  # one pair a line (a long one folds at 80 columns)
    code, out, _ = outage("subscriber", "list", "--json")
    assert json.loads(out)[0]["attributes"] == ada["attributes"]

    code, out, err = outage(
        "subscriber", "update", str(ada["id"]), "--attr", "account=acme", "--attr",
        "plan=pro", "--unset-attr", "region", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["attributes"] == {"account": "acme", "plan": "pro"}
    code, out, _ = outage("subscriber", "update", str(ada["id"]), "--unset-attr", "plan")
    assert code == 0 and "attributes: account=acme" in out


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--attr", "region"), "--attr: 'region' is not key=value"),
        (("--attr", "region=eu west"), "--attr: region 'eu west' is not a short slug"),
        (("--attr", "rég=x"), "--attr: key 'rég' is not a short slug"),
        (("--attr", "region=a", "--attr", "region=b"), "--attr: 'region' is given twice"),
        (("--attr", "a=" + "x" * 65), "--attr: a 'xxxx"),
    ],
)
def test_cli_refuses_a_bad_attribute_naming_the_option(
    cli_env: str, args: tuple[str, ...], named: str
) -> None:
    code, _, err = outage(
        "subscriber", "add", "--name", "Ada", "--email", "ada@example.org", "--channels",
        "email", *args,
    )  # fmt: skip
    assert code == 2
    assert named in err and "Traceback" not in err
    code, out, _ = outage("subscriber", "list", "--json")
    assert json.loads(out) == [], "nothing was stored"


def test_cli_update_refuses_bad_changes_and_keeps_the_attributes(cli_env: str) -> None:
    ada = add_ada("--attr", "region=eu-west")
    for args, named in (
        (("--attr", "region=x", "--unset-attr", "region"), "--unset-attr: 'region' is also"),
        (("--unset-attr", "no good"), "--unset-attr: key 'no good' is not a short slug"),
        ((), "--attr or --unset-attr: say what to change"),
        (("--attr", "plan=a b"), "--attr: plan 'a b' is not a short slug"),
    ):
        code, _, err = outage("subscriber", "update", str(ada["id"]), *args)
        assert code == 2 and named in err, err
    code, _, err = outage("subscriber", "update", "999", "--attr", "plan=x")
    assert code == 2 and "no subscriber with id 999" in err
    code, out, _ = outage("subscriber", "show", str(ada["id"]), "--json")
    assert json.loads(out)["attributes"] == {"region": "eu-west"}


def test_csv_import_reads_attr_columns_and_reports_a_bad_one_by_line(
    cli_env: str, tmp_path: Path
) -> None:
    path = tmp_path / "people.csv"
    path.write_text(
        "name,email,channels,confirmed,attr:region,attr:plan\n"
        "Ada,ada@example.org,email,yes,eu-west,enterprise\n"
        "Ben,ben@example.org,email,yes,,free\n"
        "Cy,cy@example.org,email,yes,eu west,free\n"
    )
    code, out, err = outage("subscriber", "import", str(path))
    assert code == 1
    assert "imported 2 subscribers" in out
    assert "line 4:" in err and "region 'eu west' is not a short slug" in err
    code, out, _ = outage("subscriber", "list", "--json")
    assert [s["attributes"] for s in json.loads(out)] == [
        {"plan": "enterprise", "region": "eu-west"},
        {"plan": "free"},
    ]


def pipeline_of(client: TestClient) -> Pipeline:
    pipeline: Pipeline = client.app.state.pipeline  # type: ignore[attr-defined]
    return pipeline


def test_api_sets_patches_and_exports_attributes(client: TestClient, tmp_path: Path) -> None:
    response = client.post(
        "/api/subscribers",
        json={**ADA, "confirmed": True, "attributes": {"region": "eu-west", "plan": "pro"}},
        headers=AUTH,
    )
    assert response.status_code == 201, response.text
    ada = response.json()
    assert ada["attributes"] == {"plan": "pro", "region": "eu-west"}

    patched = client.patch(
        f"/api/subscribers/{ada['id']}",
        json={"attributes": {"plan": "enterprise", "region": None, "account": "acme"}},
        headers=AUTH,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["attributes"] == {"account": "acme", "plan": "enterprise"}
    assert client.get(f"/api/subscribers/{ada['id']}", headers=AUTH).json()["attributes"] == {
        "account": "acme",
        "plan": "enterprise",
    }

    exported = client.get("/api/subscribers/export?format=csv", headers=AUTH)
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert rows[0]["attr:account"] == "acme" and rows[0]["attr:plan"] == "enterprise"
    as_json = client.get("/api/subscribers/export?format=json", headers=AUTH).json()
    assert as_json[0]["attributes"] == {"account": "acme", "plan": "enterprise"}

    # The export imports back, attributes and all.
    pipeline = pipeline_of(client)
    preferences.erase(pipeline.store, ada["id"], actor="operator")
    path = tmp_path / "export.csv"
    path.write_text(exported.text)
    report = imports.import_file(pipeline.store, pipeline.registry, path)
    assert report.imported == 1 and report.errors == []
    (again,) = records.list_all(pipeline.store)
    assert again.attributes == {"account": "acme", "plan": "enterprise"}


@pytest.mark.parametrize(
    "attributes",
    [{"region": "eu west"}, {"Re gion": "x"}, {"region": 3}, ["region"], {"a": "x" * 65}],
)
def test_api_refuses_a_bad_attribute_with_a_422_naming_it(
    client: TestClient, attributes: object
) -> None:
    response = client.post(
        "/api/subscribers", json={**ADA, "confirmed": True, "attributes": attributes}, headers=AUTH
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][:2] == ["body", "attributes"]
    assert client.get("/api/subscribers", headers=AUTH).json() == []


def test_api_patch_refuses_bad_attributes_and_changes_nothing(client: TestClient) -> None:
    ada = client.post(
        "/api/subscribers",
        json={**ADA, "confirmed": True, "attributes": {"region": "eu-west"}},
        headers=AUTH,
    ).json()
    for body in (
        {"attributes": {"region": "eu west"}},
        {"attributes": ["x"]},
        {"attributes": {"a": 1}},
    ):
        response = client.patch(f"/api/subscribers/{ada['id']}", json=body, headers=AUTH)
        assert response.status_code == 422, body
        assert "attributes" in json.dumps(response.json()["detail"])
    got = client.get(f"/api/subscribers/{ada['id']}", headers=AUTH).json()
    assert got["attributes"] == {"region": "eu-west"}


def test_a_public_sign_up_cannot_set_attributes(client: TestClient) -> None:
    response = client.post("/api/subscribers", json={**ADA, "attributes": {"plan": "enterprise"}})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "attributes"]
    assert client.get("/api/subscribers", headers=AUTH).json() == []


def test_the_preference_centre_shows_attributes_and_cannot_change_them(
    client: TestClient,
) -> None:
    pipeline = pipeline_of(client)
    ada = records.add(
        pipeline.store,
        pipeline.registry,
        SubscriberIn.model_validate(
            {**ADA, "confirmed": True, "attributes": {"region": "eu-west", "plan": "pro"}}
        ),
    )
    page = urlsplit(pipeline.links.url(LinkPurpose.MANAGE, ada)).path
    shown = client.get(page).text
    assert "<dt>plan</dt><dd>pro</dd>" in shown and "<dt>region</dt><dd>eu-west</dd>" in shown
    # A hand-made form carrying attributes in every shape: saved, attributes untouched.
    response = client.post(
        page,
        data={
            "order": ["email"],
            "channels": ["email"],
            "email": "ada@example.org",
            "min_severity": "major",
            "timezone": "UTC",
            "locale": "en",
            "attributes": "plan=enterprise",
            "attr:plan": "enterprise",
            "plan": "enterprise",
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    saved = preferences.get(pipeline.store, ada.id)
    assert saved.min_severity == "major"
    assert saved.attributes == {"plan": "pro", "region": "eu-west"}


def test_erasing_a_subscriber_removes_their_attributes(client: TestClient) -> None:
    pipeline = pipeline_of(client)
    ada = records.add(
        pipeline.store,
        pipeline.registry,
        SubscriberIn.model_validate({**ADA, "attributes": {"region": "eu-west"}}),
    )
    preferences.erase(pipeline.store, ada.id, actor="operator")
    with pipeline.store.session() as session:
        assert session.scalar(select(func.count()).select_from(SubscriberAttribute)) == 0
