"""Our dispatcher under the benchmark: the embedded default, or Celery workers on a broker.

Both open one critical incident for every subscriber (or, with a scope, for those it hits) and
stop the clock when every delivery row is final (sent, failed, fell back...): "recorded", not
merely handed to a provider.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench.procstat import own_peak_rss_mb
from bench.workers import Workers, outage_worker
from dispatcher.delivery.bootstrap import connect
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.delivery.tasks import make_celery
from dispatcher.incidents import lifecycle
from dispatcher.models import DeliveryStatus, IncidentIn, Severity
from dispatcher.settings import RateLimit, Settings
from dispatcher.store import Delivery, Store

# The providers' real limits (settings.rate_limits: SMS 30/s, email 1,000/s) would make this a
# benchmark of the limits (25,000 SMS at 30/s take 14 minutes). The sandbox has none, so the
# benchmark lifts them far above what it can reach and says so in its output.
BENCH_RATE_LIMITS = {
    "sms": RateLimit(per_s=1_000_000, burst=1000),
    "email": RateLimit(per_s=1_000_000, burst=1000),
    "social": RateLimit(per_s=100 / 900, burst=100),
}
INCIDENT = IncidentIn(title="API errors", severity=Severity.CRITICAL, components=["api"])
OPEN = (DeliveryStatus.QUEUED, DeliveryStatus.SENDING)


@dataclass(frozen=True)
class OursConfig:
    database_url: str
    sandbox_url: str
    broker_url: str = "embedded"
    send_concurrency: int = 16
    extra: dict[str, Any] = field(default_factory=dict)  # further Settings fields
    affects: dict[str, list[str]] = field(default_factory=dict)  # the incident's scope

    @property
    def incident(self) -> IncidentIn:
        return INCIDENT.model_copy(update={"affects": self.affects})

    def settings(self) -> Settings:
        return Settings(
            database_url=self.database_url,
            broker_url=self.broker_url,
            sandbox_url=self.sandbox_url,
            send_concurrency=self.send_concurrency,
            rate_limits=BENCH_RATE_LIMITS,
            secret_key="benchmark-secret-key",
            **self.extra,
        )

    def environment(self) -> dict[str, str]:
        """The same settings for worker processes, as OUTAGE_* variables."""
        env = {
            "OUTAGE_DATABASE_URL": self.database_url,
            "OUTAGE_BROKER_URL": self.broker_url,
            "OUTAGE_SANDBOX_URL": self.sandbox_url,
            "OUTAGE_SEND_CONCURRENCY": str(self.send_concurrency),
            "OUTAGE_SECRET_KEY": "benchmark-secret-key",
            "OUTAGE_RATE_LIMITS": json.dumps(
                {name: limit.model_dump() for name, limit in BENCH_RATE_LIMITS.items()}
            ),
        }
        for name, value in self.extra.items():
            env[f"OUTAGE_{name.upper()}"] = (
                json.dumps(value) if not isinstance(value, str) else value
            )
        return env


def open_counts(store: Store, update_id: int) -> tuple[int, int]:
    """(deliveries written, deliveries not yet final) of one update."""
    with store.session() as session:
        total, pending = session.execute(
            select(
                func.count(),
                func.count().filter(Delivery.status.in_(OPEN)),
            ).where(Delivery.update_id == update_id)
        ).one()
    return int(total), int(pending)


def statuses(store: Store, update_id: int) -> dict[str, int]:
    with store.session() as session:
        rows = session.execute(
            select(Delivery.status, func.count())
            .where(Delivery.update_id == update_id)
            .group_by(Delivery.status)
        ).all()
    return {str(status): int(count) for status, count in rows}


def embedded(config: OursConfig) -> dict[str, Any]:
    """The embedded default in this (spawned) process: fan out and drain, as `outage serve`'s
    runner thread does."""
    pipeline = Pipeline(config.settings())
    try:
        posted = lifecycle.open_incident(pipeline.store, config.incident)
        accepted = time.time()
        pipeline.announce(posted.update_id, wait_s=0)
        finished = time.time()
        counts = statuses(pipeline.store, posted.update_id)
    finally:
        pipeline.close()
    return {
        "accepted": accepted,
        "finished": finished,
        "statuses": counts,
        "peak_rss_mb": {"embedded": own_peak_rss_mb()},
    }


def with_workers(
    config: OursConfig, workers: int, expected: int, root: Path, log: Path
) -> dict[str, Any]:
    """`outage worker --concurrency K` on the broker; this process only opens the incident and
    watches the rows."""
    celery = make_celery(config.settings())
    celery.control.purge()  # a task left by an aborted run would name rows of another database

    def ping() -> int:
        return len(celery.control.ping(timeout=0.5))

    pool = Workers([outage_worker(workers)], config.environment(), root, log, ping)
    try:
        pipeline = connect(config.settings())
        try:
            posted = lifecycle.open_incident(pipeline.store, config.incident)
            accepted = time.time()
            pipeline.announce(posted.update_id)
            while True:
                total, pending = open_counts(pipeline.store, posted.update_id)
                if total >= expected and pending == 0:
                    break
                time.sleep(0.05)
            finished = time.time()
            counts = statuses(pipeline.store, posted.update_id)
        finally:
            pipeline.close()
        memory = pool.peak_rss_mb()
    finally:
        pool.stop()
    return {"accepted": accepted, "finished": finished, "statuses": counts, "peak_rss_mb": memory}
