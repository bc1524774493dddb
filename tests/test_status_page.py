"""The public status page (`/`, `/incidents/{id}`, `/api/status`, `/subscribe`): what the public
sees, and what it must never see (drafts, internal notes)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from fastapi.testclient import TestClient
from sqlalchemy import event, select

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents import public
from dispatcher.models import IncidentState, Severity
from dispatcher.settings import Settings
from dispatcher.store import Incident, Store, Subscriber, Update
from dispatcher.web.app import create_app

# The page counts days and names them by the clock: every test here runs with the wall clock
# stopped at midday UTC, so that what the seed puts hours before or after NOW stays on NOW's day
# (at 01:30 an incident "10 days, 2 hours ago" lasting an hour would straddle two days' bars).
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
pytestmark = pytest.mark.time_machine(NOW, tick=False)
SECRET_NOTE = "INTERNAL: db-3 disk at 91%, ticket OPS-1234"
DRAFT_TITLE = "Alert: disk 91% on db-3"

UpdateSpec = tuple[IncidentState, str | None, datetime, datetime | None, str | None]


def add_incident(
    store: Store,
    title: str,
    components: Sequence[str],
    *,
    severity: Severity = Severity.MAJOR,
    state: IncidentState = IncidentState.INVESTIGATING,
    started_at: datetime = NOW,
    resolved_at: datetime | None = None,
    ends_at: datetime | None = None,
    eta: datetime | None = None,
    draft: bool = False,
    updates: Sequence[UpdateSpec] = (),
) -> int:
    """An incident with its updates, written directly (already fanned out: nothing is sent)."""
    with store.session() as session:
        incident = Incident(
            title=title,
            severity=severity,
            state=state,
            components=list(components),
            started_at=started_at,
            resolved_at=resolved_at,
            ends_at=ends_at,
            eta=eta,
            draft=draft,
        )
        session.add(incident)
        session.flush()
        for update_state, message, created_at, next_update_at, note in updates:
            session.add(
                Update(
                    incident_id=incident.id,
                    state=update_state,
                    message=message,
                    created_at=created_at,
                    next_update_at=next_update_at,
                    internal_note=note,
                    fanned_out_at=created_at,
                )
            )
        return incident.id


def seed(store: Store) -> dict[str, int]:
    """One of each: an open incident with a promise, a draft, a maintenance, a past incident."""
    open_id = add_incident(
        store,
        "Checkout errors",
        ["checkout", "payments"],
        state=IncidentState.IDENTIFIED,
        started_at=NOW - timedelta(minutes=70),
        eta=NOW + timedelta(minutes=50),
        updates=[
            (
                IncidentState.INVESTIGATING,
                "Some card payments fail.",
                NOW - timedelta(minutes=65),
                NOW - timedelta(minutes=35),
                None,
            ),
            (
                IncidentState.IDENTIFIED,
                "A configuration change is being rolled back.",
                NOW - timedelta(minutes=5),
                NOW + timedelta(minutes=25),
                SECRET_NOTE,
            ),
        ],
    )
    draft_id = add_incident(
        store,
        DRAFT_TITLE,
        ["database"],
        severity=Severity.MINOR,
        draft=True,
        updates=[(IncidentState.INVESTIGATING, "Auto-opened", NOW, None, SECRET_NOTE)],
    )
    maintenance_id = add_incident(
        store,
        "Payments maintenance",
        ["payments"],
        severity=Severity.MINOR,
        state=IncidentState.SCHEDULED,
        started_at=NOW + timedelta(days=2),
        ends_at=NOW + timedelta(days=2, hours=2),
        updates=[
            (
                IncidentState.SCHEDULED,
                "Read-only for 15 minutes.",
                NOW - timedelta(days=1),
                None,
                None,
            )
        ],
    )
    past_id = add_incident(
        store,
        "Search slow",
        ["search"],
        severity=Severity.CRITICAL,
        state=IncidentState.RESOLVED,
        started_at=NOW - timedelta(days=10, hours=2),
        resolved_at=NOW - timedelta(days=10, hours=1),
        updates=[
            (
                IncidentState.INVESTIGATING,
                "Search is down.",
                NOW - timedelta(days=10, hours=2),
                None,
                None,
            ),
            (IncidentState.RESOLVED, "Fixed.", NOW - timedelta(days=10, hours=1), None, None),
        ],
    )
    return {"open": open_id, "draft": draft_id, "maintenance": maintenance_id, "past": past_id}


@pytest.fixture
def seeded(client: TestClient) -> dict[str, int]:
    return seed(client.app.state.pipeline.store)  # type: ignore[attr-defined]


# --- the page -----------------------------------------------------------------------------------


def test_page_shows_the_open_incident_with_its_timeline_newest_first_and_the_promise(
    client: TestClient, seeded: dict[str, int]
) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "Checkout errors" in html
    newest, oldest = "A configuration change is being rolled back.", "Some card payments fail."
    assert html.index(newest) < html.index(oldest)
    promise = NOW + timedelta(minutes=25)
    assert f'Next update by <time datetime="{promise.isoformat().replace("+00:00", "Z")}">' in html
    assert f"{promise:%H:%M} UTC" in html
    assert f'href="/incidents/{seeded["open"]}"' in html
    assert "Partial outage" in html


def test_drafts_and_internal_notes_are_never_public(
    client: TestClient, seeded: dict[str, int]
) -> None:
    for path in ("/", "/api/status", "/feed.atom", f"/incidents/{seeded['open']}", "/subscribe"):
        body = client.get(path).text
        assert DRAFT_TITLE not in body, path
        assert "Auto-opened" not in body, path
        assert "OPS-1234" not in body, path
        assert "database" not in body, path  # the draft's component is not listed either
    assert client.get(f"/incidents/{seeded['draft']}").status_code == 404


def test_maintenance_is_listed_with_its_window_and_not_counted_as_an_outage_yet(
    client: TestClient, seeded: dict[str, int]
) -> None:
    html = client.get("/").text
    section = html[html.index("Scheduled maintenance") : html.index('id="history"')]
    assert "Payments maintenance" in section
    assert "Read-only for 15 minutes." in section
    start, end = NOW + timedelta(days=2), NOW + timedelta(days=2, hours=2)
    assert f"{start:%H:%M} UTC" in section and f"{end:%H:%M} UTC" in section
    assert "Scheduled" in section


def test_a_running_maintenance_puts_its_component_under_maintenance(pipeline: Pipeline) -> None:
    add_incident(
        pipeline.store,
        "Database upgrade",
        ["api"],
        severity=Severity.MINOR,
        state=IncidentState.SCHEDULED,
        started_at=NOW - timedelta(minutes=10),
        ends_at=NOW + timedelta(minutes=50),
    )
    snap = public.snapshot(pipeline.store, pipeline.settings, now=NOW)
    (api,) = snap.components
    assert api.level is public.Level.MAINTENANCE
    assert snap.level is public.Level.MAINTENANCE
    assert [m.title for m in snap.maintenance] == ["Database upgrade"]
    assert snap.open_incidents == ()


def test_history_marks_a_past_incident_on_its_day_and_component_only(pipeline: Pipeline) -> None:
    day = (NOW - timedelta(days=10)).date()
    add_incident(
        pipeline.store,
        "Search slow",
        ["search"],
        severity=Severity.CRITICAL,
        state=IncidentState.RESOLVED,
        started_at=datetime.combine(day, datetime.min.time(), NOW.tzinfo) + timedelta(hours=9),
        resolved_at=datetime.combine(day, datetime.min.time(), NOW.tzinfo) + timedelta(hours=10),
    )
    settings = pipeline.settings.model_copy(update={"components": ["api"]})
    snap = public.snapshot(pipeline.store, settings, now=NOW)
    history = {h.name: h for h in snap.history}
    assert list(history) == ["api", "search"]  # configured first, then those seen
    assert all(len(h.days) == public.HISTORY_DAYS for h in snap.history)
    assert history["search"].days[-1].date == NOW.date()
    levels = {d.date: d.level for d in history["search"].days}
    assert levels[day] is public.Level.MAJOR_OUTAGE
    assert {lvl for d, lvl in levels.items() if d != day} == {public.Level.OPERATIONAL}
    assert {d.level for d in history["api"].days} == {public.Level.OPERATIONAL}
    assert history["search"].clear_days == public.HISTORY_DAYS - 1
    assert [i.title for i in snap.past_incidents] == ["Search slow"]
    assert {c.name: c.level for c in snap.components} == {
        "api": public.Level.OPERATIONAL,
        "search": public.Level.OPERATIONAL,
    }


def test_history_bars_on_the_page_name_the_day_and_the_incident(
    client: TestClient, seeded: dict[str, int]
) -> None:
    html = client.get("/").text
    day = (NOW - timedelta(days=10, hours=2)).date()
    label = f"{day.day} {day:%b}: Major outage (Search slow)"
    search = html[html.index("<h3>search</h3>") :]
    search = search[: search.index('</div>\n<div class="axis"')]
    assert 'class="day l-major_outage' in search and f'title="{label}"' in search
    assert search.count("l-major_outage") == 1
    assert "89 of 90 days without incident" in html


@pytest.mark.parametrize(
    ("now", "promise"),
    [
        pytest.param(moment, promise, marks=pytest.mark.time_machine(moment, tick=False), id=id_)
        for moment, promise, id_ in [
            (datetime(2026, 3, 10, 23, 55, tzinfo=UTC), "Wed 11 Mar 00:15 UTC", "23:55"),
            (datetime(2026, 3, 11, 1, 30, tzinfo=UTC), "01:50 UTC", "01:30"),
        ]
    ],
)
def test_around_midnight_today_is_the_utc_day_and_a_promise_past_it_names_its_day(
    client: TestClient, now: datetime, promise: str
) -> None:
    """Just before and just after midnight UTC, an incident opened ten minutes ago is on today's
    bar only, and its promise twenty minutes on is named with its day when that is tomorrow."""
    opened = now - timedelta(minutes=10)
    add_incident(
        client.app.state.pipeline.store,  # type: ignore[attr-defined]
        "Night errors",
        ["api"],
        started_at=opened,
        updates=[
            (IncidentState.INVESTIGATING, "Looking.", opened, now + timedelta(minutes=20), None)
        ],
    )
    html = client.get("/").text
    bars = re.findall(r'<span class="day [^"]*" title="([^"]*)"', html)
    assert bars[-1] == f"{now.day} {now:%b}: Partial outage (Night errors)"
    assert all("Night errors" not in title for title in bars[:-1])
    assert "89 of 90 days without incident" in html
    assert f">{promise}</time></strong>" in html
    feed = client.get("/feed.atom").text
    assert f"Next update by {promise}." in feed


def test_an_incident_spanning_midnight_marks_both_days(pipeline: Pipeline) -> None:
    midnight = datetime.combine(NOW.date(), datetime.min.time(), NOW.tzinfo) - timedelta(days=3)
    add_incident(
        pipeline.store,
        "Overnight",
        ["api"],
        severity=Severity.MINOR,
        state=IncidentState.RESOLVED,
        started_at=midnight - timedelta(hours=1),
        resolved_at=midnight + timedelta(hours=1),
    )
    (history,) = public.snapshot(pipeline.store, pipeline.settings, now=NOW).history
    marked = [d.date for d in history.days if d.level is public.Level.DEGRADED]
    assert marked == [(midnight - timedelta(hours=1)).date(), midnight.date()]


def test_page_escapes_what_operators_typed(client: TestClient) -> None:
    add_incident(
        client.app.state.pipeline.store,  # type: ignore[attr-defined]
        "<script>alert(1)</script>",
        ["api"],
        updates=[(IncidentState.INVESTIGATING, "<img src=x onerror=alert(1)>", NOW, None, None)],
    )
    html = client.get("/").text
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html


def test_page_is_self_contained_and_accessible_in_structure(
    client: TestClient, seeded: dict[str, int]
) -> None:
    page = client.get("/")
    html = page.text
    assert '<html lang="en">' in html
    assert "<script" not in html
    assert not re.search(r"""(src|href)=["']https?://""", html.replace("https://example.com", ""))
    assert ' style="' not in html  # the CSP allows the nonced style block only
    for landmark in ("<header", "<nav", "<main", "<footer"):
        assert landmark in html
    assert html.count("<h1") == 1
    nonce = re.search(r'<style nonce="([^"]+)"', html)
    assert nonce is not None
    assert f"style-src 'nonce-{nonce.group(1)}'" in page.headers["content-security-policy"]
    assert "max-age" in page.headers["cache-control"]
    assert 'rel="alternate" type="application/atom+xml"' in html


