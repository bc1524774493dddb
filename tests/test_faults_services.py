"""The fault tests of tests/test_faults.py on the other services a deployment depends on, with the
same real `outage worker` processes and sandbox:

1. Logs: under Celery, every delivery attempt is one JSON line on the worker's stderr, as from
   the embedded loop (they used to vanish after the start banner).
2. PostgreSQL restarted in the middle of a fan-out (a server of this module's own, stopped for
   2.5 s): the tasks that failed on the lost connections are retried, not forgotten, and the
   fan-out finishes by itself within 30 s of the restart, nothing lost, every extra copy counted.
3. RabbitMQ with two workers and the SMS account's limit at 40/s with bursts of 10, through a
   storm of 429s and 500s retried inside the sends (breaker off): no one-second window of
   requests, stamped by the workers as they left, ever holds more than rate x 1 s + burst, and
   provider_requests is exactly the requests the sandbox received.

Waits are bounded polls of the database; the pauses are fault injection, not timing assertions.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy.exc import OperationalError

from bench.services import PostgresServer, rabbitmq_available
from bench.services import rabbitmq_vhost as rabbitmq_vhost_of
from dispatcher.delivery import operations
from dispatcher.delivery.bootstrap import connect
from dispatcher.sandbox.server import Sandbox
from dispatcher.settings import Settings
from dispatcher.store import Base, make_engine
from tests.conftest import need_service
from tests.test_faults import (
    Deployment,
    RedisServer,
    add_subscribers,
    deployment_env,
    open_incident,
    settled,
    statuses,
    subscriber_of,
    tally,
    wait_until,
)

RABBITMQ_URL = os.environ.get("OUTAGE_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672")
LEASE_S = 3.0


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


def quick_settings(
    database_url: str, broker_url: str, sandbox: Sandbox, **extra: object
) -> Settings:
    """Leases, sweeps and retries on seconds, as in tests/test_faults.py."""
    values: dict[str, object] = {
        "database_url": database_url,
        "broker_url": broker_url,
        "sandbox_url": sandbox.url,
        "lease_s": LEASE_S,
        "sweep_every_s": 1,
        "sweep_stale_s": 3,
        "batch_size": 100,
        "broadcast": [],
        "rate_limits": {
            "sms": {"per_s": 1000, "burst": 50},
            "email": {"per_s": 1000, "burst": 1000},
        },
    }
    return Settings(**(values | extra))  # type: ignore[arg-type]


def received(sandbox: Sandbox) -> int:
    return sum(sandbox.stats()["recorded"].values())


# -- 1. logs ------------------------------------------------------------------------------------


def test_a_celery_worker_logs_every_attempt_as_one_json_line(
    database_url: str, sandbox: Sandbox, redis_server: RedisServer, tmp_path: Path
) -> None:
    need_service(redis_server.url, "Redis (a redis-server started by this test)")
    redis.Redis.from_url(redis_server.url).flushall()
    settings = quick_settings(database_url, redis_server.url, sandbox)
    deploy = Deployment(settings, deployment_env(settings), tmp_path, connect(settings))
    try:
        add_subscribers(deploy.pipeline.store, 3, [["sms"]])
        sandbox.inject_recipient_failure("+14155550002")  # s2's number: refused for good
        deploy.start_worker()
        deploy.pipeline.announce(open_incident(deploy.pipeline))
        wait_until("every delivery settled", lambda: settled(deploy.pipeline.store, 3), 30, deploy)
        deploy.stop()

        lines = (tmp_path / "worker0.log").read_text().splitlines()
        records = [json.loads(line) for line in lines if line.startswith("{")]
        attempts = [r for r in records if r.get("event") == "delivery_attempt"]
        assert Counter(r["outcome"] for r in attempts) == {"sent": 2, "failed": 1}, lines[-20:]
        assert len({r["delivery_id"] for r in attempts}) == 3, "one line per attempt"
        failed = next(r for r in attempts if r["outcome"] == "failed")
        assert failed["level"] == "warning" and "not a valid phone number" in failed["error"]
        assert all("+1415555000" not in line for line in lines), "numbers masked"
        assert any(r["logger"].startswith("celery") for r in records), "Celery's own lines too"
    finally:
        deploy.stop()
        deploy.pipeline.close()


# -- 2. PostgreSQL restarted ----------------------------------------------------------------------


@pytest.fixture
def postgres_server() -> Iterator[PostgresServer]:
    """A cluster of the test's own, to be stopped and started (initdb and pg_ctl)."""
    server = PostgresServer()
    server.init()
    yield server
    server.remove()


def settled_or_away(deploy: Deployment, total: int) -> bool:
    try:
        return settled(deploy.pipeline.store, total)
    except OperationalError:  # our own connections, while the server comes back
        return False


