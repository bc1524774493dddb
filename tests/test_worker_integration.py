"""The scaled path: a real Redis broker and real `outage worker` processes, on SQLite and
PostgreSQL, sending through the sandbox. Nothing here is patched or eager."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from bench.population import populate
from dispatcher.delivery.bootstrap import connect
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents import lifecycle, reports
from dispatcher.models import DeliveryStatus, IncidentIn, Severity, SubscriberIn
from dispatcher.sandbox.server import Sandbox
from dispatcher.settings import Settings
from dispatcher.store import Update
from dispatcher.subscribers import records
from tests.conftest import REDIS_URL, need_service

pytestmark = pytest.mark.redis


def wait_until_settled(pipeline: Pipeline, incident_id: int, expected: int, limit_s: float) -> None:
    """Poll the records until every delivery is final (a bound, not a timing assertion)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        lines = reports.deliveries(pipeline.store, incident_id)
        if len(lines) >= expected and all(line.status.is_final for line in lines):
            return
        time.sleep(0.2)
    summary = reports.delivery_summary(pipeline.store, incident_id)
    pytest.fail(f"deliveries not settled within {limit_s}s: {summary}")


@pytest.fixture
def broker_settings(database_url: str, sandbox: Sandbox) -> Settings:
    need_service(REDIS_URL, "Redis")
    redis.Redis.from_url(REDIS_URL).flushdb()
    return Settings(
        database_url=database_url,
        broker_url=REDIS_URL,
        sandbox_url=sandbox.url,
        send_backoff_s=0,
        delivery_backoff_s=0.2,
        delivery_backoff_max_s=0.5,
    )


def start_worker(settings: Settings, log_path: Path, processes: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "OUTAGE_DATABASE_URL": settings.database_url,
        "OUTAGE_BROKER_URL": settings.broker_url,
        "OUTAGE_SANDBOX_URL": str(settings.sandbox_url),
        "OUTAGE_SEND_BACKOFF_S": "0",
        "OUTAGE_DELIVERY_BACKOFF_S": "0.2",
        "OUTAGE_DELIVERY_BACKOFF_MAX_S": "0.5",
    }
    outage = str(Path(sys.executable).parent / "outage")
    command = [outage, "worker", "--concurrency", str(processes)]
    with log_path.open("wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            command,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture
def worker(broker_settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = start_worker(broker_settings, tmp_path / "worker.log", 2)
    yield process
    stop_worker(process)


def test_workers_fan_out_over_redis_with_retries_and_fallbacks(
    broker_settings: Settings, worker: subprocess.Popen[bytes], sandbox: Sandbox
) -> None:
    pipeline = connect(broker_settings)
    try:
        for n in range(40):
            records.add(
                pipeline.store,
                pipeline.registry,
                SubscriberIn(
                    name=f"s{n}",
                    email=f"s{n}@example.org",
                    phone=f"+1415555{n:04d}",
                    channels=["sms", "email"] if n % 2 else ["email"],
                    confirmed=True,
                ),
            )
        sandbox.inject_recipient_failure("+14155550001")  # subscriber s1 falls back to email
        sandbox.inject_failures(5, "503", channel="sms")  # some SMS need a retry

        posted = lifecycle.open_incident(
            pipeline.store,
            IncidentIn(title="Login failures", severity=Severity.CRITICAL, components=["auth"]),
        )
        pipeline.announce(posted.update_id)

        wait_until_settled(pipeline, posted.incident_id, expected=42, limit_s=60)
        lines = reports.deliveries(pipeline.store, posted.incident_id)
        by_status: dict[str, int] = {}
        for line in lines:
            by_status[line.status] = by_status.get(line.status, 0) + 1
        assert by_status == {DeliveryStatus.SENT: 41, DeliveryStatus.FELL_BACK: 1}
        # Exactly one message per subscriber, plus the public post: nothing lost, nothing twice.
        recipients = [m["to"] for m in sandbox.messages() if m["channel"] != "social"]
        assert len(recipients) == 40 == len(set(recipients))
        assert "s1@example.org" in recipients
        assert len(sandbox.messages("social")) == 1
    finally:
        pipeline.close()


def test_one_worker_process_sends_the_public_post_before_its_fan_out_ends(
    broker_settings: Settings, sandbox: Sandbox, tmp_path: Path
) -> None:
    """The fan-out task sends its first batch itself: in a deployment of one worker process the
    first message used to wait until every row of the audience was written."""
    audience = 2500  # three chunks of rows: the post must leave after the first
    pipeline = connect(broker_settings)
    process = start_worker(broker_settings, tmp_path / "worker.log", 1)
    try:
        populate(pipeline.store, audience)
        posted = lifecycle.open_incident(
            pipeline.store,
            IncidentIn(title="API errors", severity=Severity.CRITICAL, components=["api"]),
        )
        pipeline.announce(posted.update_id)
        wait_until_settled(pipeline, posted.incident_id, expected=audience + 1, limit_s=120)
        with pipeline.store.session() as session:
            fanned_out_at = session.get_one(Update, posted.update_id).fanned_out_at
        assert fanned_out_at is not None
        (post,) = sandbox.messages("social")
        assert datetime.fromisoformat(post["at"]) < fanned_out_at.replace(tzinfo=UTC)
        recipients = [m["to"] for m in sandbox.messages() if m["channel"] != "social"]
        assert len(recipients) == audience == len(set(recipients))
    finally:
        stop_worker(process)
        pipeline.close()