def test_with_nothing_published_all_is_operational(client: TestClient) -> None:
    html = client.get("/").text
    assert "All systems operational" in html
    assert "No open incidents." in html
    assert "No maintenance is planned." in html


# --- one incident -------------------------------------------------------------------------------


def test_incident_page_shows_the_whole_timeline(client: TestClient, seeded: dict[str, int]) -> None:
    page = client.get(f"/incidents/{seeded['past']}")
    assert page.status_code == 200
    assert "Search slow" in page.text
    assert "Search is down." in page.text and "Fixed." in page.text
    assert "Resolved" in page.text
    assert "Next update by" not in page.text  # a resolved incident promises nothing


@pytest.mark.parametrize("incident_id", ["999", "0", "abc", "-1", "9" * 30, "\u0663"])
def test_incident_page_is_404_for_what_is_not_a_published_incident(
    client: TestClient, incident_id: str
) -> None:
    page = client.get(f"/incidents/{incident_id}")
    assert page.status_code == 404
    assert "We cannot find this incident" in page.text


# --- /api/status --------------------------------------------------------------------------------


def test_api_status_shape_and_values(client: TestClient, seeded: dict[str, int]) -> None:
    answer = client.get("/api/status")
    assert answer.status_code == 200
    data = answer.json()
    assert set(data) == {
        "generated_at",
        "status",
        "description",
        "components",
        "incidents",
        "maintenance",
    }
    assert data["status"] == "partial_outage"
    assert data["description"] == "Partial outage"
    components = {c["name"]: c for c in data["components"]}
    assert list(components) == ["checkout", "payments", "search"]
    assert components["checkout"] == {
        "name": "checkout",
        "status": "partial_outage",
        "incident_ids": [seeded["open"]],
    }
    assert components["search"]["status"] == "operational"
    (incident,) = data["incidents"]
    assert incident["id"] == seeded["open"]
    assert incident["state"] == "identified"
    assert incident["severity"] == "major"
    assert incident["url"].endswith(f"/incidents/{seeded['open']}")
    assert incident["next_update_at"] == (NOW + timedelta(minutes=25)).isoformat().replace(
        "+00:00", "Z"
    )
    assert [u["message"] for u in incident["updates"]] == [
        "Some card payments fail.",
        "A configuration change is being rolled back.",
    ]
    assert all("internal_note" not in u for u in incident["updates"])
    (maintenance,) = data["maintenance"]
    assert maintenance["id"] == seeded["maintenance"]
    assert maintenance["ends_at"] is not None