@pytest.mark.redis
@pytest.mark.postgres
def test_postgres_restarted_mid_fan_out_loses_nothing_and_recovers_by_itself(
    sandbox: Sandbox, redis_server: RedisServer, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    if not postgres_server.available:
        need_service("postgresql://127.0.0.1:1/", "initdb and pg_ctl (a cluster of the test's own)")
    need_service(redis_server.url, "Redis (a redis-server started by this test)")
    redis.Redis.from_url(redis_server.url).flushall()
    settings = quick_settings(postgres_server.url, redis_server.url, sandbox)
    deploy = Deployment(settings, deployment_env(settings), tmp_path, connect(settings))
    try:
        total = 1000
        sandbox.set_latency(5)
        add_subscribers(deploy.pipeline.store, total, [["sms"], ["email"]])
        started = time.monotonic()
        deploy.start_worker()
        deploy.pipeline.announce(open_incident(deploy.pipeline))
        wait_until("a fifth sent", lambda: received(sandbox) >= total // 5, 30, deploy)
        postgres_server.stop()
        at_stop = received(sandbox)
        time.sleep(2.5)  # the restart takes this long (fault injection, not an assertion)
        postgres_server.start()
        restarted = time.monotonic()
        wait_until("every delivery settled", lambda: settled_or_away(deploy, total), 60, deploy)
        recovered_s = time.monotonic() - restarted

        counts = statuses(deploy.pipeline.store)
        result = tally(deploy.pipeline.store, sandbox)
        figures = operations.stats(deploy.pipeline.store)
        print(
            f"\npostgres restart: {total} deliveries, stopped at {at_stop} received; "
            f"{dict(counts)}; duplicates {result.duplicates}, counted "
            f"{figures.possibly_sent_twice}; all told {recovered_s:.1f}s after the restart, "
            f"{time.monotonic() - started:.1f}s in all"
        )
        assert counts == {"sent": total}
        assert (result.deliveries, result.missing) == (total, 0)
        assert result.duplicated_but_not_counted == 0, "every extra copy is counted"
        assert recovered_s < 30, "recovered by itself within 30 s of the restart"
    finally:
        deploy.stop()
        deploy.pipeline.close()


# -- 3. RabbitMQ ----------------------------------------------------------------------------------


@pytest.fixture
def rabbitmq_vhost() -> Iterator[str]:
    """A virtual host of this test's own (its queues seen by no other run), as a broker URL."""
    need_service(RABBITMQ_URL + "//", "RabbitMQ")
    if not rabbitmq_available():
        need_service("amqp://127.0.0.1:1//", "rabbitmqctl (to make a virtual host of our own)")
    with rabbitmq_vhost_of(RABBITMQ_URL) as url:
        yield url


def busiest_second(departures: list[float]) -> int:
    """The most requests that left within any one second."""
    most, first = 0, 0
    for last, at in enumerate(departures):
        while at - departures[first] >= 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


@pytest.mark.postgres
def test_two_workers_on_rabbitmq_share_the_accounts_rate_retries_included(
    postgres_database: str, sandbox: Sandbox, rabbitmq_vhost: str, tmp_path: Path
) -> None:
    engine = make_engine(postgres_database)
    Base.metadata.drop_all(engine)  # this run's database, emptied as the database_url fixture does
    engine.dispose()
    per_s, burst = 40.0, 10
    settings = quick_settings(
        postgres_database,
        rabbitmq_vhost,
        sandbox,
        rate_limits={"sms": {"per_s": per_s, "burst": burst}},
    )
    env = deployment_env(settings, OUTAGE_BREAKER_CHANNELS="[]", OUTAGE_SEND_ATTEMPTS="3")
    deploy = Deployment(settings, env, tmp_path, connect(settings))
    try:
        total = 320
        sandbox.set_latency(5)
        add_subscribers(deploy.pipeline.store, total, [["sms"]])
        started = time.monotonic()
        deploy.start_worker()
        deploy.start_worker()
        deploy.pipeline.announce(open_incident(deploy.pipeline))
        wait_until("sending under way", lambda: received(sandbox) >= 40, 30, deploy)
        # A storm the retries inside each send answer: every one of them must take a token.
        sandbox.inject_outage("429", for_s=1.0, channel="sms", retry_after_s=0.05)
        sandbox.inject_outage("500", for_s=2.0, channel="sms")  # the second after the 429s
        wait_until(
            "every delivery settled", lambda: settled(deploy.pipeline.store, total), 60, deploy
        )

        departures = sandbox.departures("sms")
        figures = operations.stats(deploy.pipeline.store)
        per_subscriber = Counter(subscriber_of(m) for m in sandbox.messages("sms"))
        injected = sandbox.stats()["failures_injected"]
        print(
            f"\nrabbitmq, 2 workers, {per_s:g}/s burst {burst}: {total} SMS, "
            f"{len(departures)} requests (injected {injected}), busiest second "
            f"{busiest_second(departures)}; provider_requests {figures.provider_requests}; "
            f"{time.monotonic() - started:.1f}s"
        )
        assert injected["429"] and injected["500"], injected
        assert len(per_subscriber) == total and set(per_subscriber.values()) == {1}
        assert busiest_second(departures) <= per_s * 1 + burst, "never above the account's rate"
        assert len(departures) == sandbox.stats()["requests"]["sms"], "every request stamped"
        assert figures.provider_requests == len(departures), "every request counted"
    finally:
        deploy.stop()
        deploy.pipeline.close()
