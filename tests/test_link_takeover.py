"""A subscriber's links open that person's page and nobody else's.

Ids are never reused (AUTOINCREMENT on SQLite), and every link is bound to a random secret of
its subscriber's: an erased person's old link is 410, even where a new person came to hold the
same id.
"""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy import select

from dispatcher.links import LinkPurpose
from dispatcher.models import Severity
from dispatcher.store import Subscriber, Suppression, utcnow
from dispatcher.subscribers import preferences
from tests.test_preferences import add, path, pipeline_of, web

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
