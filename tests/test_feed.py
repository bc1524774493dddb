"""`/feed.atom`: valid Atom (RFC 4287), one entry per published update, newest first."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from xml.etree import ElementTree as ET

import pytest
from fastapi.testclient import TestClient

from dispatcher.models import IncidentState, Severity
from tests.test_status_page import NOW, SECRET_NOTE, add_incident, seed

A = "{http://www.w3.org/2005/Atom}"

# The seed is laid out around NOW (midday UTC); the feed is read at NOW too, as the page is.
pytestmark = pytest.mark.time_machine(NOW, tick=False)


def parsed(client: TestClient) -> ET.Element:
    answer = client.get("/feed.atom")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/atom+xml")
    root = ET.fromstring(answer.content)
    assert root.tag == f"{A}feed"
    return root


def timestamp(element: ET.Element, tag: str) -> datetime:
    text = element.findtext(f"{A}{tag}")
    assert text is not None, tag
    return datetime.fromisoformat(text)


def test_feed_is_atom_with_one_entry_per_published_update_newest_first(
    client: TestClient,
) -> None:
    ids = seed(client.app.state.pipeline.store)  # type: ignore[attr-defined]
    root = parsed(client)
    # The elements RFC 4287 requires of a feed, and a self link.
    assert root.findtext(f"{A}id")
    assert root.findtext(f"{A}title") == "Example Cloud status"
    assert root.find(f"{A}author/{A}name") is not None
    assert any(link.get("rel") == "self" for link in root.findall(f"{A}link"))
    entries = root.findall(f"{A}entry")
    # open: 2 updates, maintenance: 1, past: 2; the draft's update is not published.
    assert len(entries) == 5
    for entry in entries:
        for required in ("id", "title", "updated"):
            assert entry.findtext(f"{A}{required}"), required
        assert entry.find(f"{A}content") is not None
        assert entry.find(f"{A}link") is not None
    times = [timestamp(entry, "updated") for entry in entries]
    assert times == sorted(times, reverse=True)
    assert timestamp(root, "updated") == times[0]
    assert len({entry.findtext(f"{A}id") for entry in entries}) == len(entries)
    newest = entries[0]
    assert newest.findtext(f"{A}title") == "[Identified] Checkout errors"
    link = newest.find(f"{A}link")
    assert link is not None
    assert re.search(rf"/incidents/{ids['open']}#update-\d+$", link.get("href", ""))
    assert link.get("href") == newest.findtext(f"{A}id")
    content = newest.findtext(f"{A}content") or ""
    assert "A configuration change is being rolled back." in content
    assert f"Next update by {NOW + timedelta(minutes=25):%H:%M} UTC." in content
    assert SECRET_NOTE not in content


def test_feed_escapes_titles_and_messages(client: TestClient) -> None:
    add_incident(
        client.app.state.pipeline.store,  # type: ignore[attr-defined]
        "R&D <tools> down",
        ["tools"],
        severity=Severity.MINOR,
        updates=[(IncidentState.INVESTIGATING, "Use <b>the</b> old & slow path", NOW, None, None)],
    )
    (entry,) = parsed(client).findall(f"{A}entry")
    assert entry.findtext(f"{A}title") == "[Investigating] R&D <tools> down"
    assert (entry.findtext(f"{A}content") or "").startswith("Use <b>the</b> old & slow path")


def test_an_empty_feed_is_still_valid(client: TestClient) -> None:
    root = parsed(client)
    assert root.findall(f"{A}entry") == []
    assert root.findtext(f"{A}updated")
