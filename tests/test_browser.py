"""The preference centre in a real browser: Debian's Chromium, driven by Playwright, against the
real app served by uvicorn on a free port, with the provider sandbox behind it.

A subscriber opens their link, moves email above SMS with the keyboard, sets quiet hours in their
time zone, saves; the next critical update reaches them by email at once while a major one waits
for the quiet hours to end, the email carries a one-click
unsubscribe that works the way a mail client uses it, and the page works at phone width without
sideways scrolling.

Playwright's own browser download cannot work here, so the test launches /usr/bin/chromium
(`.ci/run` installs it with apt-get). Without Chromium or the playwright package the test skips
with the reason; with OUTAGE_REQUIRE_SERVICES=1 (CI) that is a failure instead.
Set OUTAGE_UPDATE_SCREENSHOTS=1 to rewrite the README's screenshots in docs/screenshots/.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import uvicorn
from sqlalchemy import select

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents import lifecycle
from dispatcher.links import LinkPurpose
from dispatcher.models import DeliveryStatus, IncidentIn, Severity, SubscriberIn
from dispatcher.policy.quiet_hours import may_send_at
from dispatcher.sandbox.server import Sandbox
from dispatcher.settings import PROJECT_ROOT, Settings
from dispatcher.store import Delivery, utcnow
from dispatcher.subscribers import preferences, records
from dispatcher.web.app import create_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = PROJECT_ROOT / "docs" / "screenshots"
# Read at import: the autouse settings fixture clears OUTAGE_* variables before each test.
UPDATE_SCREENSHOTS = os.environ.get("OUTAGE_UPDATE_SCREENSHOTS") == "1"
REQUIRE = os.environ.get("OUTAGE_REQUIRE_SERVICES") == "1"
ZONE = "Europe/Berlin"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


def need_browser() -> None:
    """Skip (or, in CI, fail) when Chromium or Playwright is missing, saying how to get them."""
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} not found (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package is not installed (pip install playwright)")
    if not missing:
        return
    message = "; ".join(missing)
    if REQUIRE:
        pytest.fail(f"{message} (OUTAGE_REQUIRE_SERVICES=1 forbids skipping)")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Served:
    url: str
    pipeline: Pipeline


@pytest.fixture
def served(tmp_path: Path, sandbox: Sandbox) -> Iterator[Served]:
    """`outage serve` in a thread: the real app, lifespan and embedded runner included."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'browser.sqlite3'}",
        sandbox_url=sandbox.url,
        public_url=url,
        components=["API", "Checkout", "Dashboard", "Payments", "Search"],
        send_backoff_s=0,
        delivery_backoff_s=0,
        delivery_backoff_max_s=0,
        provider_timeout_s=2,
    )
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="none")
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    wait_for(lambda: server.started, "the app did not start")
    try:
        yield Served(url, app.state.pipeline)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def wait_for(condition: Callable[[], object], failure: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(failure)
        time.sleep(0.05)


@pytest.fixture
def browser() -> Iterator[Any]:
    need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def screenshot(page: Any, name: str, tmp_path: Path) -> None:
    folder = SCREENSHOTS if UPDATE_SCREENSHOTS else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def fits_the_width(page: Any) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def test_preferences_changed_in_a_browser_decide_the_next_delivery(
    served: Served, sandbox: Sandbox, browser: Any, tmp_path: Path
) -> None:
    pipeline = served.pipeline
    ada = records.add(
        pipeline.store,
        pipeline.registry,
        SubscriberIn(
            name="Ada Lovelace",
            email="ada@example.org",
            phone="+14155550100",
            channels=["sms", "email"],
            confirmed=True,
        ),
    )
    link = pipeline.links.url(LinkPurpose.MANAGE, ada)
    assert link.startswith(served.url + "/preferences/")

    # Quiet hours around "now" in Berlin, so the window is in force when the update comes.
    now_local = utcnow().astimezone(ZoneInfo(ZONE))
    start = (now_local - timedelta(hours=1)).strftime("%H:%M")
    end = (now_local + timedelta(hours=2)).strftime("%H:%M")

    for name, viewport in (("phone", PHONE), ("desktop", DESKTOP)):
        shown = browser.new_page(viewport=viewport, locale="en-GB", has_touch=name == "phone")
        shown.goto(link)
        shown.get_by_label("Hold non-critical updates during quiet hours").check()
        shown.get_by_label("From").fill("22:00")
        shown.get_by_label("Until").fill("07:00")
        shown.evaluate("document.activeElement.blur()")
        assert fits_the_width(shown), f"the page scrolls sideways at {name} width"
        screenshot(shown, f"preferences-{name}", tmp_path)
        shown.close()

    phone = browser.new_page(viewport=PHONE, locale="en-GB", is_mobile=True, has_touch=True)
    phone.goto(link)
    assert phone.title().startswith("Your notification preferences")
    order = phone.locator("#channel-list li").evaluate_all("els => els.map(e => e.dataset.channel)")
    assert order == ["sms", "email"]

    # Keyboard only: focus "Move Email up" and press Enter; the live region says where it went.
    phone.get_by_role("button", name="Move Email up").focus()
    phone.keyboard.press("Enter")
    order = phone.locator("#channel-list li").evaluate_all("els => els.map(e => e.dataset.channel)")
    assert order == ["email", "sms"]
    assert phone.locator("#order-status").text_content() == "Email is now number 1 of 2."
    assert phone.evaluate("document.activeElement.getAttribute('aria-label')") == "Move Email up"

    # Every control is found by its label: the labels are wired to the fields.
    phone.get_by_label("Hold non-critical updates during quiet hours").check()
    phone.get_by_label("From").fill(start)
    phone.get_by_label("Until").fill(end)
    phone.get_by_label("Time zone").select_option(ZONE)
    phone.get_by_label("Checkout").check()
    phone.get_by_label("Major and above").check()
    assert fits_the_width(phone), "the page scrolls sideways at phone width"

    phone.get_by_role("button", name="Save preferences").click()
    phone.wait_for_url("**?done=saved")
    assert phone.get_by_role("status").first.text_content() == "Your preferences are saved."

    saved = preferences.get(pipeline.store, ada.id)
    assert saved.channels == ["email", "sms"]
    assert (saved.quiet_start, saved.quiet_end, saved.timezone) == (start, end, ZONE)
    assert saved.components == ["Checkout"]
    assert saved.min_severity == Severity.MAJOR
    # Non-critical updates now wait for the end of the quiet hours; critical ones do not.
    moment = utcnow()
    held = may_send_at(saved.quiet_start, saved.quiet_end, saved.timezone, moment, "major")
    assert held > moment
    assert may_send_at(saved.quiet_start, saved.quiet_end, saved.timezone, moment, "critical") == (
        moment
    )

    # The next update: critical, on Checkout, in the quiet hours -> by email, at once.
    posted = lifecycle.open_incident(
        pipeline.store,
        IncidentIn(title="Checkout down", severity=Severity.CRITICAL, components=["Checkout"]),
    )
    pipeline.announce(posted.update_id)  # the app's embedded runner sends it
    wait_for(lambda: sandbox.messages("email"), "the update was not delivered by email")
    (email,) = sandbox.messages("email")
    assert email["to"] == "ada@example.org"
    assert sandbox.messages("sms") == []

    # The next one is major: held in the queue until the quiet hours end, nothing sent now.
    major = lifecycle.open_incident(
        pipeline.store,
        IncidentIn(title="Checkout slow", severity=Severity.MAJOR, components=["Checkout"]),
    )
    pipeline.announce(major.update_id)
    wait_for(
        lambda: held_delivery(pipeline, major.update_id), "the major update was not fanned out"
    )
    waiting = held_delivery(pipeline, major.update_id)
    assert waiting is not None
    assert (waiting.channel, waiting.status) == ("email", DeliveryStatus.QUEUED)
    assert waiting.due_at >= held - timedelta(minutes=1)
    assert len(sandbox.messages("email")) == 1

    # The email's one-click unsubscribe, used the way a mail client does (RFC 8058).
    headers = email["meta"]["mail_headers"]
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe_url = headers["List-Unsubscribe"].strip("<>")
    answer = phone.request.post(
        unsubscribe_url,
        data="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status == 200
    assert preferences.get(pipeline.store, ada.id).unsubscribed_at is not None
    phone.goto(link)
    assert phone.get_by_role("heading", name="You are unsubscribed from everything").is_visible()


def held_delivery(pipeline: Pipeline, update_id: int) -> Delivery | None:
    with pipeline.store.session() as session:
        query = select(Delivery).where(
            Delivery.update_id == update_id, Delivery.subscriber_id.is_not(None)
        )
        return session.scalars(query).first()


def test_a_private_status_page_in_a_browser_shows_what_concerns_them(
    served: Served, sandbox: Sandbox, browser: Any, tmp_path: Path
) -> None:
    """A customer in eu-west opens the link from their email: their region's incident (kept off
    the public page) with its timeline and promise, the public one, 90 days of bars; the
    incident page and the feed stay under their link; it fits a phone."""
    pipeline = served.pipeline
    acme = records.add(
        pipeline.store,
        pipeline.registry,
        SubscriberIn(
            name="Acme GmbH",
            email="ops@acme.example",
            channels=["email"],
            confirmed=True,
            attributes={"region": "eu-west", "account": "acme"},
        ),
    )
    with pipeline.store.session() as session:
        scoped = lifecycle.create(
            session,
            IncidentIn(
                title="Logins fail in Frankfurt",
                severity=Severity.MAJOR,
                components=["API"],
                message="Some sign-ins time out; sessions already open keep working.",
                affects={"region": ["eu-west"]},
            ),
            extras=lifecycle.Extras(next_update_at=utcnow() + timedelta(minutes=30)),
        )
        lifecycle.create(
            session,
            IncidentIn(title="Search is slow", severity=Severity.MINOR, components=["Search"]),
        )
    pipeline.announce(scoped.update_id)

    def emailed() -> list[dict[str, Any]]:
        return [m for m in sandbox.messages("email") if "Frankfurt" in m["subject"]]

    wait_for(emailed, "the scoped incident was not emailed")
    (email,) = emailed()
    found = re.search(r"Your status page: (\S+)", email["body"])
    assert found is not None and found.group(1).startswith(served.url + "/account/")
    link = found.group(1)
    assert f"Status page: {link}/incidents/{scoped.incident_id}" in email["body"]

    for name, viewport in (("phone", PHONE), ("desktop", DESKTOP)):
        shown = browser.new_page(viewport=viewport, locale="en-GB", has_touch=name == "phone")
        shown.goto(link)
        assert shown.title().startswith("Status")
        assert fits_the_width(shown), f"the private page scrolls sideways at {name} width"
        screenshot(shown, f"account-{name}", tmp_path)
        shown.close()

    phone = browser.new_page(viewport=PHONE, locale="en-GB", is_mobile=True, has_touch=True)
    phone.goto(link)
    incidents = phone.locator("#incidents")
    assert incidents.get_by_role("link", name="Logins fail in Frankfurt").is_visible()
    assert incidents.get_by_role("link", name="Search is slow").is_visible()
    assert "Next update by" in (incidents.text_content() or "")
    assert phone.locator(".bars .day").count() >= 90
    assert "Acme GmbH" in (phone.locator("header").text_content() or "")

    incidents.get_by_role("link", name="Logins fail in Frankfurt").click()
    phone.wait_for_url(f"{link}/incidents/{scoped.incident_id}")
    heading = phone.get_by_role("heading", name="Logins fail in Frankfurt", level=1)
    assert heading.is_visible()
    assert "Some sign-ins time out" in (phone.locator(".timeline").text_content() or "")
    assert phone.get_by_text("Not on the public status page").is_visible()
    phone.get_by_role("link", name="All systems").click()
    phone.wait_for_url(link)

    feed = phone.request.get(f"{link}/feed.atom")
    assert feed.status == 200 and "Logins fail in Frankfurt" in feed.text()

    # The public page never shows it; a link for another purpose opens nothing.
    phone.goto(served.url + "/")
    assert phone.get_by_text("Logins fail in Frankfurt").count() == 0
    manage = pipeline.links.url(LinkPurpose.MANAGE, acme)
    refused = phone.goto(manage.replace("/preferences/", "/account/"))
    assert refused is not None and refused.status == 403
