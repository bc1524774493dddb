"""Private status pages: each subscriber's signed page lists the public incidents and the private
ones that concern them, with the same timeline and history bars, and its own Atom feed; their
messages about a private incident link there. A bad link changes and shows nothing. Over HTTP
and the CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import time
from urllib.parse import urlsplit
from xml.etree import ElementTree as ET

import pytest
import time_machine
from fastapi.testclient import TestClient

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents import lifecycle
from dispatcher.links import LinkPurpose
from dispatcher.models import IncidentIn, IncidentState
from dispatcher.sandbox.server import Sandbox
from dispatcher.subscribers import preferences
from tests.conftest import API_TOKEN
from tests.scoping import CY_PHONE, add, cli_env, outage, settled

__all__ = ["cli_env"]  # the fixture, imported

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
ATOM = "{http://www.w3.org/2005/Atom}"


def pipeline_of(client: TestClient) -> Pipeline:
    pipeline: Pipeline = client.app.state.pipeline  # type: ignore[attr-defined]
    return pipeline


def page_path(pipeline: Pipeline, subscriber_id: int) -> str:
    return urlsplit(
        pipeline.links.url(LinkPurpose.PAGE, preferences.get(pipeline.store, subscriber_id))
    ).path


def open_incident(pipeline: Pipeline, title: str, **fields: object) -> int:
    data = IncidentIn.model_validate(
        {"title": title, "severity": "major", "components": ["api"]} | fields
    )
    with pipeline.store.session() as session:
        posted = lifecycle.create(session, data)
    pipeline.fan_out(posted.update_id)
    return posted.incident_id


@pytest.fixture
def world(client: TestClient) -> dict[str, int]:
    """Ana in eu-west, Bo in us-east, the team; an incident for each region and a public one."""
    pipeline = pipeline_of(client)
    ids = {
        "ana": add(pipeline, "ana", attributes={"region": "eu-west"}),
        "bo": add(pipeline, "bo", attributes={"region": "us-east"}),
        "team": add(pipeline, "team", internal=True),
    }
    ids["eu"] = open_incident(pipeline, "Logins fail in Europe", affects={"region": ["eu-west"]})
    ids["us"] = open_incident(pipeline, "Exports stall in the US", affects={"region": ["us-east"]})
    ids["all"] = open_incident(pipeline, "Search is slow everywhere")
    return ids


def test_a_private_page_shows_public_incidents_and_those_that_concern_them(
    client: TestClient, world: dict[str, int]
) -> None:
    pipeline = pipeline_of(client)
    base = page_path(pipeline, world["ana"])
    response = client.get(base)
    assert response.status_code == 200
    page = response.text
    assert "Logins fail in Europe" in page and "Search is slow everywhere" in page
    assert "Exports stall in the US" not in page, "another region's private incident"
    assert "status for ana" in page.lower()
    # The same timeline and history bars as the public page, linked under the private path.
    assert f'href="{base}/incidents/{world["eu"]}"' in page
    assert re.search(r'class="day l-partial_outage[^"]*" title="[^"]*Logins fail in Europe', page)
    assert f'href="{base}/feed.atom"' in page
    assert 'href="/subscribe"' not in page and "/api/status" not in page
    assert response.headers["cache-control"] == "private, no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-robots-tag"] == "noindex"
    # The public page still shows only the public incident.
    public = client.get("/").text
    assert "Search is slow everywhere" in public and "Logins fail" not in public


def test_the_team_sees_every_private_incident(client: TestClient, world: dict[str, int]) -> None:
    page = client.get(page_path(pipeline_of(client), world["team"])).text
    assert "Logins fail in Europe" in page and "Exports stall in the US" in page


def test_an_incident_page_under_the_private_path(client: TestClient, world: dict[str, int]) -> None:
    pipeline = pipeline_of(client)
    base = page_path(pipeline, world["ana"])
    own = client.get(f"{base}/incidents/{world['eu']}")
    assert own.status_code == 200 and "Logins fail in Europe" in own.text
    assert own.headers["cache-control"] == "private, no-store"
    assert client.get(f"{base}/incidents/{world['all']}").status_code == 200
    for other in (str(world["us"]), "999", "x", "1" * 40):
        assert client.get(f"{base}/incidents/{other}").status_code == 404
    assert client.get(f"/incidents/{world['eu']}").status_code == 404, "not on the public site"


def test_the_private_feed_has_their_incidents_linked_to_their_page(
    client: TestClient, world: dict[str, int]
) -> None:
    pipeline = pipeline_of(client)
    base = pipeline.settings.public_url.rstrip("/")
    path = page_path(pipeline, world["ana"])
    response = client.get(f"{path}/feed.atom")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/atom+xml")
    assert response.headers["cache-control"] == "private, no-store"
    feed = ET.fromstring(response.content)
    titles = [e.findtext(f"{ATOM}title") for e in feed.iter(f"{ATOM}entry")]
    assert any("Logins fail in Europe" in (t or "") for t in titles)
    assert not any("Exports stall" in (t or "") for t in titles)
    links = [e.find(f"{ATOM}link").get("href") for e in feed.iter(f"{ATOM}entry")]  # type: ignore[union-attr]
    assert all(link.startswith(f"{base}{path}/incidents/") for link in links)  # type: ignore[union-attr]
    ids = [e.findtext(f"{ATOM}id") for e in feed.iter(f"{ATOM}entry")]
    assert all((i or "").startswith(f"{base}/incidents/") for i in ids), "stable entry ids"
    public = client.get("/feed.atom").text
    assert "Logins fail" not in public


def test_a_narrowed_incident_stays_on_the_pages_of_those_told(
    client: TestClient, world: dict[str, int]
) -> None:
    pipeline = pipeline_of(client)
    with pipeline.store.session() as session:
        lifecycle.update_in(
            session,
            world["eu"],
            IncidentState.IDENTIFIED,
            "Only Frankfurt, in fact.",
            lifecycle.Extras(scope={"region": ["eu-central"]}),
        )
    assert "Logins fail in Europe" in client.get(page_path(pipeline, world["ana"])).text


@pytest.mark.parametrize("purpose", [LinkPurpose.MANAGE, LinkPurpose.UNSUBSCRIBE])
def test_a_link_for_another_page_is_403(
    client: TestClient, world: dict[str, int], purpose: LinkPurpose
) -> None:
    pipeline = pipeline_of(client)
    token = urlsplit(
        pipeline.links.url(purpose, preferences.get(pipeline.store, world["ana"]))
    ).path.rsplit("/", 1)[1]
    for path in (f"/account/{token}", f"/account/{token}/feed.atom",
                 f"/account/{token}/incidents/{world['eu']}"):  # fmt: skip
        response = client.get(path)
        assert response.status_code == 403, path
        assert "Logins fail" not in response.text


def test_a_forged_expired_or_erased_link_shows_nothing(
    client: TestClient, world: dict[str, int]
) -> None:
    pipeline = pipeline_of(client)
    path = page_path(pipeline, world["ana"])
    assert client.get(path[:-3] + "abc").status_code == 403
    assert client.get("/account/not-a-token").status_code == 403
    with time_machine.travel(time.time() + 400 * 86400, tick=False):  # past the link's age
        expired = client.get(path)
    assert expired.status_code == 410 and "Logins fail" not in expired.text
    preferences.erase(pipeline.store, world["ana"], actor="operator")
    assert client.get(path).status_code == 410


def test_messages_about_a_private_incident_link_to_the_private_page(
    client: TestClient, sandbox: Sandbox
) -> None:
    pipeline = pipeline_of(client)
    ana = add(pipeline, "ana", attributes={"region": "eu-west"})
    add(pipeline, "cy", email=None, phone=CY_PHONE, channels=["sms"],
        attributes={"region": "eu-west"})  # fmt: skip
    incident_id = open_incident(pipeline, "Logins fail", affects={"region": ["eu-west"]})
    base = pipeline.settings.public_url.rstrip("/")
    (email,) = settled(
        lambda: [m for m in sandbox.messages("email") if m["to"] == "ana@example.org"]
    )
    found = re.search(rf"Your status page: ({base}/account/[^\s]+)", email["body"])
    assert found is not None
    page = found.group(1)
    assert pipeline.links.read(LinkPurpose.PAGE, page.rsplit("/", 1)[1]).subscriber_id == ana
    assert f"Status page: {page}/incidents/{incident_id}" in email["body"]
    assert f"{base}/incidents/{incident_id}" not in email["body"].replace(page, "")
    assert f'href="{page}/incidents/{incident_id}"' in email["html"]
    assert f"Your status page: {page}" in email["body"]
    assert client.get(urlsplit(f"{page}/incidents/{incident_id}").path).status_code == 200
    (sms,) = settled(lambda: sandbox.messages("sms"))
    assert "/account/" in sms["body"] and f"/incidents/{incident_id}" in sms["body"]
    # A public incident's messages keep the public link, and carry the page link too.
    sandbox.clear()
    public_id = open_incident(pipeline, "Search is slow")
    (email,) = settled(
        lambda: [m for m in sandbox.messages("email") if m["to"] == "ana@example.org"]
    )
    assert f"Status page: {base}/incidents/{public_id}" in email["body"]
    assert f"Your status page: {base}/account/" in email["body"]


def test_the_cli_prints_a_page_link_that_works(
    cli_env: str, pipeline: Pipeline, sandbox: Sandbox
) -> None:
    ana = add(pipeline, "ana", attributes={"region": "eu-west"})
    code, out, err = outage("subscriber", "link", str(ana), "--page")
    assert code == 0, err
    url = out.strip()
    assert url.startswith(f"{pipeline.settings.public_url.rstrip('/')}/account/")
    assert pipeline.links.read(LinkPurpose.PAGE, url.rsplit("/", 1)[1]).subscriber_id == ana
    code, same, _ = outage("subscriber", "link", str(ana), "--purpose", "page")
    assert code == 0 and same.startswith(url.rsplit("/", 1)[0])
    code, _, err = outage("subscriber", "link", "999", "--page")
    assert code == 2 and "no subscriber with id 999" in err


def test_the_preference_centre_links_to_the_private_page(
    client: TestClient, world: dict[str, int]
) -> None:
    pipeline = pipeline_of(client)
    manage = urlsplit(
        pipeline.links.url(LinkPurpose.MANAGE, preferences.get(pipeline.store, world["ana"]))
    ).path
    page = client.get(manage).text
    found = re.search(r'<a href="([^"]+)">Your status page</a>', page)
    assert found is not None
    assert client.get(urlsplit(found.group(1)).path).status_code == 200


def test_texts_about_a_private_incident_each_carry_their_own_link(
    client: TestClient, sandbox: Sandbox
) -> None:
    """One rendering is shared by a batch's texts (the link's placeholder is as long as the
    link); each recipient still gets their own link, never another's, within the budget."""
    pipeline = pipeline_of(client)
    phones = {f"+1415555{n:04d}": n for n in range(101, 106)}
    owners = {
        add(pipeline, f"p{n}", email=None, phone=phone, channels=["sms"],
            attributes={"region": "eu-west"}): phone
        for phone, n in phones.items()
    }  # fmt: skip
    incident_id = open_incident(pipeline, "Logins fail", affects={"region": ["eu-west"]})
    texts = settled(lambda: m if len(m := sandbox.messages("sms")) == len(phones) else [])
    assert len(texts) == len(phones)
    for text in texts:
        found = re.search(r"/account/([^/\s]+)/incidents/(\d+)", text["body"])
        assert found is not None and int(found.group(2)) == incident_id
        owner = pipeline.links.read(LinkPurpose.PAGE, found.group(1)).subscriber_id
        assert owners[owner] == text["to"], "a text carries its own recipient's link"
        assert "%outage" not in text["body"]
