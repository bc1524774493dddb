"""A circuit breaker per provider account: stop hammering a provider that is down.

Without it, every delivery to a failing provider burns its retries (and the provider's patience)
on the same outage, then gives up. With it, a run of `breaker_threshold` transient failures opens
the circuit; while open, work for that provider is held (or, where the subscriber has another
channel, sent there) without counting as a try; after `breaker_open_s` one probe goes through, and
its answer closes the circuit or opens it again::

    closed --threshold transient failures in a row--> open --open_s passed, one probe--> half_open
      ^                                                 ^                                  |
      +----------------- the probe was answered --------+------ the probe failed ----------+

The state machine is written once (`_permit`, `_report`: pure functions of the state and the
clock); where the state lives is a backend, shared by every process of the deployment: a Redis
hash per circuit ("<redis_prefix>:breaker:<account>") when Redis is the broker, updated under
WATCH, else a row per circuit in the database (`breaker_circuits`), updated only where its
version is still the one read; either way two workers cannot both take the probe. Each
transition is written once, by the process that made it, to the audit trail (actor "system",
action "breaker:<state>"), which is also where `outage delivery stats` counts them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Protocol

import redis
from sqlalchemy import select, update

from dispatcher import audit
from dispatcher.delivery.ratelimit import SharedStateUnavailable
from dispatcher.store import BreakerCircuit, Store, insert_ignoring_duplicates

log = logging.getLogger(__name__)

AUDIT_PREFIX = "breaker:"


class BreakerState(StrEnum):
    """Where a provider's circuit stands."""

    CLOSED = "closed"  # sending normally, counting transient failures in a row
    OPEN = "open"  # the provider is failing: its work is held or sent on another channel
    HALF_OPEN = "half_open"  # one probe is let through; its answer closes or reopens the circuit


@dataclass(frozen=True)
class Circuit:
    """One provider's breaker. `until`: when open, the earliest probe; when half-open, when the
    probe's holder is presumed gone and another may probe."""

    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    until: float = 0.0


@dataclass(frozen=True)
class Permit:
    """May a sender go ahead? `probe`: only with one message, whose answer decides the state."""

    state: BreakerState
    probe: bool = False
    wait_s: float = 0.0  # when not allowed: seconds until it is worth asking again

    @property
    def allowed(self) -> bool:
        return self.state is BreakerState.CLOSED or self.probe


def _permit(circuit: Circuit, now: float, open_s: float) -> tuple[Circuit, Permit]:
    if circuit.state is BreakerState.CLOSED:
        return circuit, Permit(BreakerState.CLOSED)
    if now < circuit.until:
        return circuit, Permit(circuit.state, wait_s=circuit.until - now)
    # Open long enough (or the last probe's holder vanished): this caller probes.
    probing = Circuit(BreakerState.HALF_OPEN, circuit.failures, now + open_s)
    return probing, Permit(BreakerState.HALF_OPEN, probe=True)


def _report(
    circuit: Circuit, now: float, ok: int, failed: int, threshold: int, open_s: float
) -> Circuit:
    """`ok`: answers that show the provider works (accepted, or refused for good); `failed`:
    transient failures. A chunk with any success resets the count: partial failure is retried,
    not a reason to stop sending."""
    if circuit.state is BreakerState.OPEN:
        return circuit  # answers to requests sent before it opened change nothing
    if ok:
        return Circuit(BreakerState.CLOSED)
    if not failed:
        return circuit
    if circuit.state is BreakerState.HALF_OPEN:
        return Circuit(BreakerState.OPEN, circuit.failures + failed, now + open_s)
    failures = circuit.failures + failed
    if failures >= threshold:
        return Circuit(BreakerState.OPEN, failures, now + open_s)
    return replace(circuit, failures=failures)


Change = Callable[[Circuit], Circuit]


class Circuits(Protocol):
    """Where circuits live: `update` applies `change` atomically, returning (before, after)."""

    def get(self, key: str) -> Circuit: ...

    def update(self, key: str, change: Change) -> tuple[Circuit, Circuit]: ...

    def close(self) -> None: ...


