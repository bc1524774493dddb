"""Pacing per provider account: a token bucket shared by every worker that sends through it.

Why a bucket and not retries: a provider's 429 arrives after the damage (a wasted request, and on
Twilio a REST concurrency slot), and every worker retrying on its own makes it worse. A bucket per
account, shared by all workers, keeps the whole deployment under the account's rate.

One interface, two backends, chosen by the broker (`limiter_for`), both shared by every process
of the deployment, both clocked by the shared store so that workers on different hosts agree:

    RedisRateLimiter     when Redis is the broker: one Lua script per call, atomic in Redis,
                         clocked by Redis's TIME; one key per provider account,
                         "<redis_prefix>:rate:<account>"
    DatabaseRateLimiter  otherwise (RabbitMQ, the embedded default): one row per account in
                         `rate_buckets`, taken from by one atomic UPDATE … RETURNING, clocked by
                         the database. (A bucket per process, as the embedded default and
                         RabbitMQ had, let two workers send twice the account's rate.)

`acquire(key, n, limit)` takes `n` tokens and returns 0.0, or takes nothing and returns the seconds
until `n` would be there. It never sleeps: the caller waits briefly or puts the work back with a
due time, so no worker sits inside a task for minutes.
"""

from __future__ import annotations

from typing import Any, Protocol

import redis
from sqlalchemy import case, func, update

from dispatcher.settings import RateLimit
from dispatcher.store import RateBucket, Store, insert_ignoring_duplicates

SOCKET_TIMEOUT_S = 2.0  # a Redis that does not answer must not hang a worker


class SharedStateUnavailable(RuntimeError):
    """The shared store (Redis) did not answer: the caller holds its work rather than guess."""


class RateLimiter(Protocol):
    def acquire(self, key: str, n: int, limit: RateLimit) -> float:
        """Take `n` tokens (0.0), or take none and say how many seconds until `n` are there."""

    def close(self) -> None:
        """Release connections."""


def _check(n: int, limit: RateLimit) -> None:
    if n < 1 or n > limit.burst:
        raise ValueError(f"can take 1 to {limit.burst} tokens at once, not {n}")


class DatabaseRateLimiter:
    """Buckets in the database, one row per provider account: a call is one UPDATE whose SET
    refills the bucket from the time elapsed and takes `n` if they are there, and whose
    RETURNING says what is left and whether it took (the row is made on its first use)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def acquire(self, key: str, n: int, limit: RateLimit) -> float:
        _check(n, limit)
        with self._store.session() as session:
            connection = session.connection()  # as Core: one statement, no objects
            answer = connection.execute(self._take(key, n, limit)).first()
            if answer is None:  # the account's first request: a full bucket, then take
                connection.execute(
                    insert_ignoring_duplicates(session, RateBucket).values(
                        key=key, tokens=float(limit.burst), at=self._now(), granted=0
                    )
                )
                answer = connection.execute(self._take(key, n, limit)).one()
        tokens, granted = answer
        return 0.0 if granted else max(0.0, (n - tokens) / limit.per_s)

    def _take(self, key: str, n: int, limit: RateLimit) -> Any:
        now = self._now()
        later = now > RateBucket.at  # the clock is read again after waiting for the row's lock
        elapsed = case((later, now - RateBucket.at), else_=0.0)
        filled = RateBucket.tokens + elapsed * limit.per_s
        available = case((filled > limit.burst, float(limit.burst)), else_=filled)
        enough = available >= n
        return (
            update(RateBucket)
            .where(RateBucket.key == key)
            .values(
                tokens=case((enough, available - n), else_=available),
                at=case((later, now), else_=RateBucket.at),  # never back: no time refills twice
                granted=case((enough, n), else_=0),
            )
            .returning(RateBucket.tokens, RateBucket.granted)
        )

    def _now(self) -> Any:
        """The database's clock in Unix seconds. PostgreSQL: read when the row is updated,
        after any wait for another worker's update of it (the statement's start would be
        earlier than the time that worker wrote); SQLite runs one writer at a time anyway."""
        if self._store.dialect == "postgresql":
            return func.extract("epoch", func.clock_timestamp())
        return (func.julianday("now") - 2440587.5) * 86400.0  # SQLite: milliseconds

    def close(self) -> None:
        """The store is the Pipeline's, closed with it."""


# A bucket as DatabaseRateLimiter's UPDATE computes it, run atomically in Redis. The result is
# returned as a string because Redis truncates a Lua number reply to an integer; the state is
# stored with '%.6f' because Lua's tostring keeps 14 significant digits: a Unix time in seconds
# then loses its tenths of a millisecond, and the bucket was credited tokens it never earned.
_ACQUIRE = """
local n, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= n then tokens = tokens - n else wait = (n - tokens) / rate end
local function exact(x) return string.format('%.6f', x) end
redis.call('HSET', KEYS[1], 'tokens', exact(tokens), 'at', exact(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


class RedisRateLimiter:
    """Buckets in Redis, shared by every worker of the deployment; the key expires once full."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client
        self._keys = f"{prefix}:rate:"
        self._script = client.register_script(_ACQUIRE)

    def acquire(self, key: str, n: int, limit: RateLimit) -> float:
        _check(n, limit)
        try:
            # redis-py re-sends the script with EVAL when a restarted Redis lost its cache.
            answer = self._script(keys=[self._keys + key], args=[n, limit.per_s, limit.burst])
        except redis.RedisError as exc:
            raise SharedStateUnavailable(f"rate limiter: Redis did not answer ({exc})") from None
        return max(0.0, float(answer))

    def close(self) -> None:
        self._client.close()


def redis_client(url: str) -> redis.Redis:
    """A client with short timeouts: pacing and breakers must fail fast, not hang a send."""
    return redis.Redis.from_url(
        url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S
    )


def uses_redis(broker_url: str) -> bool:
    return broker_url.startswith(("redis://", "rediss://"))


def limiter_for(
    broker_url: str, prefix: str, store: Store, client: redis.Redis | None = None
) -> RateLimiter:
    """Redis buckets when Redis is the broker (their keys starting with `prefix`), database
    buckets otherwise: shared by every process either way."""
    if uses_redis(broker_url):
        return RedisRateLimiter(client or redis_client(broker_url), prefix)
    return DatabaseRateLimiter(store)
