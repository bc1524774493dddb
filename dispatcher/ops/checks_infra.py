"""The doctor's checks of what a dispatcher stands on: the database and its schema, the broker,
and something running to send (a worker, or the embedded runner) with a queue that drains."""

from __future__ import annotations

import socket
from datetime import timedelta
from urllib.parse import urlsplit

import redis
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from dispatcher import migrations
from dispatcher.incidents.reports import runners_alive
from dispatcher.models import DeliveryStatus
from dispatcher.ops.findings import PROBE_TIMEOUT_S, Context, Finding, fail, ok, one_line, warn
from dispatcher.store import Base, Delivery, utcnow

DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}


def check_database(ctx: Context) -> list[Finding]:
    try:
        with ctx.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return [
            fail(
                "database",
                f"{ctx.engine.dialect.name} did not answer: {one_line(exc)}",
                "check OUTAGE_DATABASE_URL (host, port, database, user), that the server runs "
                "and that this host may connect; for SQLite, that the directory exists and is "
                "writable",
            )
        ]
    return [ok("database", f"{ctx.engine.dialect.name} answers")]


def check_schema(ctx: Context) -> list[Finding]:
    """The schema is at the revision this release needs: a database behind it (an upgrade of
    the code without `outage db upgrade`) is refused by every command and by `outage serve`."""
    with ctx.engine.connect() as connection:
        schema = migrations.read(connection, Base.metadata)
    if schema.empty:
        return [
            fail(
                "schema",
                "the database is empty",
                f"{migrations.UPGRADE_HINT} (or any `outage` command): the schema is created on "
                "first use",
            )
        ]
    if not schema.known:
        return [fail("schema", schema.status(), "run the release that upgraded this database")]
    if not schema.up_to_date:
        return [
            fail(
                "schema",
                schema.status(),
                f"back the database up, then {migrations.UPGRADE_HINT} (or start `outage serve`"
                " or `outage worker` once with OUTAGE_AUTO_MIGRATE=true)",
            )
        ]
    return [ok("schema", f"all {len(Base.metadata.tables)} tables at revision {schema.head}")]


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
                f"{where} did not answer: {one_line(exc)}",
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
