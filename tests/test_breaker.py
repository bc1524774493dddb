"""The circuit breaker: its state machine on both backends (with a clock we move by hand), its
audit trail, and what `send_batch` does while a provider's circuit is open."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import select

from channels.base import Outcome
from dispatcher.delivery import operations
from dispatcher.delivery.breaker import (
    Breaker,
    BreakerState,
    Circuits,
    DatabaseCircuits,
    RedisCircuits,
)
from dispatcher.delivery.guards import Guards, account_key
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents import lifecycle, reports
from dispatcher.models import DeliveryStatus, FailureKind, IncidentIn, Severity, SubscriberIn
from dispatcher.sandbox.server import Sandbox
from dispatcher.settings import Settings
from dispatcher.store import AuditEvent, Store
from dispatcher.subscribers import records
from tests.conftest import REDIS_PREFIX, REDIS_URL, need_service


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["database", pytest.param("redis", marks=pytest.mark.redis)])
def circuits(request: pytest.FixtureRequest) -> Iterator[Circuits]:
    if request.param == "database":
        yield DatabaseCircuits(request.getfixturevalue("store"))
        return
    request.getfixturevalue("redis_db")
    shared = RedisCircuits(redis.Redis.from_url(REDIS_URL), REDIS_PREFIX)
    yield shared
    shared.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    running = Store(f"sqlite:///{tmp_path / 'breaker.sqlite3'}")
    yield running
    running.close()


def transitions(store: Store) -> list[tuple[str, str]]:
    with store.session() as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
        return [(e.detail["previous"], e.action) for e in events if e.actor == "system"]


def test_opens_after_threshold_failures_in_a_row_then_probes_once_and_closes(
    circuits: Circuits, store: Store
) -> None:
    clock = Clock()
    breaker = Breaker(circuits, store, threshold=3, open_s=10, clock=clock)
    assert breaker.permit("sms:+1").allowed
    breaker.report("sms:+1", ok=0, failed=2)
    assert breaker.permit("sms:+1").state is BreakerState.CLOSED
    breaker.report("sms:+1", ok=0, failed=1)  # the third in a row

    held = breaker.permit("sms:+1")
    assert not held.allowed and held.state is BreakerState.OPEN and held.wait_s == 10
    assert not breaker.usable("sms:+1")
    assert breaker.permit("email:a").allowed, "circuits are per provider account"

    clock.now += 10
    probe = breaker.permit("sms:+1")
    assert probe.allowed and probe.probe
    other = breaker.permit("sms:+1")
    assert not other.allowed and other.state is BreakerState.HALF_OPEN, "one probe at a time"
    breaker.report("sms:+1", ok=1, failed=0)
    assert breaker.permit("sms:+1") == breaker.permit("sms:+1")
    assert breaker.permit("sms:+1").state is BreakerState.CLOSED

    assert transitions(store) == [
        ("closed", "breaker:open"),
        ("open", "breaker:half_open"),
        ("half_open", "breaker:closed"),
    ]


def test_a_failed_probe_opens_it_again_and_a_vanished_prober_is_replaced(
    circuits: Circuits, store: Store
) -> None:
    clock = Clock()
    breaker = Breaker(circuits, store, threshold=1, open_s=5, clock=clock)
    breaker.report("k", ok=0, failed=1)
    clock.now += 5
    assert breaker.permit("k").probe
    breaker.report("k", ok=0, failed=1)
    assert breaker.permit("k").state is BreakerState.OPEN

    clock.now += 5
    assert breaker.permit("k").probe  # this prober never reports (its worker died)
    clock.now += 5
    assert breaker.permit("k").probe, "after open_s another worker may probe"
    assert [action for _, action in transitions(store)] == [
        "breaker:open",
        "breaker:half_open",
        "breaker:open",
        "breaker:half_open",
    ]


def test_any_success_resets_the_count(circuits: Circuits, store: Store) -> None:
    breaker = Breaker(circuits, store, threshold=3, open_s=5, clock=Clock())
    breaker.report("k", ok=0, failed=2)
    breaker.report("k", ok=1, failed=5)  # partial failure: retried, not a reason to stop
    breaker.report("k", ok=0, failed=2)
    assert breaker.permit("k").state is BreakerState.CLOSED
    assert transitions(store) == []


@pytest.mark.parametrize("shared", ["database", pytest.param("redis", marks=pytest.mark.redis)])
def test_workers_sharing_circuits_agree_on_a_single_probe(store: Store, shared: str) -> None:
    """Eight workers, each with its own connection to where circuits live, as eight processes
    would be: one probe between them."""
    if shared == "redis":
        need_service(REDIS_URL, "Redis")
    clock = Clock()
    workers = [
        Breaker(
            RedisCircuits(redis.Redis.from_url(REDIS_URL), REDIS_PREFIX)
            if shared == "redis"
            else DatabaseCircuits(Store(store.url)),
            store,
            1,
            5,
            clock,
        )
        for _ in range(8)
    ]
    workers[0].report("k", ok=0, failed=1)
    clock.now += 5
    probes: list[bool] = []
    threads = [
        threading.Thread(target=lambda b=b: probes.append(b.permit("k").probe)) for b in workers
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert probes.count(True) == 1
    assert [action for _, action in transitions(store)] == ["breaker:open", "breaker:half_open"]


@pytest.mark.redis
def test_a_circuit_opened_by_one_deployment_stays_closed_for_another_on_the_same_redis(
    store: Store, redis_db: redis.Redis
) -> None:
    """Circuits live under the deployment's OUTAGE_REDIS_PREFIX: staging's failing SMS account
    does not stop production's, though both share one Redis database."""

    def guards(prefix: str) -> Guards:
        settings = Settings(broker_url=REDIS_URL, redis_prefix=prefix, breaker_threshold=1)
        return Guards.from_settings(settings, store)

    staging = f"{REDIS_PREFIX}:staging"
    production, staging_guards = guards(REDIS_PREFIX), guards(staging)
    try:
        staging_guards.report("sms", [Outcome(key=1, failure=FailureKind.TRANSIENT)])
        assert not staging_guards.usable("sms")
        assert production.usable("sms")
        account = account_key(staging_guards.settings, "sms")
        assert redis_db.exists(f"{staging}:breaker:{account}")
        assert not redis_db.exists(f"{REDIS_PREFIX}:breaker:{account}")
    finally:
        production.close()
        staging_guards.close()


