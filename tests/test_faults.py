"""Delivery guarantees under real faults: real `outage worker` processes (Celery, late acks, each
worker sweeping on its own timer, no beat), our own redis-server (so it can be killed and
restarted without disturbing other tests), and the sandbox answering as the providers do,
failures included.

1. A worker is killed with SIGKILL in the middle of a fan-out of 2,000 deliveries and another is
   started, with no beat anywhere: every delivery ends sent, within seconds of the new worker
   starting; the sandbox holds every message at least once, and each extra copy belongs to a
   delivery counted as taken back from an expired lease (the unknowns), which are no more than
   the batches the dead worker held.
2. Redis is killed (its queue lost, no persistence) and restarted in the middle of a fan-out
   that was never even enqueued (the process "died" between the commit and the enqueue): the
   sweep finds it all and nothing is lost.
3. The provider answers 429, then 500, then times out, for a few seconds: the breaker opens
   (recorded), subscribers with email get the update there, the others wait without burning
   retries, everything is delivered once the provider recovers, and no window of requests ever
   exceeded the configured rate.

Timing: leases, the sweep and the breaker run on seconds here (settings from the environment);
waits are bounded polls of the database, never sleeps that an assertion depends on.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pytest
import redis
from sqlalchemy import func, insert, select

from bench.services import free_port
from dispatcher.delivery import operations
from dispatcher.delivery.bootstrap import connect
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents import lifecycle
from dispatcher.models import DeliveryStatus, IncidentIn, Severity
from dispatcher.sandbox.server import Sandbox
from dispatcher.settings import Settings
from dispatcher.store import Delivery, Store, Subscriber, utcnow
from tests.conftest import need_service
from tests.test_ratelimit import max_in_window

pytestmark = pytest.mark.redis

LEASE_S = 3.0
BATCH = 200
SETTLE_LIMIT_S = 60.0


class RedisServer:
    """A redis-server of this module's own, without persistence: a restart loses every queue."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            return  # need_service below skips (or, in CI, fails) with the reason
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()  # SIGKILL: no chance to save anything
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


@dataclass
class Deployment:
    """Workers against one database, Redis and sandbox; the test's own Pipeline to observe."""

    settings: Settings
    env: dict[str, str]
    directory: Path
    pipeline: Pipeline
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs_open: list[BinaryIO] = field(default_factory=list)

    def start_worker(self, *, beat: bool = False) -> subprocess.Popen[bytes]:
        log = (self.directory / f"worker{len(self.workers)}.log").open("wb")
        self.logs_open.append(log)
        command = [str(Path(sys.executable).parent / "outage"), "worker", "--concurrency", "2"]
        process = subprocess.Popen(
            [*command, "--beat"] if beat else command,
            env=self.env,
            cwd=self.directory,  # celery beat's schedule file lands here
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill -9 takes the pool with it
        )
        self.workers.append(process)
        return process

    def kill9(self, process: subprocess.Popen[bytes]) -> None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def stop(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        for log in self.logs_open:
            log.close()

    def logs(self) -> str:
        tails = []
        for log in sorted(self.directory.glob("worker*.log")):
            lines = log.read_text(errors="replace").splitlines()
            tails.append(f"--- {log.name}\n" + "\n".join(lines[-25:]))
        return "\n".join(tails)


def deployment_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OUTAGE_", "TWILIO_", "SENDGRID_", "X_"))
    }
    env.update(
        OUTAGE_DATABASE_URL=settings.database_url,
        OUTAGE_BROKER_URL=settings.broker_url,
        OUTAGE_SANDBOX_URL=str(settings.sandbox_url),
        OUTAGE_LEASE_S=str(settings.lease_s),
        OUTAGE_SWEEP_EVERY_S=str(settings.sweep_every_s),
        OUTAGE_SWEEP_STALE_S=str(settings.sweep_stale_s),
        OUTAGE_BATCH_SIZE=str(settings.batch_size),
        OUTAGE_BROADCAST="[]",
        OUTAGE_SEND_BACKOFF_S="0",
        OUTAGE_DELIVERY_BACKOFF_S="0.2",
        OUTAGE_DELIVERY_BACKOFF_MAX_S="1",
        OUTAGE_PROVIDER_TIMEOUT_S="1",
        OUTAGE_RATE_LIMITS=json.dumps(
            {ch: limit.model_dump() for ch, limit in settings.rate_limits.items()}
        ),
    )
    env.update(extra)
    return env


@pytest.fixture
def deploy(
    database_url: str, sandbox: Sandbox, redis_server: RedisServer, tmp_path: Path
) -> Iterator[Deployment]:
    need_service(redis_server.url, "Redis (a redis-server started by this test)")
    redis.Redis.from_url(redis_server.url).flushall()
    settings = Settings(
        database_url=database_url,
        broker_url=redis_server.url,
        sandbox_url=sandbox.url,
        lease_s=LEASE_S,
        sweep_every_s=1,
        sweep_stale_s=3,
        batch_size=BATCH,
        broadcast=[],
        rate_limits={"sms": {"per_s": 1000, "burst": 50}, "email": {"per_s": 1000, "burst": 1000}},
    )
    env = deployment_env(settings)
    running = Deployment(settings, env, tmp_path, connect(settings))
    yield running
    running.stop()
    running.pipeline.close()


