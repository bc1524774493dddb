"""The token bucket: one behaviour, two backends (the database and Redis), both shared by every
process, and the pacing it gives `send_batch` (a short wait inside the task, a longer one puts
the rest back with a due time) and the retries inside a send."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from dispatcher.delivery.guards import Guards
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.delivery.ratelimit import (
    DatabaseRateLimiter,
    RateLimiter,
    RedisRateLimiter,
    SharedStateUnavailable,
    limiter_for,
    redis_client,
)
from dispatcher.incidents import lifecycle, reports
from dispatcher.models import DeliveryStatus, IncidentIn, Severity, SubscriberIn
from dispatcher.sandbox.server import Sandbox
from dispatcher.settings import RateLimit, Settings
from dispatcher.store import Store
from dispatcher.subscribers import records
from tests.conftest import REDIS_PREFIX, REDIS_URL


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    running = Store(f"sqlite:///{tmp_path / 'buckets.sqlite3'}")
    yield running
    running.close()


@pytest.fixture(params=["database", pytest.param("redis", marks=pytest.mark.redis)])
def limiter(request: pytest.FixtureRequest) -> Iterator[RateLimiter]:
    if request.param == "database":
        yield DatabaseRateLimiter(request.getfixturevalue("store"))
        return
    request.getfixturevalue("redis_db")
    running = RedisRateLimiter(redis.Redis.from_url(REDIS_URL), REDIS_PREFIX)
    yield running
    running.close()


def test_a_full_bucket_gives_its_burst_then_says_how_long_to_wait(limiter: RateLimiter) -> None:
    limit = RateLimit(per_s=10, burst=5)
    assert limiter.acquire("sms:+1", 5, limit) == 0.0
    wait = limiter.acquire("sms:+1", 2, limit)
    assert 0.1 < wait <= 0.2  # two tokens at 10/s
    assert limiter.acquire("email:a", 5, limit) == 0.0, "each account has its own bucket"


def test_a_refused_request_takes_nothing(limiter: RateLimiter) -> None:
    limit = RateLimit(per_s=1, burst=3)
    assert limiter.acquire("k", 2, limit) == 0.0
    assert limiter.acquire("k", 3, limit) > 0  # only one left: refused, nothing taken
    assert limiter.acquire("k", 1, limit) == 0.0


def test_more_than_the_burst_at_once_is_a_programming_error(limiter: RateLimiter) -> None:
    with pytest.raises(ValueError, match="1 to 5"):
        limiter.acquire("k", 6, RateLimit(per_s=1, burst=5))


def test_the_bucket_refills_at_its_rate(store: Store) -> None:
    limiter = DatabaseRateLimiter(store)
    limit = RateLimit(per_s=1000, burst=1)
    assert limiter.acquire("k", 1, limit) == 0.0
    deadline = time.monotonic() + 1
    while limiter.acquire("k", 1, limit) > 0:  # bounded poll, not a timing assertion
        assert time.monotonic() < deadline


@pytest.mark.redis
def test_workers_sharing_redis_share_one_bucket(redis_db: redis.Redis) -> None:
    """Four threads, each with its own client (as four workers would be), never get more than
    the burst plus the rate over the time they ran."""
    limit = RateLimit(per_s=200, burst=20)
    granted: list[int] = []
    started = time.monotonic()

    def worker() -> None:
        limiter = RedisRateLimiter(redis_client(REDIS_URL), REDIS_PREFIX)
        mine = 0
        while time.monotonic() - started < 0.5:
            if limiter.acquire("shared", 1, limit) == 0.0:
                mine += 1
        granted.append(mine)
        limiter.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert sum(granted) <= limit.burst + limit.per_s * elapsed + 1
    assert sum(granted) >= limit.burst, "the burst is available at once"


def test_an_unreachable_redis_says_so_instead_of_hanging() -> None:
    limiter = RedisRateLimiter(redis_client("redis://127.0.0.1:1/0"), REDIS_PREFIX)  # nothing there
    with pytest.raises(SharedStateUnavailable, match="Redis did not answer"):
        limiter.acquire("k", 1, RateLimit(per_s=1, burst=1))
    limiter.close()


def test_without_redis_every_process_shares_the_databases_bucket(database_url: str) -> None:
    """RabbitMQ and the embedded default: two workers, each with its own limiter and database
    connections (as each process has), take from one bucket, not one each."""
    stores = [Store(database_url), Store(database_url)]
    brokers = ("amqp://h//", "embedded")
    workers = [limiter_for(b, REDIS_PREFIX, s) for b, s in zip(brokers, stores, strict=True)]
    assert all(isinstance(worker, DatabaseRateLimiter) for worker in workers)
    limit = RateLimit(per_s=0.001, burst=3)
    granted = [worker.acquire("sms:+1", 1, limit) == 0.0 for _ in range(3) for worker in workers]
    for own in stores:
        own.close()
    assert granted.count(True) == 3, "the burst once for the deployment, not once per worker"


def test_workers_sharing_the_database_never_take_more_than_the_rate(database_url: str) -> None:
    """Four threads, each with a Store of its own (as four workers would have)."""
    limit = RateLimit(per_s=100, burst=10)
    granted: list[int] = []
    stores = [Store(database_url) for _ in range(4)]
    started = time.monotonic()

    def worker(own: Store) -> None:
        limiter = DatabaseRateLimiter(own)
        mine = 0
        while time.monotonic() - started < 0.5:
            if limiter.acquire("shared", 1, limit) == 0.0:
                mine += 1
        granted.append(mine)
        own.close()

    threads = [threading.Thread(target=worker, args=(own,)) for own in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert sum(granted) <= limit.burst + limit.per_s * elapsed + 1
    assert sum(granted) >= limit.burst


@pytest.mark.redis
def test_deployments_sharing_a_redis_database_pace_apart_by_their_prefix(
    redis_db: redis.Redis, tmp_path: Path
) -> None:
    """Workers of one deployment (one OUTAGE_REDIS_PREFIX) share a bucket; another deployment
    on the same Redis database has its own, under its own keys."""
    store = Store(f"sqlite:///{tmp_path / 'guards.sqlite3'}")

    def limiter(prefix: str) -> RateLimiter:
        settings = Settings(broker_url=REDIS_URL, redis_prefix=prefix)
        return Guards.from_settings(settings, store).limiter

    staging = f"{REDIS_PREFIX}:staging"
    worker, other_worker, staging_worker = (
        limiter(REDIS_PREFIX),
        limiter(REDIS_PREFIX),
        limiter(staging),
    )
    limit = RateLimit(per_s=0.01, burst=1)
    try:
        assert worker.acquire("sms:+1", 1, limit) == 0.0
        assert other_worker.acquire("sms:+1", 1, limit) > 0, "one deployment, one bucket"
        assert staging_worker.acquire("sms:+1", 1, limit) == 0.0, "another deployment's own"
        assert sorted(redis_db.scan_iter(match=f"{REDIS_PREFIX}:*")) == [
            f"{REDIS_PREFIX}:rate:sms:+1".encode(),
            f"{staging}:rate:sms:+1".encode(),
        ]
    finally:
        for running in (worker, other_worker, staging_worker):
            running.close()
        store.close()


# -- pacing in send_batch ---------------------------------------------------------------------


def _subscribers(pipeline: Pipeline, count: int) -> None:
    for n in range(count):
        records.add(
            pipeline.store,
            pipeline.registry,
            SubscriberIn(name=f"s{n}", phone=f"+1415555{n:04d}", channels=["sms"], confirmed=True),
        )


def test_a_batch_waits_briefly_for_tokens_and_puts_back_what_would_wait_long(
    settings: Settings, sandbox: Sandbox
) -> None:
    paced = settings.model_copy(
        update={
            "rate_limits": {"sms": RateLimit(per_s=20, burst=4)},
            "pace_max_wait_s": 0.25,  # 5 tokens' worth: two chunks wait, the rest goes back
            "broadcast": [],
        }
    )
    pipeline = Pipeline(paced)
    try:
        _subscribers(pipeline, 20)
        posted = lifecycle.open_incident(
            pipeline.store, IncidentIn(title="x", severity=Severity.MAJOR, components=["api"])
        )
        pipeline.fan_out(posted.update_id)
        _, batch = pipeline.queue.jobs.popleft()  # type: ignore[attr-defined]
        result = pipeline.send(batch)  # type: ignore[arg-type]

        assert result.sent < 20 and result.held == 20 - result.sent
        lines = reports.deliveries(pipeline.store, posted.incident_id)
        held = [line for line in lines if line.status == DeliveryStatus.QUEUED]
        assert len(held) == result.held
        assert all(line.sends == 0 for line in held), "being paced is not a try"
        assert len(sandbox.messages("sms")) == result.sent

        pipeline.drain(wait_s=10)
        lines = reports.deliveries(pipeline.store, posted.incident_id)
        assert {line.status for line in lines} == {DeliveryStatus.SENT}
        assert len({m["to"] for m in sandbox.messages("sms")}) == 20 == len(sandbox.messages())
        assert max_in_window(sandbox.request_log("sms"), burst=4, per_s=20) == 0

    finally:
        pipeline.close()


def max_in_window(log: list[tuple[float, int]], burst: int, per_s: float) -> int:
    """How far the provider saw us exceed the bucket in any window: requests from i to j must
    be at most burst + rate x (t_j - t_i), plus one more burst of slack because a request's
    arrival lags its grant by a varying network and client time (the first one's most). 0: never."""
    times = sorted(at for at, _ in log)
    excess = 0
    for i, start in enumerate(times):
        for j in range(i, len(times)):
            allowed = 2 * burst + per_s * (times[j] - start)
            excess = max(excess, int(j - i + 1 - allowed))
    return excess


# -- retries inside a send ----------------------------------------------------------------------


def _one_failing_sms(settings: Settings, sandbox: Sandbox, limit: RateLimit) -> Pipeline:
    """A pipeline whose SMS account allows `limit`, one subscriber, and the first request
    answered 500 (retried inside the send)."""
    pipeline = Pipeline(settings.model_copy(update={"rate_limits": {"sms": limit}}))
    _subscribers(pipeline, 1)
    posted = lifecycle.open_incident(
        pipeline.store, IncidentIn(title="x", severity=Severity.MAJOR, components=["api"])
    )
    pipeline.fan_out(posted.update_id)
    sandbox.inject_failures(1, "500", channel="sms")
    return pipeline


def test_a_retry_inside_a_send_waits_for_its_token(settings: Settings, sandbox: Sandbox) -> None:
    pipeline = _one_failing_sms(settings, sandbox, RateLimit(per_s=10, burst=1))
    try:
        pipeline.drain(wait_s=0)
        log = sorted(at for at, _ in sandbox.request_log("sms"))
        assert len(log) == 2 and len(sandbox.messages("sms")) == 1
        assert log[1] - log[0] >= 0.08, "the retry took the next token (1 per 0.1 s)"
    finally:
        pipeline.close()


def test_a_retry_that_would_wait_long_for_a_token_is_left_to_the_queue(
    settings: Settings, sandbox: Sandbox
) -> None:
    pipeline = _one_failing_sms(settings, sandbox, RateLimit(per_s=0.001, burst=1))
    try:
        pipeline.drain(wait_s=0)
        assert len(sandbox.request_log("sms")) == 1, "no request without a token"
        (line,) = [x for x in reports.deliveries(pipeline.store, None) if x.channel == "sms"]
        assert (line.status, line.attempts) == (DeliveryStatus.QUEUED, 1)
    finally:
        pipeline.close()
