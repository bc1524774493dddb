"""Pacing per provider account: a token bucket shared by every worker that sends through it.

Why a bucket and not retries: a provider's 429 arrives after the damage (a wasted request, and on
Twilio a REST concurrency slot), and every worker retrying on its own makes it worse. A bucket per
account, shared by all workers, keeps the whole deployment under the account's rate.

One interface, two backends, chosen by the broker (`limiter_for`):

    RedisRateLimiter   one Lua script per call, atomic in Redis, clocked by Redis's own TIME so
                       workers on different hosts agree; one key per provider account,
                       "<redis_prefix>:rate:<account>"
    MemoryRateLimiter  the embedded default (one process): the same bucket under a lock

`acquire(key, n, limit)` takes `n` tokens and returns 0.0, or takes nothing and returns the seconds
until `n` would be there. It never sleeps: the caller waits briefly or puts the work back with a
due time, so no worker sits inside a task for minutes.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

import redis

from dispatcher.settings import RateLimit

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


class MemoryRateLimiter:
    """Buckets in this process: right when one process sends everything (the embedded default)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def acquire(self, key: str, n: int, limit: RateLimit) -> float:
        _check(n, limit)
        with self._lock:
            now = time.monotonic()
            tokens, at = self._buckets.get(key, (float(limit.burst), now))
            tokens = min(float(limit.burst), tokens + (now - at) * limit.per_s)
            wait = 0.0 if tokens >= n else (n - tokens) / limit.per_s
            self._buckets[key] = (tokens - n if wait == 0.0 else tokens, now)
            return wait

    def close(self) -> None:
        """Nothing to release."""


# The same bucket as MemoryRateLimiter.acquire, run atomically in Redis. The result is returned
# as a string because Redis truncates a Lua number reply to an integer; the state is stored with
# '%.6f' because Lua's tostring keeps 14 significant digits: a Unix time in seconds then loses
# its tenths of a millisecond, and the bucket was credited tokens it never earned.
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


def limiter_for(broker_url: str, prefix: str, client: redis.Redis | None = None) -> RateLimiter:
    """Redis buckets when Redis is the broker (shared by all workers, their keys starting with
    `prefix`), in-process otherwise."""
    if uses_redis(broker_url):
        return RedisRateLimiter(client or redis_client(broker_url), prefix)
    return MemoryRateLimiter()
