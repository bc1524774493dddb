"""Checks of a dispatcher's configuration and surroundings, each with how to fix what it finds.

Two callers share these checks, so they never disagree: `GET /readyz` runs the fast ones that say
whether this process can do its work now (`READINESS`: database, broker, templates, live
provider settings), concurrently, under a deadline well below a second; `outage doctor` runs all
of them (`DOCTOR`), in order, including the slow ones a new operator most often gets wrong:
schema out of date, no worker consuming, provider credentials refused, sender left at its
example value, public URL unreachable, webhook token unset.

A check takes a `Context` and returns findings; it never raises (an unexpected error is a failed
finding naming the exception) and never prints a secret.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import httpx
import phonenumbers
import redis
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, inspect, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from channels.base import Channel, ChannelError
from dispatcher.delivery.registry import ChannelRegistry
from dispatcher.incidents.reports import runners_alive
from dispatcher.models import DeliveryStatus, FailureReason, IncidentState
from dispatcher.render.messages import render
from dispatcher.render.samples import sample
from dispatcher.render.templates import RenderError
from dispatcher.settings import Settings
from dispatcher.store import Base, Delivery, make_engine, utcnow

PROBE_TIMEOUT_S = 1.0  # one network probe (broker ping, public URL, provider account)
READY_DEADLINE_S = 0.8  # /readyz answers by then, whatever is still hanging
EXAMPLE_DOMAINS = ("example.com", "example.org", "example.net")
DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}
TWILIO_TEST_NUMBER = "+15005550006"  # Twilio's magic test sender: accepted, never delivered


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


def _error(exc: BaseException) -> str:
    """An exception in one line, without arguments that could carry a URL with a password."""
    message = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0] if message else ''}".rstrip(": ")


# -- the checks --------------------------------------------------------------------------------


def check_database(ctx: Context) -> list[Finding]:
    try:
        with ctx.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return [
            fail(
                "database",
                f"{ctx.engine.dialect.name} did not answer: {_error(exc)}",
                "check OUTAGE_DATABASE_URL (host, port, database, user), that the server runs "
                "and that this host may connect; for SQLite, that the directory exists and is "
                "writable",
            )
        ]
    return [ok("database", f"{ctx.engine.dialect.name} answers")]


def check_schema(ctx: Context) -> list[Finding]:
    """Every table and column the code expects exists: the schema is created on first use, but
    a column added by an upgrade is not (no migration tool), and every query on it fails."""
    inspector = inspect(ctx.engine)
    existing = set(inspector.get_table_names())
    missing_tables = [name for name in Base.metadata.tables if name not in existing]
    missing_columns: list[tuple[str, str, str]] = []  # table, column, its SQL type
    for name, table in Base.metadata.tables.items():
        if name not in existing:
            continue
        have = {column["name"] for column in inspector.get_columns(name)}
        missing_columns.extend(
            (name, column.name, column.type.compile(dialect=ctx.engine.dialect))
            for column in table.columns
            if column.name not in have
        )
    if len(missing_tables) == len(Base.metadata.tables):
        return [
            fail(
                "schema",
                "the database is empty",
                "run `outage serve` or any `outage` command once: the schema is created on "
                "first use",
            )
        ]
    if missing_tables or missing_columns:
        detail = ", ".join(
            [f"missing table {name}" for name in missing_tables]
            + [f"{table}.{column} column missing" for table, column, _ in missing_columns]
        )
        fix = "run any `outage` command once: missing tables are created on first use"
        if missing_columns:
            fix = "run, with the workers stopped: " + " ".join(
                f"ALTER TABLE {table} ADD COLUMN {column} {kind};"
                for table, column, kind in missing_columns
            )
        return [fail("schema", detail, fix)]
    return [ok("schema", f"all {len(Base.metadata.tables)} tables up to date")]


def check_broker(ctx: Context) -> list[Finding]:
    url = ctx.settings.broker_url
    if ctx.settings.embedded:
        return [ok("broker", "embedded: no broker, the pipeline runs in-process")]
    where = url.split("@")[-1].split("://")[-1]  # host and port, never a password
    try:
        if url.startswith(("redis://", "rediss://")):
            client = redis.Redis.from_url(
                url, socket_timeout=PROBE_TIMEOUT_S, socket_connect_timeout=PROBE_TIMEOUT_S
            )
            try:
                client.ping()
            finally:
                client.close()
        else:  # amqp and others: that the port takes a connection is what we can tell
            parts = urlsplit(url)
            port = parts.port or DEFAULT_PORTS.get(parts.scheme, 5672)
            socket.create_connection((parts.hostname or "127.0.0.1", port), PROBE_TIMEOUT_S).close()
    except Exception as exc:  # any transport's connection error means the same to an operator
        return [
            fail(
                "broker",
                f"{where} did not answer: {_error(exc)}",
                "start the broker, or fix OUTAGE_BROKER_URL (OUTAGE_BROKER_URL=embedded runs "
                "without one)",
            )
        ]
    return [ok("broker", f"{where} answers")]


OVERDUE_S = 60.0  # a due delivery still queued after this long is overdue


def check_workers(ctx: Context) -> list[Finding]:
    """Something is running to send, and the queue drains. On the embedded default that is a
    runner whose heartbeat is recent (`outage serve`, `outage worker`); with a broker a worker
    that answers a ping. Overdue means queued and due for more than a minute, or claimed and
    left in `sending` past its lease, with nothing running (or, while something runs, for
    longer than the sweep would have taken to send it again)."""
    findings: list[Finding] = []
    running: list[str] = []
    database_ok = "database" not in ctx.failed and "schema" not in ctx.failed
    if ctx.settings.embedded:
        queued = 0
        if database_ok:
            with Session(ctx.engine) as session:
                running = runners_alive(session)
                queued = (
                    session.scalar(
                        select(func.count()).where(Delivery.status == DeliveryStatus.QUEUED)
                    )
                    or 0
                )
        if running:
            findings.append(ok("workers", f"embedded runner running: {', '.join(running)}"))
        elif queued:
            findings.append(
                warn(
                    "workers",
                    f"no embedded runner is running and {queued} deliveries are queued: they "
                    "wait until one runs",
                    "keep `outage serve` running, or run `outage worker`",
                )
            )
        else:
            findings.append(
                ok("workers", "nothing is queued; `outage serve` or `outage worker` sends")
            )
    elif "broker" not in ctx.failed:
        from dispatcher.delivery.tasks import make_celery

        replies = make_celery(ctx.settings).control.inspect(timeout=PROBE_TIMEOUT_S).ping()
        running = list(replies or {})
        if replies:
            findings.append(
                ok("workers", f"{len(replies)} worker(s) answered: {', '.join(replies)}")
            )
        else:
            findings.append(
                fail(
                    "workers",
                    f"no worker answered a ping within {PROBE_TIMEOUT_S:g} s",
                    "start `outage worker` (each one sweeps too: no beat is needed) "
                    "with the same OUTAGE_BROKER_URL and OUTAGE_DATABASE_URL",
                )
            )
    if not database_ok:
        return findings
    limit_s = max(2 * ctx.settings.sweep_stale_s, OVERDUE_S) if running else OVERDUE_S
    now = utcnow()
    with ctx.engine.connect() as connection:
        waiting, oldest = connection.execute(
            select(func.count(), func.min(Delivery.due_at)).where(
                Delivery.status == DeliveryStatus.QUEUED,
                Delivery.due_at <= now - timedelta(seconds=limit_s),
            )
        ).one()
        stuck = connection.execute(
            select(func.count()).where(
                Delivery.status == DeliveryStatus.SENDING, Delivery.lease_until < now
            )
        ).scalar_one()
    if waiting or stuck:
        parts = [f"{waiting} deliveries due for more than {limit_s:g} s are still queued"]
        if oldest is not None:
            parts[0] += f" (the oldest since {oldest:%Y-%m-%d %H:%M:%S} UTC)"
        if stuck:
            parts.append(f"{stuck} left in sending past their lease")
        fix = (
            "check the workers' logs: every worker sweeps each OUTAGE_SWEEP_EVERY_S and logs why "
            "a sweep failed"
            if running
            else "nothing is running to send them: run `outage worker`, or keep `outage serve` "
            "running"
        )
        findings.append(fail("queue", "; ".join(parts), fix))
    else:
        findings.append(ok("queue", f"no delivery waiting past {limit_s:g} s"))
    return findings


def check_templates(ctx: Context) -> list[Finding]:
    """Every installed channel renders every incident state from the sample data."""
    broken: list[str] = []
    for name in ctx.registry.names:
        factory = ctx.registry.factory(name)
        for state in IncidentState:
            incident, update, recipient = sample(state)
            try:
                render(
                    name,
                    factory.limits,
                    incident,
                    update,
                    None if factory.address_field is None else recipient,
                    company_name=ctx.settings.company_name,
                    support_url=ctx.settings.support_url,
                    sms_max_segments=ctx.settings.sms_max_segments,
                )
            except RenderError as exc:
                broken.append(f"{name}/{state}: {exc}")
    if broken:
        return [
            fail(
                "templates",
                "; ".join(broken),
                "fix the template under templates/<channel>/<locale>/ and check it with "
                "`outage template preview --channel <channel> --state <state>`",
            )
        ]
    return [ok("templates", f"{len(ctx.registry.names)} channels render every state")]


def _adapter(ctx: Context, name: str) -> Channel | Finding:
    """The channel's adapter, built as a worker builds it (no request is made)."""
    try:
        return ctx.registry.get(name)
    except ValueError as exc:  # a missing credential: the message names the variable
        return fail(
            f"provider:{name}",
            str(exc).split(":")[0],
            "set it in the environment of every process (web and workers), or use "
            "OUTAGE_PROVIDERS=sandbox",
        )


