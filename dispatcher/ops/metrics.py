"""Prometheus metrics, computed from the database at scrape time.

Why from the database: the deliveries are written by many worker processes (and on the embedded
default by the web process itself), and the database already holds every fact a metric needs.
A collector that asks it when Prometheus scrapes makes `GET /metrics` on any one web process
right for the whole deployment, with no multiprocess files, no push gateway and no counter lost
when a worker restarts. Only what exists in one process alone is counted in that process: the
monitoring webhooks it received (`WEBHOOKS_RECEIVED`).

What a scrape costs (`DatabaseCollector.collect`), at most once per `cache_s` (5 s) whatever the
number of scrapers:
  1. one GROUP BY pass over `deliveries` (channel, status, error_reason): counts, attempt sums,
     the oldest due time of queued rows; O(rows), no join;
  2. one pass over the sent deliveries joined to their update by primary key, summing CASE
     buckets for the accepted-to-sent histogram; O(sent rows);
  3. one COUNT of updates not yet fanned out, on the `fanned_out_at` index;
  4. one read of `source_tests` (a row per monitoring source, at most);
  5. one Redis HGETALL per breaker channel (when Redis is the broker).
Measured on SQLite, 200,000 deliveries: about 0.3 s for the lot (`outage_metrics_query_seconds`
reports it on every scrape); PostgreSQL is faster. The histogram must be computed over every row
ever sent, not a window: a Prometheus histogram is a counter, and a window would make it go down.

Metric names and labels (see the README's "Operating it" section):
  outage_deliveries{channel,status}                   gauge: delivery rows in each status now
  outage_delivery_attempts_total{channel}             counter: provider requests, retries included
  outage_delivery_retries_total{channel}              counter: requests beyond each one's first
  outage_delivery_fallbacks_total{channel}            counter: given up here for the next channel
  outage_delivery_errors{channel,reason}              gauge: deliveries by their latest failure
  outage_delivery_latency_seconds{channel}            histogram: update accepted -> delivery sent
  outage_queue_depth{channel}                         gauge: deliveries queued or being sent
  outage_queue_oldest_seconds{channel}                gauge: how long the oldest due one waits
  outage_updates_pending_fanout                       gauge: updates not yet fanned out
  outage_circuit_breaker_state{channel,state}         gauge: 1 for the circuit's current state
  outage_database_up                                  gauge: 1 when the queries above succeeded
  outage_metrics_query_seconds                        gauge: what the last collection took
  outage_webhooks_received_total{source,outcome}      counter, this process: monitoring webhooks
  outage_signups_refused_total{reason}                counter, this process: sign-ups and
                                                      confirmations refused by the throttle
  outage_sms_confirmations_remaining                  gauge: confirmation texts left in the
                                                      budget's window (0: sign-up by text paused)
  outage_monitoring_test_received_timestamp_seconds{source}  gauge: a source's last test (Unix)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import ColumnElement, Float, case, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from dispatcher.delivery.breaker import BreakerState, Circuits, RedisCircuits
from dispatcher.delivery.guards import account_key
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.delivery.ratelimit import SharedStateUnavailable, uses_redis
from dispatcher.ingest.source_tests import last_received
from dispatcher.models import DeliveryStatus, FailureReason
from dispatcher.store import Delivery, Store, Update, utcnow

log = logging.getLogger(__name__)

# Seconds from an update being accepted to a delivery of it being sent: a notice inside a minute
# is good, inside five acceptable, later than that an alert (config/prometheus-rules.yml).
LATENCY_BUCKETS: tuple[float, ...] = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
CACHE_S = 5.0

# The one counter of this process alone: which monitoring webhooks it took, and how they ended.
WEBHOOKS_RECEIVED = Counter(
    "outage_webhooks_received",
    "Monitoring webhooks received by this process, by source and outcome",
    ["source", "outcome"],
    registry=None,  # registered in each app's registry (registry_for), not the global one
)


# Sign-ups and confirmations the throttle refused, by dispatcher.subscribers.throttle.Reason.
SIGNUPS_REFUSED = Counter(
    "outage_signups_refused",
    "Sign-ups and confirmations refused by the throttle in this process, by reason",
    ["reason"],
    registry=None,
)


def webhook_outcome(status_code: int) -> str:
    """The outcome label for a webhook's HTTP answer: a closed set, so cardinality stays small."""
    return {
        401: "unauthorized",
        403: "unauthorized",
        413: "too_large",
        422: "invalid",
    }.get(status_code, "accepted" if status_code < 400 else "error")


