"""What stands between a batch and a provider: the account's rate bucket and its circuit breaker.

Built once per process (the Pipeline) from the settings, shared by every process of the
deployment: through Redis when Redis is the broker, through the database otherwise (RabbitMQ,
the embedded default), so the limits hold however many workers send. `dispatcher/delivery/send.py`
asks `gate()` before each chunk of a batch and `report()`s after; the adapter gets the bucket
from `tokens()` for the requests the chunk's grant does not cover (retries inside a send, a
request leaving late), so every request the provider sees took a token as it left.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from channels.base import Outcome, Tokens
from dispatcher.delivery.breaker import (
    Breaker,
    BreakerState,
    Circuits,
    DatabaseCircuits,
    Permit,
    RedisCircuits,
)
from dispatcher.delivery.ratelimit import (
    RateLimiter,
    SharedStateUnavailable,
    limiter_for,
    redis_client,
    uses_redis,
)
from dispatcher.models import FailureKind
from dispatcher.settings import RateLimit, Settings
from dispatcher.store import Store

log = logging.getLogger(__name__)

# The sender a provider counts its limits against (Twilio: per number; SendGrid: per account,
# one sender per account here). Other channels have one account each.
ACCOUNT_SETTINGS = {"sms": "sms_from", "email": "email_from"}
UNAVAILABLE_HOLD_S = 5.0  # Redis did not answer: try again after this long


def account_key(settings: Settings, channel: str) -> str:
    """The bucket and circuit of a channel's provider account; never a credential."""
    attribute = ACCOUNT_SETTINGS.get(channel)
    sender = str(getattr(settings, attribute)) if attribute else "default"
    return f"{channel}:{sender}"


@dataclass
class Budget:
    """What one batch may spend: no chunk starts after `deadline` (time.monotonic; half the
    lease, so one task does not sit on a paced batch), and pacing sleeps `wait_s` in all."""

    deadline: float
    wait_s: float


@dataclass(frozen=True)
class Gate:
    """How many of the waiting messages to send now; with none, why and for how long."""

    take: int
    wait_s: float = 0.0
    circuit_open: bool = False  # the provider is failing: send elsewhere where possible
    reason: str = ""
    taken_at: float | None = None  # time.monotonic() just before the tokens were asked for


class Guards:
    """The rate buckets and breakers of one process, keyed per provider account."""

    def __init__(
        self,
        settings: Settings,
        limiter: RateLimiter,
        breaker: Breaker,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.limiter = limiter
        self.breaker = breaker
        self.sleep = sleep

    @classmethod
    def from_settings(cls, settings: Settings, store: Store) -> Guards:
        """Shared through Redis when it is the broker; through the database otherwise."""
        circuits: Circuits
        if uses_redis(settings.broker_url):
            client = redis_client(settings.broker_url)
            limiter = limiter_for(settings.broker_url, settings.redis_prefix, store, client)
            circuits = RedisCircuits(client, settings.redis_prefix)
        else:
            limiter = limiter_for(settings.broker_url, settings.redis_prefix, store)
            circuits = DatabaseCircuits(store)
        breaker = Breaker(circuits, store, settings.breaker_threshold, settings.breaker_open_s)
        return cls(settings, limiter, breaker)

    def gate(self, channel: str, waiting: int, budget: Budget) -> Gate:
        """Ask the breaker, then the bucket, for up to `waiting` messages; sleep here only
        within the batch's budget, else say how long the rest should wait in the queue."""
        if time.monotonic() >= budget.deadline:
            return Gate(0, reason="the batch ran out of time; the rest is queued again")
        key = account_key(self.settings, channel)
        try:
            permit = self._permit(channel, key)
            if not permit.allowed:
                reason = f"{channel}: provider failing, circuit {permit.state}"
                return Gate(0, permit.wait_s, circuit_open=True, reason=reason)
            take = 1 if permit.probe else self.chunk_size(channel, waiting)
            return self._paced(key, take, self.settings.rate_limits.get(channel), budget)
        except SharedStateUnavailable as exc:
            log.warning("%s; holding %d %s deliveries", exc, waiting, channel)
            return Gate(0, UNAVAILABLE_HOLD_S, reason="pacing state unavailable (Redis)")

    def chunk_size(self, channel: str, waiting: int) -> int:
        """The most of `waiting` messages one grant may cover: the account's burst."""
        limit = self.settings.rate_limits.get(channel)
        return min(waiting, limit.burst) if limit else waiting

    def _permit(self, channel: str, key: str) -> Permit:
        if channel not in self.settings.breaker_channels:
            return Permit(BreakerState.CLOSED)
        return self.breaker.permit(key)

    def _paced(self, key: str, take: int, limit: RateLimit | None, budget: Budget) -> Gate:
        if limit is None:
            return Gate(take)
        while True:
            asked = time.monotonic()
            wait = self.limiter.acquire(key, take, limit)
            if wait <= 0:
                return Gate(take, taken_at=asked)
            if wait > budget.wait_s or time.monotonic() + wait >= budget.deadline:
                return Gate(0, wait, reason=f"paced at {limit.per_s:g}/s")
            budget.wait_s -= wait
            self.sleep(wait)

    def tokens(self, channel: str, gate: Gate) -> Tokens | None:
        """The account's bucket for the adapter: the chunk's tokens as `gate` took them, and
        the same bucket for every other request (retries inside the send, a request leaving
        late); None when the channel is not paced. Redis not answering counts as a wait too
        long to make there: the request is left to the queue."""
        limit = self.settings.rate_limits.get(channel)
        if limit is None:
            return None
        key = account_key(self.settings, channel)

        def take(n: int) -> float:
            try:
                return self.limiter.acquire(key, min(n, limit.burst), limit)
            except SharedStateUnavailable as exc:
                log.warning("%s; a request of %s is left to the queue", exc, channel)
                return UNAVAILABLE_HOLD_S

        return Tokens(take, gate.taken_at)

    def report(self, channel: str, outcomes: Iterable[object]) -> None:
        """Tell the breaker how the provider answered a chunk. A permanent refusal is an answer
        from a working provider; messages never sent (no address, opted out) say nothing."""
        if channel not in self.settings.breaker_channels:
            return
        ok = failed = 0
        for outcome in outcomes:
            if not isinstance(outcome, Outcome) or outcome.attempts == 0:
                continue
            if outcome.failure is FailureKind.TRANSIENT:
                failed += 1
            else:
                ok += 1
        try:
            self.breaker.report(account_key(self.settings, channel), ok, failed)
        except SharedStateUnavailable as exc:
            log.warning("%s; a chunk's answers were not counted", exc)

    def usable(self, channel: str) -> bool:
        """Whether to fall back onto `channel` now: not while its provider's circuit is open."""
        if channel not in self.settings.breaker_channels:
            return True
        try:
            return self.breaker.usable(account_key(self.settings, channel))
        except SharedStateUnavailable:
            return True  # a fallback row is only a row; the gate decides when it is sent

    def close(self) -> None:
        self.limiter.close()
        self.breaker.close()
