"""The Celery app and its tasks. Each task body is one call into the Pipeline.

Reliability settings follow ../shared/notes/celery-reliability.md: late acks and reject-on-lost so
a killed worker's task comes back, a visibility timeout far above any task, retries beyond that
left to the sweep (rows with a due time) rather than to long countdowns that Redis would double.

Recovery does not wait for the broker: each worker's main process sweeps on a timer of its own
(dispatcher/delivery/sweeper.py), so a deployment of workers alone, without beat, takes back
what a dead worker held within its lease.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

from celery import Celery, signals

from dispatcher.delivery.bootstrap import connect
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.delivery.sweeper import Sweeper
from dispatcher.logs import setup_logging
from dispatcher.settings import Settings, get_settings
from dispatcher.store import DATABASE_AWAY

log = logging.getLogger(__name__)

VISIBILITY_TIMEOUT_S = 3600
MAX_COUNTDOWN_S = VISIBILITY_TIMEOUT_S // 2  # a longer delay is left to the sweep


def make_celery(settings: Settings) -> Celery:
    broker = settings.broker_url if not settings.embedded else "memory://"
    app = Celery("outage", broker=broker)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_S},
        # Our logging, not Celery's (see `_our_logging`); and stderr left alone: Celery's
        # redirection made it a logger whose records came back to our handler, which wrote
        # them to that logger again, and its recursion guard dropped every line.
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        beat_schedule={
            "sweep": {"task": "outage.sweep", "schedule": settings.sweep_every_s},
        },
    )
    return app


app = make_celery(get_settings())


class CeleryQueue:
    """The Queue that publishes to the broker; used by every process when a broker is set."""

    def __init__(self, celery: Celery) -> None:
        self.celery = celery

    def fan_out(self, update_id: int) -> None:
        self.celery.send_task("outage.fan_out", args=[update_id])

    def send(self, delivery_ids: list[int], delay_s: float = 0.0) -> None:
        if delay_s > MAX_COUNTDOWN_S:
            return  # the row's due_at and the sweep carry it
        self.celery.send_task("outage.send", args=[delivery_ids], countdown=delay_s or None)


@cache
def pipeline() -> Pipeline:
    """One Pipeline per worker process, built on its first task (after the fork)."""
    return connect(get_settings(), CeleryQueue(app))


# A task that failed because the database went away (restarted, a connection dropped) is
# published again by the broker after 1, 2, 4 … 10 s, for about five minutes, instead of being
# acknowledged and forgotten; the pool hands it a fresh connection (pool_pre_ping). Later than
# that, the sweep finds its rows.
DATABASE_RETRIES: dict[str, Any] = {
    "autoretry_for": DATABASE_AWAY,
    "retry_backoff": 1,
    "retry_backoff_max": 10,
    "retry_jitter": True,
    "max_retries": 30,
}


@app.task(name="outage.fan_out", **DATABASE_RETRIES)
def fan_out_task(update_id: int) -> None:
    pipeline().fan_out(update_id, send_first=True)


@app.task(name="outage.send", **DATABASE_RETRIES)
def send_task(delivery_ids: list[int]) -> None:
    pipeline().send(delivery_ids)


@app.task(name="outage.sweep")
def sweep_task() -> None:
    pipeline().sweep(stale_s=get_settings().sweep_stale_s)


@signals.setup_logging.connect
def _our_logging(loglevel: int | str | None = None, **_: Any) -> None:
    """Celery configures no logging when this signal has a receiver: the worker and each pool
    process log as every `outage` command does, one redacted JSON line per record (delivery
    attempts, errors, Celery's own lines) when stderr is not a terminal."""
    setup_logging(loglevel or logging.INFO)


@signals.worker_process_init.connect
def _warm(**_: Any) -> None:
    """Each pool process readies its pipeline as it starts, not on its first task."""
    _forget_parents_sweeper()
    pipeline().warm()


@signals.worker_process_shutdown.connect
def _finish(**_: Any) -> None:
    """A pool process stopping (a warm shutdown) records the answers still out first."""
    if pipeline.cache_info().currsize:
        pipeline().close()


class _MainProcess:
    """The worker's main process: its own Pipeline (never shared with the pool, whose
    processes build theirs after the fork) and the sweeper thread that uses it."""

    pipeline: Pipeline | None = None
    sweeper: Sweeper | None = None


@signals.worker_ready.connect
def _start_sweeper(**_: Any) -> None:
    """Sweep from the main process, now (what a crashed predecessor left behind) and then every
    `sweep_every_s`, whether or not beat runs."""
    settings = get_settings()
    own = _MainProcess.pipeline = connect(settings, CeleryQueue(app))
    _MainProcess.sweeper = Sweeper(
        lambda: own.sweep(stale_s=settings.sweep_stale_s), settings.sweep_every_s
    )
    _MainProcess.sweeper.start()


@signals.worker_shutdown.connect
def _stop_sweeper(**_: Any) -> None:
    if _MainProcess.sweeper is not None:
        _MainProcess.sweeper.stop()
    if _MainProcess.pipeline is not None:
        _MainProcess.pipeline.close()


def _forget_parents_sweeper() -> None:
    """A pool process forked after the main process's sweeper started inherits its Pipeline:
    drop it without closing the parent's database connections (SQLAlchemy's advice after a
    fork), and the sweeper, whose thread did not come along."""
    inherited = _MainProcess.pipeline
    if inherited is not None:
        inherited.store.engine.dispose(close=False)
    _MainProcess.pipeline = _MainProcess.sweeper = None
