"""SMS pumping, as the report tried it, through the real app: anonymous sign-ups may not make us
send more than the limits allow (dispatcher/subscribers/throttle.py, dispatcher/web/throttling.py).

Each test runs with the counters in this process's memory and in the real Redis (shared by every
web process; keys under this run's and this test's own prefix). Time is a frozen clock, moved
past a window, never waited for.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import time_machine
from fastapi.testclient import TestClient
from sqlalchemy import select

from dispatcher.links import LinkPurpose
from dispatcher.models import DeliveryStatus, MessageKind, SubscriberIn
from dispatcher.sandbox.server import Sandbox
from dispatcher.settings import Settings
from dispatcher.store import Delivery
from dispatcher.subscribers import records
from dispatcher.web.app import create_app
from tests.conftest import REDIS_PREFIX, REDIS_URL, need_service

START = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def base(request: pytest.FixtureRequest, web_settings: Settings) -> Iterator[Settings]:
    """The app's settings with the counters in memory, or in Redis under a prefix of this
    test's own (removed afterwards)."""
    if request.param == "memory":
        yield web_settings
        return
    need_service(REDIS_URL, "Redis")
    prefix = f"{REDIS_PREFIX}:{uuid.uuid4().hex[:8]}"
    yield web_settings.model_copy(update={"limits_url": REDIS_URL, "redis_prefix": prefix})
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    client.close()


@pytest.fixture
def clock() -> Iterator[time_machine.Traveller]:
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller


def app(settings: Settings, peer: str = "198.51.100.7", **changes: Any) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=changes)), client=(peer, 40000))


def sign_up(
    client: TestClient, n: int, headers: dict[str, str] | None = None, **fields: Any
) -> Any:
    body = {"name": f"Person {n}", "email": f"p{n}@example.org", "channels": ["email"], **fields}
    return client.post("/api/subscribers", json=body, headers=headers or {})


def mobile(n: int) -> str:
    return f"+1415555{n:04d}"


def test_one_client_gets_five_confirmations_an_hour(
    base: Settings, sandbox: Sandbox, clock: time_machine.Traveller
) -> None:
    with app(base) as client:
        answers = [sign_up(client, n).status_code for n in range(5)]
        refused = sign_up(client, 5)
        assert answers == [202] * 5
        assert refused.status_code == 429
        assert 3500 <= int(refused.headers["Retry-After"]) <= 3600
        assert "try again in 60 minutes" in refused.json()["detail"]
        assert len(records.list_all(client.app.state.pipeline.store)) == 5  # type: ignore[attr-defined]
        clock.shift(timedelta(hours=1, seconds=1))
        assert sign_up(client, 6).status_code == 202
    assert len(sandbox.messages("email")) == 6


def test_an_email_and_a_number_are_two_confirmations(
    base: Settings, sandbox: Sandbox, clock: time_machine.Traveller
) -> None:
    with app(base) as client:
        both = [
            sign_up(client, n, phone=mobile(n), channels=["sms", "email"]).status_code
            for n in range(3)
        ]
    assert both == [202, 202, 429]
    assert len(sandbox.messages("sms")) == len(sandbox.messages("email")) == 2


def test_the_same_address_gets_three_confirmations_a_day_whoever_asks(
    base: Settings, sandbox: Sandbox, clock: time_machine.Traveller
) -> None:
    """The same number 50 times, from 50 addresses behind the trusted proxy: 3 texts."""
    with app(base, peer="10.0.0.2", trusted_proxies=["10.0.0.0/8"]) as client:
        answers = [
            sign_up(
                client, 0, email=None, phone=mobile(1), channels=["sms"],
                headers={"X-Forwarded-For": f"203.0.113.{n}"},
            ).status_code
            for n in range(50)
        ]  # fmt: skip
    assert answers[:3] == [202] * 3
    assert set(answers[3:]) == {429}
    assert len(sandbox.messages("sms")) == 3


