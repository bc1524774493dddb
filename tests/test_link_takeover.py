"""A subscriber's links open that person's page and nobody else's, and stop when they should.

Ids are never reused (AUTOINCREMENT on SQLite), and every link is bound to a random secret of
its subscriber's: an erased person's old link is 410, even where a new person came to hold the
same id, and "send me a new link" signs out every link sent so far. Changing an address through
a link keeps the confirmed one until the new one is confirmed, so a link that falls into other
hands cannot quietly move someone's messages to another address.
"""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy import select

from dispatcher.incidents import lifecycle
from dispatcher.links import LinkPurpose
from dispatcher.models import DeliveryStatus, IncidentIn, MessageKind, Severity
from dispatcher.render.textfit import sms_segments
from dispatcher.sandbox.server import Sandbox
from dispatcher.store import Delivery, Subscriber, Suppression, utcnow
from dispatcher.subscribers import confirmations, preferences
from tests.conftest import settle
from tests.test_preferences import add, form, path, pipeline_of, web

__all__ = ["web"]  # the fixture, shared with test_preferences


def link_in(body: str, page: str) -> str:
    """The path of the first link to `page` in a message."""
    found = re.search(rf"https?://[^/\s]+(/{page}/[\w.-]+)", body)
    assert found, f"no /{page}/ link in {body!r}"
    return found.group(1)


def test_an_erased_persons_links_open_nobody_elses_page(web: TestClient) -> None:
    pipeline = pipeline_of(web)
    ada = add(pipeline)
    manage = path(pipeline, LinkPurpose.MANAGE, ada)
    unsubscribe = path(pipeline, LinkPurpose.UNSUBSCRIBE, ada)
    preferences.erase(pipeline.store, ada.id, actor="operator")
    ben = add(pipeline, name="Ben", email="ben@example.org", phone="+14155550111")
    assert ben.id != ada.id, "an id is never given to someone else"
    page = web.get(manage)
    assert page.status_code == 410
    assert "ben@example.org" not in page.text
    assert web.post(unsubscribe).status_code == 410
    assert preferences.get(pipeline.store, ben.id).unsubscribed_at is None


def test_a_link_names_the_person_not_only_the_number(web: TestClient) -> None:
    """Should an id come back (a restored backup, a reset sequence), the old links do not."""
    pipeline = pipeline_of(web)
    ada = add(pipeline)
    manage = path(pipeline, LinkPurpose.MANAGE, ada)
    unsubscribe = path(pipeline, LinkPurpose.UNSUBSCRIBE, ada)
    preferences.erase(pipeline.store, ada.id, actor="operator")
    with pipeline.store.session() as session:
        session.add(
            Subscriber(
                id=ada.id,
                name="Ben",
                email="ben@example.org",
                channels=["email"],
                components=[],
                min_severity=Severity.MINOR,
                email_confirmed_at=utcnow(),
            )
        )
    page = web.get(manage)
    assert page.status_code == 410
    assert "This link no longer works" in page.text
    assert "ben@example.org" not in page.text
    assert web.post(manage, data={"action": "unsubscribe_all"}).status_code == 410
    assert web.post(unsubscribe).status_code == 410
    assert preferences.get(pipeline.store, ada.id).unsubscribed_at is None
    with pipeline.store.session() as session:
        assert session.scalars(select(Suppression)).all() == []


def test_send_me_a_new_link_signs_out_every_link_sent_so_far(
    web: TestClient, sandbox: Sandbox
) -> None:
    pipeline = pipeline_of(web)
    ada = add(pipeline, channels=["email", "sms"])
    manage = path(pipeline, LinkPurpose.MANAGE, ada)
    unsubscribe = path(pipeline, LinkPurpose.UNSUBSCRIBE, ada)
    response = web.post(manage, data={"action": "new_link"})
    assert response.status_code == 200
    assert "We sent you a new link" in response.text
    assert "a***@example.org" in response.text
    (sent,) = sandbox.messages("email")
    assert sent["to"] == "ada@example.org"
    assert sandbox.messages("sms") == [], "one message, on the first confirmed channel"
    fresh = link_in(sent["body"], "preferences")
    assert web.get(fresh).status_code == 200
    old = web.get(manage)
    assert old.status_code == 410 and "This link no longer works" in old.text
    assert web.post(unsubscribe).status_code == 410
    assert preferences.get(pipeline.store, ada.id).unsubscribed_at is None
    with pipeline.store.session() as session:
        (row,) = session.scalars(select(Delivery)).all()
    assert (row.kind, row.status) == (MessageKind.LINK, DeliveryStatus.SENT)