# --- the sign-up form ---------------------------------------------------------------------------


def subscribers_of(client: TestClient) -> list[Subscriber]:
    store = client.app.state.pipeline.store  # type: ignore[attr-defined]
    with store.session() as session:
        return list(session.scalars(select(Subscriber).order_by(Subscriber.id)))


def post_form(client: TestClient, form: dict[str, Any], *, after_s: float = 5) -> Any:
    """The sign-up form as a person's browser submits it: loaded from the page (with its
    stamp and empty honeypot), filled in, and sent `after_s` seconds later (a moved clock)."""
    page = client.get("/subscribe").text
    stamp = re.search(r'name="form_stamp" value="([^"]+)"', page)
    assert stamp is not None, "the form carries its signed stamp"
    with time_machine.travel(time.time() + after_s, tick=False):
        return client.post("/subscribe", data={"form_stamp": stamp[1], "website": "", **form})


def test_the_form_signs_up_and_asks_to_confirm(client: TestClient, seeded: dict[str, int]) -> None:
    answer = post_form(
        client, {"name": "Ada", "email": "ada@example.org", "components": ["checkout"]}
    )
    assert answer.status_code == 200, answer.text
    assert "Check your inbox" in answer.text
    (added,) = subscribers_of(client)
    assert (added.name, added.email, added.channels) == ("Ada", "ada@example.org", ["email"])
    assert added.components == ["checkout"]
    assert added.email_confirmed_at is None  # double opt-in: nothing is sent before it
    assert added.internal is False and added.tier == 0