def add_subscribers(store: Store, count: int, channels: list[list[str]]) -> None:
    """`count` confirmed subscribers, cycling through `channels`; written in bulk (the API's
    per-subscriber path would take longer than the test)."""
    now = utcnow()
    rows = [
        {
            "name": f"s{n}",
            "phone": f"+1415555{n:04d}",
            "email": f"s{n}@example.org",
            "channels": channels[n % len(channels)],
            "components": [],
            "min_severity": Severity.MINOR,
            "email_confirmed_at": now,
            "phone_confirmed_at": now,
        }
        for n in range(count)
    ]
    with store.session() as session:
        session.execute(insert(Subscriber), rows)


def open_incident(pipeline: Pipeline) -> int:
    posted = lifecycle.open_incident(
        pipeline.store,
        IncidentIn(title="Login failures", severity=Severity.CRITICAL, components=["auth"]),
    )
    return posted.update_id


def wait_until(condition: str, check: object, limit_s: float, deployment: Deployment) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    pytest.fail(f"{condition} not within {limit_s:.0f}s\n{deployment.logs()}")


def statuses(store: Store) -> Counter[str]:
    with store.session() as session:
        rows = session.execute(select(Delivery.status, func.count()).group_by(Delivery.status))
        return Counter({status.value: count for status, count in rows})


def settled(store: Store, expected: int) -> bool:
    counts = statuses(store)
    waiting = counts[DeliveryStatus.QUEUED] + counts[DeliveryStatus.SENDING]
    return counts.total() >= expected and waiting == 0


@dataclass(frozen=True)
class Tally:
    deliveries: int
    missing: int  # recipients the sandbox never received anything for
    duplicates: int  # extra copies the sandbox received
    unknowns: int  # deliveries taken back from an expired lease (the counted unknowns)
    duplicated_but_not_counted: int  # extra copies whose delivery is not among the unknowns


def tally(store: Store, sandbox: Sandbox) -> Tally:
    """Compare the database with what the providers received, per (channel, address)."""
    received = Counter((m["channel"], m["to"]) for m in sandbox.messages())
    with store.session() as session:
        rows = session.execute(
            select(Delivery.channel, Subscriber.phone, Subscriber.email, Delivery.lease_expiries)
            .join(Subscriber, Delivery.subscriber_id == Subscriber.id)
            .where(Delivery.status.in_([DeliveryStatus.SENT, DeliveryStatus.DELIVERED]))
        ).all()
    missing = duplicates = uncounted = unknowns = 0
    for channel, phone, email, expiries in rows:
        copies = received[(channel, phone if channel == "sms" else email)]
        missing += copies == 0
        duplicates += max(0, copies - 1)
        uncounted += max(0, copies - 1) if expiries == 0 else 0
        unknowns += expiries > 0
    return Tally(len(rows), missing, duplicates, unknowns, uncounted)


def subscriber_of(message: dict[str, object]) -> int:
    """The subscriber a sandbox record went to: s12 has +14155550012 and s12@example.org."""
    to = str(message["to"])
    return int(to[-4:]) if message["channel"] == "sms" else int(to.split("@")[0][1:])