# -- an open circuit in send_batch ------------------------------------------------------------


@pytest.fixture
def breaker_pipeline(settings: Settings) -> Iterator[Pipeline]:
    running = Pipeline(
        settings.model_copy(update={"breaker_threshold": 2, "breaker_open_s": 0.3, "broadcast": []})
    )
    yield running
    running.close()


def test_while_sms_is_down_subscribers_with_email_get_it_there_and_the_rest_wait_unpunished(
    breaker_pipeline: Pipeline, sandbox: Sandbox
) -> None:
    pipeline = breaker_pipeline
    for n in range(6):
        records.add(
            pipeline.store,
            pipeline.registry,
            SubscriberIn(
                name=f"s{n}",
                phone=f"+1415555{n:04d}",
                email=f"s{n}@example.org",
                channels=["sms", "email"] if n % 2 else ["sms"],
                confirmed=True,
            ),
        )
    sandbox.inject_outage("503", for_s=60, channel="sms")
    posted = lifecycle.open_incident(
        pipeline.store, IncidentIn(title="x", severity=Severity.MAJOR, components=["api"])
    )
    pipeline.fan_out(posted.update_id)
    pipeline.drain()

    lines = {
        (line.subscriber, line.channel): line
        for line in reports.deliveries(pipeline.store, posted.incident_id)
    }
    for n in (1, 3, 5):
        assert lines[(f"s{n}", "sms")].status == DeliveryStatus.FELL_BACK
        assert lines[(f"s{n}", "email")].status == DeliveryStatus.SENT
    for n in (0, 2, 4):
        held = lines[(f"s{n}", "sms")]
        assert held.status == DeliveryStatus.QUEUED
        assert held.sends <= 1, "an open circuit holds the queue without burning retries"
    circuit = operations.stats(pipeline.store).circuits["sms:+15005550006"]
    assert circuit.state == "open"

    sandbox.clear_faults()  # the provider recovers: the probe closes the circuit
    pipeline.drain(wait_s=10)
    lines = {
        (line.subscriber, line.channel): line
        for line in reports.deliveries(pipeline.store, posted.incident_id)
    }
    for n in (0, 2, 4):
        assert lines[(f"s{n}", "sms")].status == DeliveryStatus.SENT
    delivered = sorted(str(m["to"]) for m in sandbox.messages())
    assert len(delivered) == 6 == len(set(delivered))
    circuit = operations.stats(pipeline.store).circuits["sms:+15005550006"]
    assert (circuit.state, circuit.transitions) == ("closed", 3)


def test_a_sandbox_outage_ends_by_itself(sandbox: Sandbox) -> None:
    """The fault the breaker tests lean on: every request fails, until the time is up."""
    sandbox.inject_outage("500", for_s=0.3, channel="webhook")
    assert httpx.post(f"{sandbox.url}/hooks/x", json={}).status_code == 500
    assert httpx.post(f"{sandbox.url}/hooks/x", json={}).status_code == 500
    deadline = time.monotonic() + 5
    while httpx.post(f"{sandbox.url}/hooks/x", json={}).status_code != 200:
        assert time.monotonic() < deadline, "the outage did not end"
        time.sleep(0.05)
    statuses = [status for _, status in sandbox.request_log("webhook")]
    assert statuses[:2] == [500, 500] and statuses[-1] == 200
    assert sandbox.stats()["pending_faults"] == 0
    with pytest.raises(ValueError, match="for_s"):
        sandbox.inject_outage("500", for_s=0)