def test_signing_up_twice_gives_the_same_answer_and_no_second_subscriber(
    client: TestClient,
) -> None:
    first = post_form(client, {"name": "Ada", "email": "ada@example.org"})
    again = post_form(client, {"name": "Someone", "email": "ada@example.org"})
    assert first.status_code == again.status_code == 200
    assert "Check your inbox" in again.text
    assert len(subscribers_of(client)) == 1


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"name": "Ada"}, "form"),
        ({"name": "Ada", "email": "not an address"}, "email"),
        ({"name": "Ada", "phone": "12"}, "phone"),
        ({"name": "", "email": "ada@example.org"}, "name"),
        ({"name": "Ada", "email": "ada@example.org", "components": ["nope"]}, "components"),
    ],
)
def test_a_bad_form_comes_back_filled_in_with_the_error_by_its_field(
    client: TestClient, form: dict[str, Any], field: str
) -> None:
    answer = post_form(client, form)
    assert answer.status_code == 422
    assert "Please check the form." in answer.text
    if field in ("name", "email", "phone"):
        assert f'aria-describedby="{field}-error"' in answer.text
        assert f'href="#signup-{field}"' in answer.text
    if form.get("email"):
        assert f'value="{form["email"]}"' in answer.text
    assert subscribers_of(client) == []


def test_sign_up_can_be_switched_off(web_settings: Settings) -> None:
    closed = web_settings.model_copy(update={"signup_enabled": False})
    with TestClient(create_app(closed)) as client:
        assert "Get told about outages" not in client.get("/").text
        assert client.get("/subscribe").status_code == 404
        assert (
            client.post("/subscribe", data={"name": "A", "email": "a@example.org"}).status_code
            == 404
        )


def test_an_oversized_form_is_refused(client: TestClient) -> None:
    answer = client.post("/subscribe", data={"name": "A" * 20_000})
    assert answer.status_code == 413


# --- cost ---------------------------------------------------------------------------------------


@contextmanager
def counted(store: Store) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(store.engine, "before_cursor_execute", count)


def test_each_read_costs_what_its_docstring_says(pipeline: Pipeline) -> None:
    ids = seed(pipeline.store)
    with counted(pipeline.store) as statements:
        public.snapshot(pipeline.store, pipeline.settings)
    assert len(statements) == 2
    with counted(pipeline.store) as statements:
        public.incident(pipeline.store, ids["open"])
    assert len(statements) == 1
    with counted(pipeline.store) as statements:
        public.feed(pipeline.store)
    assert len(statements) == 1
