"""What a doctor's check returns and looks at: findings (ok, warn, fail, with how to fix) and the
context of one run. Shared by the checks (`ops/checks_*.py`) and by their two callers
(`ops/doctor.py`: `outage doctor` and `GET /readyz`).

A check takes a `Context` and returns findings; it never raises (an unexpected error is a failed
finding naming the exception) and never prints a secret.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from sqlalchemy.engine import Engine

from dispatcher.delivery.registry import ChannelRegistry
from dispatcher.settings import Settings
from dispatcher.store import make_engine

PROBE_TIMEOUT_S = 1.0  # one network probe (broker ping, public URL, provider account)


class Status(StrEnum):
    """How a check came out."""

    OK = "ok"  # as it should be
    WARN = "warn"  # works, but not as an operator would want in production
    FAIL = "fail"  # the dispatcher cannot do its job until this is fixed


@dataclass(frozen=True)
class Finding:
    """One check's verdict: what it found and, when not ok, how to fix it."""

    check: str
    status: Status
    detail: str
    fix: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"check": self.check, "status": self.status, "detail": self.detail, "fix": self.fix}


def ok(check: str, detail: str) -> Finding:
    return Finding(check, Status.OK, detail)


def fail(check: str, detail: str, fix: str) -> Finding:
    return Finding(check, Status.FAIL, detail, fix)


def warn(check: str, detail: str, fix: str) -> Finding:
    return Finding(check, Status.WARN, detail, fix)


@dataclass
class Context:
    """What checks look at. `engine` is the running process's own (readiness) or one made with
    a connect timeout (doctor); `registry` builds adapters without sending anything."""

    settings: Settings
    engine: Engine
    registry: ChannelRegistry = None  # type: ignore[assignment]  # made in __post_init__
    failed: set[str] = field(default_factory=set)  # checks that failed, for dependent ones
    owned: bool = False  # the engine and registry are ours to close

    def __post_init__(self) -> None:
        if self.registry is None:
            self.registry = ChannelRegistry(self.settings)

    @classmethod
    def for_doctor(cls, settings: Settings) -> Context:
        """A context with its own engine, whose PostgreSQL connections give up after 2 s."""
        url = settings.database_url
        if url.startswith(("postgresql", "postgres")):
            url += ("&" if "?" in url else "?") + "connect_timeout=2"
        return cls(settings, make_engine(url), owned=True)

    def channels_in_use(self) -> list[str]:
        """Channels subscribers can choose, and the broadcast channels switched on."""
        return self.registry.subscriber_channels() + self.registry.broadcast_channels()

    def close(self) -> None:
        if self.owned:
            self.registry.close()
            self.engine.dispose()


Check = Callable[[Context], list[Finding]]


def one_line(exc: BaseException) -> str:
    """An exception in one line, without arguments that could carry a URL with a password."""
    message = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0] if message else ''}".rstrip(": ")