def test_x_forwarded_for_counts_only_from_a_trusted_proxy(
    base: Settings, clock: time_machine.Traveller
) -> None:
    spoofed = [{"X-Forwarded-For": f"203.0.113.{n}"} for n in range(10)]
    with app(base) as client:  # no trusted proxies: the header is anyone's say
        answers = [sign_up(client, n, headers=spoofed[n]).status_code for n in range(6)]
    assert answers == [202] * 5 + [429]
    with app(base, peer="10.0.0.2", trusted_proxies=["10.0.0.0/8"]) as client:
        # The client prepends what it likes; the proxy appends the address it saw.
        forged = {"X-Forwarded-For": "192.0.2.1, 198.51.100.99"}
        answers = [sign_up(client, 10 + n, headers=forged).status_code for n in range(6)]
    assert answers == [202] * 5 + [429], "the address the proxy saw counts, not the client's say"


def test_ipv6_clients_count_by_their_64(base: Settings, clock: time_machine.Traveller) -> None:
    with app(base, peer="10.0.0.2", trusted_proxies=["10.0.0.0/8"]) as client:
        answers = [
            sign_up(client, n, headers={"X-Forwarded-For": f"2001:db8:1:2::{n + 1:x}"}).status_code
            for n in range(6)
        ]
    assert answers == [202] * 5 + [429]


def test_past_the_sms_budget_sign_up_by_text_pauses_and_the_team_is_told_once(
    base: Settings, sandbox: Sandbox, clock: time_machine.Traveller
) -> None:
    settings = base.model_copy(
        update={
            "sms_confirmation_budget": "3/hour",
            "signup_limit_per_client": "1000/hour",
        }
    )
    with app(settings) as client:
        pipeline = client.app.state.pipeline  # type: ignore[attr-defined]
        records.add(
            pipeline.store,
            pipeline.registry,
            SubscriberIn(
                name="On call",
                email="oncall@example.org",
                channels=["email"],
                internal=True,
                confirmed=True,
            ),
        )
        refused_before = refusals(client.get("/metrics").text)
        texts = [
            sign_up(client, n, email=None, phone=mobile(n), channels=["sms"]) for n in range(8)
        ]
        assert [t.status_code for t in texts] == [202] * 3 + [503] * 5
        assert int(texts[-1].headers["Retry-After"]) > 0
        assert "sign-up by text message is paused" in texts[-1].json()["detail"]
        assert sign_up(client, 100).status_code == 202, "sign-up by email goes on"
        scrape = client.get("/metrics").text
        assert "outage_sms_confirmations_remaining 0.0" in scrape
        assert refusals(scrape) - refused_before == 5, "the counter is this process's, cumulative"
        notices = [m for m in sandbox.messages("email") if m["to"] == "oncall@example.org"]
        assert len(notices) == 1, "told once per window, not once per refusal"
        assert notices[0]["subject"] == "Sign-up by text paused: the confirmation budget is spent"
        assert "OUTAGE_SMS_CONFIRMATION_BUDGET" in notices[0]["body"]
        with pipeline.store.session() as session:
            (status,) = session.scalars(
                select(Delivery.status).where(Delivery.kind == MessageKind.NOTICE)
            ).all()
        assert status is DeliveryStatus.SENT, "a notice is a delivery row like any other"

        clock.shift(timedelta(hours=1, seconds=1))
        assert (
            sign_up(client, 50, email=None, phone=mobile(50), channels=["sms"]).status_code == 202
        )
        more = [
            sign_up(client, n, email=None, phone=mobile(n), channels=["sms"]) for n in range(51, 54)
        ]
        assert [t.status_code for t in more] == [202, 202, 503]
    notices = [m for m in sandbox.messages("email") if m["to"] == "oncall@example.org"]
    assert len(notices) == 2, "a new window, a new notice"
    assert len(sandbox.messages("sms")) == 6