def check_providers_configured(ctx: Context) -> list[Finding]:
    """Live mode: every channel in use has its credentials (nothing is sent or fetched)."""
    if ctx.settings.providers == "sandbox":
        return [ok("providers", "sandbox: nothing reaches customers (OUTAGE_PROVIDERS=live)")]
    findings = []
    for name in ctx.channels_in_use():
        built = _adapter(ctx, name)
        if isinstance(built, Finding):
            findings.append(built)
    return findings or [
        ok("providers", "live credentials set for " + ", ".join(ctx.channels_in_use()))
    ]


_ACCOUNT_FIXES = {
    FailureReason.REJECTED: "the provider refused the credentials: copy them again from its "
    "console (a rotated key, a test key in live mode, or a missing permission)",
    FailureReason.RATE_LIMITED: "the provider is rate limiting this account: wait, or raise "
    "the account's limits",
}
_UNREACHABLE_FIX = (
    "the provider did not answer: check this host's outbound network, proxy and DNS, and the "
    "provider's status page"
)


def check_provider_accounts(ctx: Context) -> list[Finding]:
    """Each provider accepts our credentials: one harmless authenticated call per channel
    (Twilio: the account; SendGrid: the key's scopes; X: the user), against the sandbox in
    sandbox mode."""
    if ctx.settings.providers == "sandbox" and ctx.settings.sandbox_url is None:
        return [ok("providers", "sandbox started in-process by each process: nothing to check")]
    findings = []
    for name in ctx.channels_in_use():
        check = f"provider:{name}"
        built = _adapter(ctx, name)
        if isinstance(built, Finding):
            findings.append(built)
            continue
        try:
            answer = built.check_account()
        except ChannelError as exc:
            fix = _ACCOUNT_FIXES.get(exc.failure_reason, _UNREACHABLE_FIX)
            findings.append(fail(check, str(exc), fix))
            continue
        if answer is not None:
            findings.append(ok(check, answer))
    return findings