class SecondsBetween(FunctionElement[float]):
    """`end - start` in seconds, as a float, on SQLite and PostgreSQL: the one place where the two
    differ, so the histogram query above it is the same on both."""

    type = Float()
    inherit_cache = True
    name = "seconds_between"


@compiles(SecondsBetween, "sqlite")
def _seconds_between_sqlite(element: SecondsBetween, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = list(element.clauses)
    return (
        f"((julianday({compiler.process(end, **kw)}) - "
        f"julianday({compiler.process(start, **kw)})) * 86400.0)"
    )


@compiles(SecondsBetween, "postgresql")
def _seconds_between_postgresql(element: SecondsBetween, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = list(element.clauses)
    return (
        f"CAST(EXTRACT(EPOCH FROM ({compiler.process(end, **kw)} - "
        f"{compiler.process(start, **kw)})) AS DOUBLE PRECISION)"
    )


@dataclass
class ChannelLatency:
    """The accepted-to-sent histogram of one channel: cumulative counts per bucket bound."""

    buckets: list[int]  # deliveries sent within LATENCY_BUCKETS[i] seconds (cumulative)
    count: int
    sum_s: float


EMPTY_LATENCY = ChannelLatency([0] * len(LATENCY_BUCKETS), 0, 0.0)


@dataclass
class Snapshot:
    """What the database says at one moment; the metric families are built from this."""

    deliveries: dict[tuple[str, str], int] = field(default_factory=dict)  # (channel, status)
    attempts: dict[str, int] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)
    errors: dict[tuple[str, str], int] = field(default_factory=dict)  # (channel, reason)
    oldest_due: dict[str, datetime] = field(default_factory=dict)  # queued rows only
    latency: dict[str, ChannelLatency] = field(default_factory=dict)
    pending_fanout: int = 0
    last_tests: dict[str, datetime] = field(default_factory=dict)  # source -> its last test
    taken_at: datetime = field(default_factory=utcnow)

    def queue_depth(self, channel: str) -> int:
        return sum(
            self.deliveries.get((channel, status), 0)
            for status in (DeliveryStatus.QUEUED, DeliveryStatus.SENDING)
        )

    def oldest_queued_s(self, channel: str) -> float:
        """Seconds the longest-waiting due delivery has waited (0: none, or only later retries)."""
        due = self.oldest_due.get(channel)
        return 0.0 if due is None else max(0.0, (self.taken_at - due).total_seconds())


def _aware(moment: datetime) -> datetime:
    """min() over SQLite bypasses the column type and hands back a naive UTC datetime."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=utcnow().tzinfo)


def snapshot(store: Store) -> Snapshot:
    """Read every delivery metric in three aggregate queries, and the sources' last tests (see
    the module docstring)."""
    result = Snapshot()
    retries: ColumnElement[int] = case((Delivery.attempts > 1, Delivery.attempts - 1), else_=0)
    with store.session() as session:
        rows = session.execute(
            select(
                Delivery.channel,
                Delivery.status,
                Delivery.error_reason,
                func.count(),
                func.coalesce(func.sum(Delivery.attempts), 0),
                func.coalesce(func.sum(retries), 0),
                func.min(Delivery.due_at),
            ).group_by(Delivery.channel, Delivery.status, Delivery.error_reason)
        ).all()
        seconds = SecondsBetween(Update.created_at, Delivery.sent_at).label("seconds")
        sent = (
            select(Delivery.channel.label("channel"), seconds)
            .join(Update, Delivery.update_id == Update.id)
            .where(Delivery.sent_at.is_not(None))
            .subquery()
        )
        latency_rows = session.execute(
            select(
                sent.c.channel,
                func.count(),
                func.coalesce(func.sum(sent.c.seconds), 0.0),
                *(
                    func.coalesce(func.sum(case((sent.c.seconds <= bound, 1), else_=0)), 0)
                    for bound in LATENCY_BUCKETS
                ),
            ).group_by(sent.c.channel)
        ).all()
        result.pending_fanout = (
            session.scalar(
                select(func.count()).select_from(Update).where(Update.fanned_out_at.is_(None))
            )
            or 0
        )
        result.last_tests = last_received(session)
    for channel, status, reason, count, attempts, retried, min_due in rows:
        key = (channel, str(status))
        result.deliveries[key] = result.deliveries.get(key, 0) + count
        result.attempts[channel] = result.attempts.get(channel, 0) + int(attempts)
        result.retries[channel] = result.retries.get(channel, 0) + int(retried)
        if reason is not None:
            error_key = (channel, str(reason))
            result.errors[error_key] = result.errors.get(error_key, 0) + count
        if status == DeliveryStatus.QUEUED and min_due is not None:
            due = _aware(min_due)
            if channel not in result.oldest_due or due < result.oldest_due[channel]:
                result.oldest_due[channel] = due
    for channel, count, total_s, *buckets in latency_rows:
        result.latency[channel] = ChannelLatency([int(b) for b in buckets], count, float(total_s))
    return result


BreakerStates = Callable[[], Mapping[str, BreakerState]]


def circuit_reader(circuits: Circuits, keys: Mapping[str, str]) -> BreakerStates:
    """Breaker state per channel, read through the breaker's public `Circuits.get`; `keys` maps
    each breaker channel to its circuit key (dispatcher.delivery.guards.account_key)."""

    def read() -> dict[str, BreakerState]:
        return {channel: circuits.get(key).state for channel, key in keys.items()}

    return read


class DatabaseCollector(Collector):
    """Builds the delivery metrics from a `Snapshot`, at most once per `cache_s` seconds.

    `channels` are zero-filled, so a rate over `outage_deliveries{status="failed"}` exists before
    the first failure. A database that does not answer gives `outage_database_up 0` and no other
    delivery metric (rather than stale numbers that look current)."""

    def __init__(
        self,
        store: Store,
        channels: Sequence[str],
        breaker_states: BreakerStates | None = None,
        cache_s: float = CACHE_S,
    ) -> None:
        self.store = store
        self.channels = list(channels)
        self.breaker_states = breaker_states
        self.cache_s = cache_s
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self.cache_s:
                self._cached = (now, list(self._families()))
            return list(self._cached[1])

    def _families(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            data = snapshot(self.store)
        except SQLAlchemyError as exc:
            log.warning("metrics: the database did not answer (%s)", type(exc).__name__)
            yield GaugeMetricFamily(
                "outage_database_up", "1 when the metrics queries succeeded", value=0
            )
            return
        yield GaugeMetricFamily(
            "outage_database_up", "1 when the metrics queries succeeded", value=1
        )
        yield from self._delivery_families(data)
        tests = GaugeMetricFamily(
            "outage_monitoring_test_received_timestamp_seconds",
            "When each monitoring source last sent its own test (Unix time)",
            labels=["source"],
        )
        for source, at in sorted(data.last_tests.items()):
            tests.add_metric([source], at.timestamp())
        yield tests
        yield from self._breaker_family()
        yield GaugeMetricFamily(
            "outage_metrics_query_seconds",
            "Seconds the last collection of database metrics took",
            value=time.perf_counter() - started,
        )

    def _delivery_families(self, data: Snapshot) -> Iterator[Metric]:
        channels = sorted(set(self.channels) | {c for c, _ in data.deliveries})
        deliveries = GaugeMetricFamily(
            "outage_deliveries",
            "Delivery rows by channel and current status",
            labels=["channel", "status"],
        )
        attempts = CounterMetricFamily(
            "outage_delivery_attempts",
            "Provider requests made for deliveries, retries included",
            labels=["channel"],
        )
        retries = CounterMetricFamily(
            "outage_delivery_retries",
            "Provider requests beyond each delivery's first",
            labels=["channel"],
        )
        fallbacks = CounterMetricFamily(
            "outage_delivery_fallbacks",
            "Deliveries given up on this channel for the subscriber's next one",
            labels=["channel"],
        )
        errors = GaugeMetricFamily(
            "outage_delivery_errors",
            "Deliveries by the reason of their latest failed attempt (kept after a success)",
            labels=["channel", "reason"],
        )
        depth = GaugeMetricFamily(
            "outage_queue_depth", "Deliveries queued or being sent", labels=["channel"]
        )
        oldest = GaugeMetricFamily(
            "outage_queue_oldest_seconds",
            "Seconds the longest-waiting due delivery has waited",
            labels=["channel"],
        )
        latency = HistogramMetricFamily(
            "outage_delivery_latency_seconds",
            "Seconds from an update being accepted to a delivery of it being sent",
            labels=["channel"],
        )
        for channel in channels:
            for status in DeliveryStatus:
                deliveries.add_metric([channel, status], data.deliveries.get((channel, status), 0))
            for reason in FailureReason:
                errors.add_metric([channel, reason], data.errors.get((channel, reason), 0))
            attempts.add_metric([channel], data.attempts.get(channel, 0))
            retries.add_metric([channel], data.retries.get(channel, 0))
            fallbacks.add_metric(
                [channel], data.deliveries.get((channel, DeliveryStatus.FELL_BACK), 0)
            )
            depth.add_metric([channel], data.queue_depth(channel))
            oldest.add_metric([channel], data.oldest_queued_s(channel))
            histogram = data.latency.get(channel, EMPTY_LATENCY)
            latency.add_metric(
                [channel],
                [
                    *(
                        (repr(float(bound)), n)
                        for bound, n in zip(LATENCY_BUCKETS, histogram.buckets, strict=True)
                    ),
                    ("+Inf", histogram.count),
                ],
                sum_value=histogram.sum_s,
            )
        yield from (deliveries, attempts, retries, fallbacks, errors, depth, oldest, latency)
        yield GaugeMetricFamily(
            "outage_updates_pending_fanout",
            "Updates accepted whose deliveries are not all written yet",
            value=data.pending_fanout,
        )

    def _breaker_family(self) -> Iterator[Metric]:
        if self.breaker_states is None:
            return
        try:
            states = self.breaker_states()
        except SharedStateUnavailable as exc:  # Redis down: /readyz and the broker check say so
            log.warning("metrics: breaker state unavailable (%s)", exc)
            return
        family = GaugeMetricFamily(
            "outage_circuit_breaker_state",
            "1 for the current state of each provider's circuit breaker",
            labels=["channel", "state"],
        )
        for channel, current in sorted(states.items()):
            for state in BreakerState:
                family.add_metric([channel, state], 1 if state is current else 0)
        yield family


class BudgetCollector(Collector):
    """The confirmation texts left in the budget's window, read from the shared counters at
    scrape time (nothing when they do not answer: /readyz says why)."""

    def __init__(self, remaining: Callable[[], int | None]) -> None:
        self.remaining = remaining

    def collect(self) -> Iterable[Metric]:
        left = self.remaining()
        if left is None:
            return []
        return [
            GaugeMetricFamily(
                "outage_sms_confirmations_remaining",
                "Confirmation texts left in the budget's window; 0: sign-up by text is paused",
                value=left,
            )
        ]


def new_registry(
    collector: DatabaseCollector, sms_remaining: Callable[[], int | None] | None = None
) -> CollectorRegistry:
    """A registry for one app: its database collector, the process's own counters, the SMS
    budget when the app has a throttle, and the usual process, platform and GC metrics (so one
    scrape shows the web process's health too)."""
    registry = CollectorRegistry()
    registry.register(collector)
    registry.register(WEBHOOKS_RECEIVED)
    registry.register(SIGNUPS_REFUSED)
    if sms_remaining is not None:
        registry.register(BudgetCollector(sms_remaining))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def registry_for(
    pipeline: Pipeline, sms_remaining: Callable[[], int | None] | None = None
) -> CollectorRegistry:
    """The metrics registry of a web app serving `pipeline`."""
    collector = DatabaseCollector(
        pipeline.store, pipeline.registry.names, breaker_states_for(pipeline)
    )
    return new_registry(collector, sms_remaining)


REDIS_TIMEOUT_S = 0.5  # a scrape must not hang on a Redis that does not answer


def breaker_states_for(pipeline: Pipeline) -> BreakerStates:
    """Where the circuits of `settings.breaker_channels` are read from: the Pipeline's own
    breaker (dispatcher/delivery/guards.py), whose circuits every worker shares: rows in the
    database, or Redis hashes when Redis is the broker. With Redis, read through a client of our
    own with a shorter timeout, so a hung Redis cannot stall a scrape."""
    settings = pipeline.settings
    keys = {channel: account_key(settings, channel) for channel in settings.breaker_channels}
    circuits: Circuits = pipeline.guards.breaker.circuits
    if uses_redis(settings.broker_url):
        client = redis.Redis.from_url(
            settings.broker_url,
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
        )
        circuits = RedisCircuits(client, settings.redis_prefix)
    return circuit_reader(circuits, keys)