def refusals(scrape: str) -> float:
    found = re.search(r'^outage_signups_refused_total\{reason="sms_budget"\} (\S+)$', scrape, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.mark.redis
def test_web_processes_sharing_redis_share_the_counters(
    web_settings: Settings, clock: time_machine.Traveller
) -> None:
    need_service(REDIS_URL, "Redis")
    prefix = f"{REDIS_PREFIX}:{uuid.uuid4().hex[:8]}"
    shared = web_settings.model_copy(update={"limits_url": REDIS_URL, "redis_prefix": prefix})
    with app(shared) as first, app(shared) as second:
        answers = [sign_up(first, n).status_code for n in range(3)]
        answers += [sign_up(second, n).status_code for n in range(3, 6)]
    assert answers == [202] * 5 + [429]


def test_the_status_page_form_is_throttled_too(
    base: Settings, sandbox: Sandbox, clock: time_machine.Traveller
) -> None:
    from tests.test_status_page import post_form

    with app(base) as client:
        answers = [post_form(client, {"name": "A", "email": f"a{n}@example.org"}) for n in range(6)]
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    refused = answers[-1]
    assert "Retry-After" in refused.headers
    assert "Too many confirmations were asked for" in refused.text
    assert 'value="a5@example.org"' in refused.text, "the form comes back filled in"
    assert len(sandbox.messages("email")) == 5


def test_the_preference_centres_resend_is_throttled(
    base: Settings, sandbox: Sandbox, clock: time_machine.Traveller
) -> None:
    with app(base) as client:
        pipeline = client.app.state.pipeline  # type: ignore[attr-defined]
        waiting = records.add(
            pipeline.store,
            pipeline.registry,
            SubscriberIn(name="Ada", phone=mobile(7), channels=["sms"]),
        )
        page = urlsplit(pipeline.links.url(LinkPurpose.MANAGE, waiting)).path
        resend = {"action": "resend", "field": "phone"}
        answers = [client.post(page, data=resend, follow_redirects=False) for _ in range(4)]
    assert [a.status_code for a in answers] == [303] * 3 + [429]
    assert "Retry-After" in answers[-1].headers
    assert re.search(r"we sent this address several confirmations already", answers[-1].text, re.I)
    assert len(sandbox.messages("sms")) == 3


def test_a_new_number_saved_past_its_limit_is_kept_and_confirmed_later(
    base: Settings, sandbox: Sandbox, clock: time_machine.Traveller
) -> None:
    """The preference centre saves the change (nothing accepted is lost) and says the
    confirmation waits; the throttle counted the number, not the person's other changes."""
    settings = base.model_copy(update={"signup_limit_per_address": "1/day"})
    with app(settings) as client:
        pipeline = client.app.state.pipeline  # type: ignore[attr-defined]
        ada = records.add(
            pipeline.store,
            pipeline.registry,
            SubscriberIn(name="Ada", email="ada@example.org", channels=["email"], confirmed=True),
        )
        others = records.add(
            pipeline.store,
            pipeline.registry,
            SubscriberIn(name="Bo", email="bo@example.org", channels=["email"], confirmed=True),
        )
        form = {
            "order": ["sms", "email"],
            "channels": ["sms", "email"],
            "email": "ada@example.org",
            "phone": mobile(9),
            "min_severity": "minor",
            "timezone": "UTC",
            "locale": "en",
        }
        for who in (others, ada):  # the number's one confirmation of the day goes to Bo
            page = urlsplit(pipeline.links.url(LinkPurpose.MANAGE, who)).path
            saved = client.post(page, data={**form, "email": who.email}, follow_redirects=False)
        assert saved.status_code == 303
        assert saved.headers["location"].endswith("?done=saved_unsent")
        assert records.list_all(pipeline.store)[0].phone == mobile(9), "the change is kept"
        assert "cannot send the confirmation just now" in client.get(saved.headers["location"]).text
    assert len(sandbox.messages("sms")) == 1