def check_senders(ctx: Context) -> list[Finding]:
    """The SMS sender is a valid number and the email sender a valid address, and in live mode
    neither is left at its example value."""
    settings, findings = ctx.settings, []
    live = settings.providers == "live"
    in_use = ctx.channels_in_use()
    if "sms" in in_use:
        try:
            valid = phonenumbers.is_valid_number(phonenumbers.parse(settings.sms_from, None))
        except phonenumbers.NumberParseException:
            valid = False
        if not valid:
            findings.append(
                fail(
                    "sender:sms",
                    f"OUTAGE_SMS_FROM={settings.sms_from!r} is not a valid number",
                    "set OUTAGE_SMS_FROM to your Twilio number in +E.164 form",
                )
            )
        elif live and settings.sms_from == TWILIO_TEST_NUMBER:
            findings.append(
                fail(
                    "sender:sms",
                    "OUTAGE_SMS_FROM is Twilio's test number: nothing is delivered",
                    "set OUTAGE_SMS_FROM to a number of your Twilio account",
                )
            )
        else:
            findings.append(ok("sender:sms", f"sending from {settings.sms_from}"))
    if "email" in in_use:
        try:
            validate_email(settings.email_from, check_deliverability=False)
            domain = settings.email_from.rpartition("@")[2].lower()
        except EmailNotValidError as exc:
            findings.append(
                fail(
                    "sender:email",
                    f"OUTAGE_EMAIL_FROM is not an address: {exc}",
                    "set OUTAGE_EMAIL_FROM to a sender verified in SendGrid",
                )
            )
        else:
            if live and domain in EXAMPLE_DOMAINS:
                findings.append(
                    fail(
                        "sender:email",
                        f"OUTAGE_EMAIL_FROM is still at {domain}",
                        "set OUTAGE_EMAIL_FROM to a sender verified in SendGrid (Sender "
                        "Authentication), on a domain with SPF and DKIM",
                    )
                )
            else:
                findings.append(ok("sender:email", f"sending from {settings.email_from}"))
    return findings