def test_a_worker_killed_mid_fan_out_loses_nothing_and_counts_what_it_may_have_doubled(
    deploy: Deployment, sandbox: Sandbox
) -> None:
    total = 2000
    sandbox.set_latency(5)
    add_subscribers(deploy.pipeline.store, total, [["sms"], ["sms"], ["sms"], ["email"]])
    started = time.monotonic()
    first = deploy.start_worker()
    deploy.pipeline.announce(open_incident(deploy.pipeline))

    def received() -> int:
        return sum(sandbox.stats()["recorded"].values())

    wait_until("a third of the messages sent", lambda: received() >= total // 3, 30, deploy)
    deploy.kill9(first)
    at_kill = received()
    deploy.start_worker()  # no beat: the worker's own sweep takes the dead one's rows back
    restarted = time.monotonic()
    wait_until("every delivery settled", lambda: settled(deploy.pipeline.store, total), 60, deploy)
    recovered_s = time.monotonic() - restarted

    counts = statuses(deploy.pipeline.store)
    result = tally(deploy.pipeline.store, sandbox)
    figures = operations.stats(deploy.pipeline.store)
    print(
        f"\nkill -9: {total} deliveries, killed at {at_kill} received; {dict(counts)}; "
        f"duplicates {result.duplicates}, unknowns {result.unknowns}, "
        f"retried {figures.retried}; all told {recovered_s:.1f}s after the restart, "
        f"{time.monotonic() - started:.1f}s in all"
    )
    assert counts == {"sent": total}
    assert recovered_s < 30, "everyone told within 30 s of the new worker starting"
    assert (result.deliveries, result.missing) == (total, 0)
    assert result.duplicated_but_not_counted == 0, "every extra copy is a counted unknown"
    assert result.unknowns == figures.lease_expiries
    assert result.unknowns <= 2 * BATCH, "at most the batches the dead worker's pool held"


def test_redis_restarted_mid_fan_out_loses_nothing(
    deploy: Deployment, sandbox: Sandbox, redis_server: RedisServer
) -> None:
    total = 1000
    sandbox.set_latency(5)
    add_subscribers(deploy.pipeline.store, total, [["sms"], ["email"]])
    started = time.monotonic()
    deploy.start_worker()
    # Committed, never enqueued: the process that opened it "died" before telling the broker.
    open_incident(deploy.pipeline)

    def received() -> int:
        return sum(sandbox.stats()["recorded"].values())

    wait_until("a fifth of the messages sent", lambda: received() >= total // 5, 30, deploy)
    redis_server.kill()
    at_kill = received()
    time.sleep(1)  # the fault lasts a moment (fault injection, not a timing assertion)
    redis_server.start()
    wait_until("every delivery settled", lambda: settled(deploy.pipeline.store, total), 60, deploy)

    counts = statuses(deploy.pipeline.store)
    result = tally(deploy.pipeline.store, sandbox)
    print(
        f"\nredis restart: {total} deliveries, Redis killed at {at_kill} received; "
        f"{dict(counts)}; duplicates {result.duplicates}, unknowns {result.unknowns}; "
        f"{time.monotonic() - started:.1f}s"
    )
    assert counts == {"sent": total}
    assert (result.deliveries, result.missing) == (total, 0)
    assert result.duplicated_but_not_counted == 0


def test_a_failing_provider_opens_the_breaker_and_everything_goes_once_it_recovers(
    database_url: str, sandbox: Sandbox, redis_server: RedisServer, tmp_path: Path
) -> None:
    need_service(redis_server.url, "Redis (a redis-server started by this test)")
    redis.Redis.from_url(redis_server.url).flushall()
    per_s, burst = 150.0, 15
    settings = Settings(
        database_url=database_url,
        broker_url=redis_server.url,
        sandbox_url=sandbox.url,
        lease_s=LEASE_S,
        sweep_every_s=1,
        sweep_stale_s=3,
        batch_size=100,
        broadcast=[],
        rate_limits={"sms": {"per_s": per_s, "burst": burst}},
    )
    # Every provider request passes the bucket: retries go through the queue, none inside a send.
    env = deployment_env(
        settings,
        OUTAGE_SEND_ATTEMPTS="1",
        OUTAGE_BREAKER_THRESHOLD="5",
        OUTAGE_BREAKER_OPEN_S="1",
        OUTAGE_DELIVERY_ATTEMPTS="20",
    )
    deploy = Deployment(settings, env, tmp_path, connect(settings))
    try:
        total = 600
        add_subscribers(deploy.pipeline.store, total, [["sms"], ["sms", "email"]])
        started = time.monotonic()
        deploy.start_worker()
        deploy.pipeline.announce(open_incident(deploy.pipeline))
        wait_until("sending under way", lambda: len(sandbox.messages("sms")) >= 50, 30, deploy)
        # Then the provider fails for 3 s: rate limited, then erroring, then hanging.
        sandbox.inject_outage("429", for_s=1.0, channel="sms", retry_after_s=0.5)
        sandbox.inject_outage("500", for_s=2.0, channel="sms")
        sandbox.inject_outage("timeout", for_s=3.0, channel="sms")
        wait_until(
            "every delivery settled",
            lambda: settled(deploy.pipeline.store, total),
            SETTLE_LIMIT_S,
            deploy,
        )

        counts = statuses(deploy.pipeline.store)
        per_subscriber = Counter(subscriber_of(message) for message in sandbox.messages())
        with deploy.pipeline.store.session() as session:
            circuit = operations.circuits(session)["sms:+15005550006"]
        log = sandbox.request_log("sms")
        answers = Counter(status for _, status in log)
        figures = operations.stats(deploy.pipeline.store)
        injected = sandbox.stats()["failures_injected"]
        print(
            f"\nprovider faults: {total} subscribers, {dict(counts)}; sms requests {len(log)} "
            f"{dict(answers)}, injected {injected}; "
            f"retried {figures.retried} ({figures.retries} extra sends); "
            f"breaker {circuit.transitions} transitions, now {circuit.state}; "
            f"rate excess {max_in_window(log, burst, per_s)}; {time.monotonic() - started:.1f}s"
        )
        assert all(injected[kind] for kind in ("429", "500", "timeout")), injected
        assert counts[DeliveryStatus.FAILED] == 0
        assert counts[DeliveryStatus.FELL_BACK] > 0, "some went by email while the circuit was open"
        assert len(per_subscriber) == total, "everyone told"
        assert set(per_subscriber.values()) == {1}, "on one channel, once"
        assert circuit.state == "closed" and circuit.transitions >= 3
        assert max_in_window(log, burst, per_s) == 0, "never above the configured rate"
    finally:
        deploy.stop()
        deploy.pipeline.close()