class DatabaseCircuits:
    """Circuits in the database, one row each, shared by every process; updates are optimistic
    (the row is written only if its version is still the one read), retried when another
    process changed the same circuit in between. Reading a circuit that does not change (the
    usual case: closed, and answering) writes nothing."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def get(self, key: str) -> Circuit:
        return self._read(key)[0]

    def update(self, key: str, change: Change) -> tuple[Circuit, Circuit]:
        while True:
            before, version = self._read(key)
            after = change(before)
            if after == before or self._write(key, after, version):
                return before, after

    def _read(self, key: str) -> tuple[Circuit, int | None]:
        """The circuit and the version it was read at (None: no row yet)."""
        with self._store.session() as session:
            row = (
                session.connection()
                .execute(
                    select(
                        BreakerCircuit.state,
                        BreakerCircuit.failures,
                        BreakerCircuit.until,
                        BreakerCircuit.version,
                    ).where(BreakerCircuit.key == key)
                )
                .first()
            )
        if row is None:
            return Circuit(), None
        return Circuit(BreakerState(row.state), row.failures, row.until), row.version

    def _write(self, key: str, circuit: Circuit, version: int | None) -> bool:
        """Whether `circuit` was written over the version read (else: read it again)."""
        values = {
            "state": circuit.state.value,
            "failures": circuit.failures,
            "until": circuit.until,
        }
        with self._store.session() as session:
            if version is None:
                made = session.connection().execute(
                    insert_ignoring_duplicates(session, BreakerCircuit)
                    .values(key=key, version=1, **values)
                    .returning(BreakerCircuit.key)
                )
                return made.first() is not None
            written = session.connection().execute(
                update(BreakerCircuit)
                .where(BreakerCircuit.key == key, BreakerCircuit.version == version)
                .values(version=version + 1, **values)
            )
            return bool(written.rowcount)

    def close(self) -> None:
        """The store is the Pipeline's, closed with it."""


class RedisCircuits:
    """Circuits in Redis hashes, shared by every worker; updates are optimistic (WATCH/MULTI),
    retried when another worker changed the same circuit in between."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client
        self._keys = f"{prefix}:breaker:"

    def get(self, key: str) -> Circuit:
        try:
            return _decode(self._client.hgetall(self._keys + key))
        except redis.RedisError as exc:
            raise SharedStateUnavailable(f"breaker: Redis did not answer ({exc})") from None

    def update(self, key: str, change: Change) -> tuple[Circuit, Circuit]:
        name = self._keys + key
        try:
            with self._client.pipeline() as pipe:
                while True:
                    try:
                        pipe.watch(name)  # type: ignore[no-untyped-call]
                        before = _decode(pipe.hgetall(name))
                        after = change(before)
                        if after == before:
                            pipe.unwatch()
                            return before, after
                        pipe.multi()
                        pipe.hset(name, items=_encode(after))
                        pipe.execute()
                        return before, after
                    except redis.WatchError:
                        continue
        except redis.RedisError as exc:
            raise SharedStateUnavailable(f"breaker: Redis did not answer ({exc})") from None

    def close(self) -> None:
        self._client.close()


def _encode(circuit: Circuit) -> list[str]:
    return [
        "state",
        circuit.state.value,
        "failures",
        str(circuit.failures),
        "until",
        repr(circuit.until),
    ]


def _decode(raw: Mapping[Any, Any]) -> Circuit:
    fields = {_text(name): _text(value) for name, value in raw.items()}
    if not fields:
        return Circuit()
    return Circuit(BreakerState(fields["state"]), int(fields["failures"]), float(fields["until"]))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Breaker:
    """The breakers of one process's view: asks before sending, reports after, audits changes."""

    def __init__(
        self,
        circuits: Circuits,
        store: Store,
        threshold: int,
        open_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.circuits = circuits
        self.store = store
        self.threshold = threshold
        self.open_s = open_s
        self.clock = clock  # wall time: shared circuits compare times taken on several hosts

    def permit(self, key: str) -> Permit:
        """Whether to send now; may move an open circuit to half-open with this caller probing."""
        result: list[Permit] = []

        def change(circuit: Circuit) -> Circuit:
            result.clear()  # an optimistic retry runs this again
            after, permit = _permit(circuit, self.clock(), self.open_s)
            result.append(permit)
            return after

        self._changed(key, *self.circuits.update(key, change))
        return result[0]

    def report(self, key: str, ok: int, failed: int) -> None:
        """Record a chunk's answers: `ok` reached a working provider, `failed` were transient."""
        if not ok and not failed:
            return
        now = self.clock()

        def change(circuit: Circuit) -> Circuit:
            return _report(circuit, now, ok, failed, self.threshold, self.open_s)

        self._changed(key, *self.circuits.update(key, change))

    def usable(self, key: str) -> bool:
        """Worth sending there now (closed): used to pick a fallback channel."""
        return self.circuits.get(key).state is BreakerState.CLOSED

    def _changed(self, key: str, before: Circuit, after: Circuit) -> None:
        if before.state is after.state:
            return
        log.warning("circuit %s: %s -> %s", key, before.state, after.state)
        with self.store.session() as session:
            audit.record(
                session,
                "system",
                AUDIT_PREFIX + after.state,
                circuit=key,
                previous=before.state.value,
                failures=after.failures,
            )

    def close(self) -> None:
        self.circuits.close()