def check_public_url(ctx: Context) -> list[Finding]:
    """Links in every message (manage, unsubscribe, the incident page) start with the public URL:
    it must answer, and in live mode must not be this machine's loopback address."""
    base = ctx.settings.public_url.rstrip("/")
    if ctx.settings.providers == "live" and ("//127." in base or "//localhost" in base):
        return [
            fail(
                "public_url",
                f"OUTAGE_PUBLIC_URL={base} is this machine: customers' links fail",
                "set OUTAGE_PUBLIC_URL to the address customers reach `outage serve` at",
            )
        ]
    try:
        response = httpx.get(f"{base}/healthz", timeout=PROBE_TIMEOUT_S, follow_redirects=True)
    except httpx.HTTPError as exc:
        return [
            fail(
                "public_url",
                f"{base} did not answer: {_error(exc)}",
                "start `outage serve` there, or set OUTAGE_PUBLIC_URL to where it runs",
            )
        ]
    if response.status_code != 200:
        return [
            fail(
                "public_url",
                f"{base}/healthz answered {response.status_code}",
                "point OUTAGE_PUBLIC_URL at `outage serve` (something else answers there)",
            )
        ]
    return [ok("public_url", f"{base} answers")]


def check_webhook_token(ctx: Context) -> list[Finding]:
    settings = ctx.settings
    if settings.webhook_token is None and not settings.webhook_tokens:
        return [
            fail(
                "webhook_token",
                "no token: every monitoring webhook is refused (401)",
                "set OUTAGE_WEBHOOK_TOKEN to a long random value (`openssl rand -hex 32`) and "
                "send it from Alertmanager/Grafana as `Authorization: Bearer …`",
            )
        ]
    tokens = [t for t in [settings.webhook_token, *settings.webhook_tokens.values()] if t]
    if any(len(token.get_secret_value()) < 16 for token in tokens):
        return [
            warn(
                "webhook_token",
                "a webhook token is shorter than 16 characters",
                "use a long random value (`openssl rand -hex 32`)",
            )
        ]
    return [ok("webhook_token", "set")]


# -- running them ------------------------------------------------------------------------------

READINESS: tuple[tuple[str, Check], ...] = (
    ("database", check_database),
    ("broker", check_broker),
    ("templates", check_templates),
    ("providers", check_providers_configured),
)

DOCTOR: tuple[tuple[str, Check], ...] = (
    ("database", check_database),
    ("schema", check_schema),
    ("broker", check_broker),
    ("workers", check_workers),
    ("templates", check_templates),
    ("providers", check_provider_accounts),
    ("senders", check_senders),
    ("public_url", check_public_url),
    ("webhook_token", check_webhook_token),
)

# Doctor's checks that only make sense once an earlier one passed.
_NEEDS = {"schema": "database"}


def _guarded(name: str, check: Check, ctx: Context) -> list[Finding]:
    """Run one check; an unexpected exception is a failed finding, never a crash."""
    try:
        return check(ctx)
    except Exception as exc:  # a check's own bug must not hide the other findings
        return [fail(name, f"the check itself failed: {_error(exc)}", "report this as a bug")]


def doctor(ctx: Context, checks: Sequence[tuple[str, Check]] = DOCTOR) -> list[Finding]:
    """Every check in order; a check whose prerequisite failed is left out."""
    findings: list[Finding] = []
    for name, check in checks:
        if _NEEDS.get(name) in ctx.failed:
            continue
        found = _guarded(name, check, ctx)
        if any(f.status is Status.FAIL for f in found):
            ctx.failed.add(name)
        findings.extend(found)
    return findings


_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="readiness")


def readiness(
    ctx: Context,
    checks: Sequence[tuple[str, Check]] = READINESS,
    deadline_s: float = READY_DEADLINE_S,
) -> list[Finding]:
    """The readiness checks at once, each in a thread; one still running at the deadline is a
    failure ("no answer"), so the caller answers in time even when a server hangs."""
    started = time.monotonic()
    futures = {_POOL.submit(_guarded, name, check, ctx): name for name, check in checks}
    done, _ = wait(futures, timeout=deadline_s)
    findings: list[Finding] = []
    for future, name in futures.items():
        if future in done:
            findings.extend(future.result())
        else:
            waited = time.monotonic() - started
            findings.append(
                fail(name, f"no answer within {waited:.1f} s", "see `outage doctor` for detail")
            )
    return findings


def all_ok(findings: Sequence[Finding]) -> bool:
    return all(finding.status is Status.OK for finding in findings)


def summary(findings: Sequence[Finding]) -> dict[str, Any]:
    """The JSON shape of /readyz and `outage doctor --json`."""
    return {
        "status": "ok" if all_ok(findings) else "fail",
        "checks": [finding.as_dict() for finding in findings],
    }