def test_a_new_link_goes_by_sms_when_that_comes_first_and_fits_two_segments(
    web: TestClient, sandbox: Sandbox
) -> None:
    pipeline = pipeline_of(web)
    ada = add(pipeline, channels=["sms", "email"])
    response = web.post(path(pipeline, LinkPurpose.MANAGE, ada), data={"action": "new_link"})
    assert "+14*******00" in response.text
    (sent,) = sandbox.messages("sms")
    assert sent["to"] == "+14155550100"
    assert web.get(link_in(sent["body"], "preferences")).status_code == 200
    assert sms_segments(sent["body"]) <= 2


def test_a_new_link_needs_a_confirmed_address_to_go_to(web: TestClient, sandbox: Sandbox) -> None:
    pipeline = pipeline_of(web)
    ada = add(pipeline, confirmed=False)
    manage = path(pipeline, LinkPurpose.MANAGE, ada)
    response = web.post(manage, data={"action": "new_link"})
    assert response.status_code == 409
    assert "confirmed" in response.text
    assert web.get(manage).status_code == 200, "nothing was signed out"
    assert sandbox.messages("email") == []


def test_a_new_address_waits_for_its_confirmation_and_the_old_one_keeps_working(
    web: TestClient, sandbox: Sandbox
) -> None:
    pipeline = pipeline_of(web)
    ada = add(pipeline, phone=None, channels=["email"])
    manage = path(pipeline, LinkPurpose.MANAGE, ada)
    web.post(manage, data=form(email="mallory@evil.example", phone="", channels=["email"]))
    saved = preferences.get(pipeline.store, ada.id)
    assert saved.email == "ada@example.org", "the confirmed address is kept"
    assert saved.email_confirmed_at is not None
    (confirmation,) = sandbox.messages("email")
    assert confirmation["to"] == "mallory@evil.example"
    page = web.get(manage).text
    assert 'value="ada@example.org"' in page
    assert "m***@evil.example" in page and "until you confirm it" in page

    sandbox.clear()
    posted = lifecycle.open_incident(
        pipeline.store, IncidentIn(title="API errors", severity=Severity.MAJOR, components=["api"])
    )
    pipeline.announce(posted.update_id)
    settle(pipeline, posted.incident_id)
    assert [m["to"] for m in sandbox.messages("email")] == ["ada@example.org"]

    confirm = link_in(confirmation["body"], "confirm")
    assert web.post(confirm).status_code == 200
    moved = preferences.get(pipeline.store, ada.id)
    assert moved.email == "mallory@evil.example"
    assert moved.email_confirmed_at is not None


def test_a_new_number_replies_yes_to_take_the_place_of_the_old_one(
    web: TestClient, sandbox: Sandbox
) -> None:
    pipeline = pipeline_of(web)
    ada = add(pipeline, channels=["sms", "email"])
    web.post(path(pipeline, LinkPurpose.MANAGE, ada), data=form(phone="+14155550177"))
    (asked,) = sandbox.messages("sms")
    assert asked["to"] == "+14155550177"
    assert preferences.get(pipeline.store, ada.id).phone == "+14155550100"
    assert confirmations.confirm_reply(pipeline.store, "+14155550177") == [ada.id]
    moved = preferences.get(pipeline.store, ada.id)
    assert (moved.phone, moved.pending_phone) == ("+14155550177", None)
    assert moved.phone_confirmed_at is not None
