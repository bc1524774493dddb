"""Delivery guarantees under faults, measured on the current code: the table of issue 15.

    .venv/bin/python bench/faults.py                        # every scenario, ~5 minutes
    .venv/bin/python bench/faults.py --only kill,webhooks   # some of them
    .venv/bin/python bench/faults.py --json faults.json     # and the figures as JSON

Each scenario starts real `outage worker` processes (Celery, `--concurrency 2`, no beat, the
settings' defaults: lease 15 s, sweep every 5 s, SMS paced at 30/s with bursts of 30, unless its
row says otherwise), the provider sandbox in a process of its own answering every request after
20 ms, and a PostgreSQL cluster of its own (SQLite when initdb is missing). Redis is
127.0.0.1:6379 database 13 (flushed); RabbitMQ a virtual host of its own on 127.0.0.1:5672. One
row per scenario:

    lost         recipients the sandbox never received anything for
    duplicates   extra copies the sandbox received (real duplicates)
    counted      what `outage delivery stats` says was possibly sent twice
    requests     provider_requests (the attempts on the rows) / the requests the sandbox got
    recovery     from the end of the fault (a new worker started, the database back) until
                 every delivery was final; for webhooks, when the other receivers were told
    peak/s       the most SMS requests that left the workers within one second, stamped by
                 the sender as they left, against the limit (rate x 1 s + burst)

Figures, never pass/fail: the machine is shared and noisy. tests/test_faults.py and
tests/test_faults_services.py assert the targets on smaller runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `bench` and the project importable
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from sqlalchemy import func, insert, select  # noqa: E402

from bench.sandbox_proc import SandboxProcess  # noqa: E402
from bench.services import PostgresServer, rabbitmq_available, rabbitmq_vhost  # noqa: E402
from bench.workers import Workers, outage_worker  # noqa: E402
from dispatcher.delivery import operations  # noqa: E402
from dispatcher.delivery.bootstrap import connect  # noqa: E402
from dispatcher.delivery.pipeline import Pipeline  # noqa: E402
from dispatcher.incidents import lifecycle  # noqa: E402
from dispatcher.models import DeliveryStatus, IncidentIn, Severity  # noqa: E402
from dispatcher.settings import Settings  # noqa: E402
from dispatcher.store import Base, Delivery, Store, Subscriber, make_engine, utcnow  # noqa: E402

REDIS = "redis://127.0.0.1:6379/13"  # bench/fanout.py uses /14, the tests /15
RABBITMQ = "amqp://guest:guest@127.0.0.1:5672"
LATENCY_MS = 20.0
SETTLE_LIMIT_S = 180.0
FAST_SMS = {"sms": {"per_s": 1000, "burst": 100}}  # where the rate is not what is measured
SCENARIOS = ("kill", "rabbitmq", "storm", "postgres", "webhooks")


@dataclass
class Row:
    fault: str
    lost: int | None = None
    duplicates: int | None = None
    counted: int | None = None
    requests: str = "-"
    recovery: str = "-"
    peak: str = "-"
    note: str = ""

    def cells(self) -> list[str]:
        def number(value: int | None) -> str:
            return "-" if value is None else f"{value:,}"

        return [
            self.fault,
            number(self.lost),
            number(self.duplicates),
            number(self.counted),
            self.requests,
            self.recovery,
            self.peak,
            self.note,
        ]


@dataclass
class Bench:
    """What every scenario shares: the sandbox, the database server, a scratch directory."""

    sandbox: SandboxProcess
    scratch: Path
    postgres: PostgresServer | None
    runs: int = 0
    rows: list[Row] = field(default_factory=list)

    def database(self) -> str:
        """A fresh database for one scenario."""
        self.runs += 1
        if self.postgres is None:
            return f"sqlite:///{self.scratch / f'faults{self.runs}.sqlite3'}"
        engine = make_engine(self.postgres.url)
        Base.metadata.drop_all(engine)
        engine.dispose()
        return self.postgres.url


@dataclass
class Deployment:
    """Workers and the observer's own Pipeline on one database and broker."""

    bench: Bench
    settings: Settings
    env: dict[str, str]
    pipeline: Pipeline
    workers: list[Workers] = field(default_factory=list)

    def start_worker(self, count: int = 1) -> Workers:
        number = len(self.workers)
        base = self.bench.scratch / f"run{self.bench.runs}-w{number}"
        logs = [base.with_suffix(f".{i}.log") for i in range(count)]

        def ready() -> int:  # workers with one node name answer a ping as one: read their logs
            return sum(p.exists() and "ready." in p.read_text(errors="replace") for p in logs)

        started = Workers(
            [outage_worker(2) for _ in range(count)],
            self.env,
            ROOT,
            base,
            ready,
        )
        self.workers.append(started)
        return started

    @property
    def store(self) -> Store:
        return self.pipeline.store

    def announce(self) -> float:
        incident = IncidentIn(title="API errors", severity=Severity.CRITICAL, components=["api"])
        posted = lifecycle.open_incident(self.store, incident)
        accepted = time.time()
        self.pipeline.announce(posted.update_id)
        return accepted

    def attempt_lines(self) -> int:
        """JSON lines of delivery attempts in every worker's log."""
        count = 0
        for pool in self.workers:
            for path in pool.logs:
                for line in path.read_text(errors="replace").splitlines():
                    count += line.startswith("{") and '"event": "delivery_attempt"' in line
        return count


@contextmanager
def deployment(
    bench: Bench, broker: str, people: Callable[[Store], int], **extra: object
) -> Iterator[tuple[Deployment, int]]:
    """A fresh database with `people` in it and a deployment on `broker` (workers started by
    the scenario); the number of deliveries to expect."""
    values: dict[str, Any] = {
        "database_url": bench.database(),
        "broker_url": broker,
        "sandbox_url": bench.sandbox.url,
        "broadcast": [],
        "secret_key": "benchmark-secret-key",
    } | extra
    settings = Settings(**values)
    env = {f"OUTAGE_{name.upper()}": _env(value) for name, value in values.items()}
    if broker.startswith("redis"):
        redis.Redis.from_url(broker).flushdb()
    bench.sandbox.clear()
    bench.sandbox.ask("faults-clear")
    bench.sandbox.ask(f"latency {LATENCY_MS}")
    running = Deployment(bench, settings, env, connect(settings))
    try:
        yield running, people(running.store)
    finally:
        for pool in running.workers:
            pool.stop()
        running.pipeline.close()


def _env(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def sms_people(count: int) -> Callable[[Store], int]:
    def write(store: Store) -> int:
        _write(store, [{"phone": f"+1415{n:07d}", "channels": ["sms"]} for n in range(count)])
        return count

    return write


def webhook_people(count: int) -> Callable[[Store], int]:
    def write(store: Store) -> int:
        rows = [
            {"webhook_url": receiver(n), "webhook_secret": "s", "channels": ["webhook"]}
            for n in range(count)
        ]
        _write(store, rows)
        return count

    return write


def receiver(n: int) -> str:
    return f"https://hooks.example.com/r{n}"


def _write(store: Store, people: list[dict[str, Any]]) -> None:
    now = utcnow()
    rows = [
        {
            "name": f"s{n}",
            "components": [],
            "min_severity": Severity.MINOR,
            "phone_confirmed_at": now,
            **person,
        }
        for n, person in enumerate(people)
    ]
    with store.session() as session:
        session.execute(insert(Subscriber), rows)


def pending(store: Store) -> int:
    with store.session() as session:
        waiting = (DeliveryStatus.QUEUED, DeliveryStatus.SENDING)
        return int(session.scalar(select(func.count()).where(Delivery.status.in_(waiting))) or 0)


def wait_for(what: str, done: Callable[[], bool], limit_s: float = SETTLE_LIMIT_S) -> float:
    """Poll until `done`; when it was (time.monotonic)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            if done():
                return time.monotonic()
        except Exception:  # the database restarting under the observer too
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what}: not within {limit_s:.0f} s")


def settled(running: Deployment, expected: int) -> Callable[[], bool]:
    def check() -> bool:
        with running.store.session() as session:
            written = session.scalar(select(func.count()).select_from(Delivery)) or 0
        return written >= expected and pending(running.store) == 0

    return check


def received(bench: Bench) -> int:
    return int(sum(bench.sandbox.ask("stats")["recorded"].values()))


def copies(bench: Bench) -> Counter[str]:
    """Messages the sandbox accepted, per recipient."""
    times = bench.sandbox.times(bench.scratch / "times.json")
    return Counter(str(to) for _, _, to in times)


def busiest(stamps: list[float], window_s: float = 1.0) -> int:
    most, first = 0, 0
    for last, at in enumerate(stamps):
        while at - stamps[first] >= window_s:
            first += 1
        most = max(most, last - first + 1)
    return most


def tallied(row: Row, bench: Bench, running: Deployment, expected: int) -> Row:
    """Fill in lost, duplicates, counted and requests from the sandbox and the database."""
    got = copies(bench)
    figures = operations.stats(running.store)
    row.lost = expected - len(got)
    row.duplicates = sum(n - 1 for n in got.values())
    row.counted = figures.possibly_sent_twice
    row.requests = f"{figures.provider_requests:,} / {bench.sandbox.requests():,}"
    return row


def peak(bench: Bench, per_s: float, burst: int) -> str:
    stamps = bench.sandbox.departures(bench.scratch / "departures.json")
    return f"{busiest(stamps)} (limit {per_s + burst:g})" if stamps else "-"


# -- the scenarios --------------------------------------------------------------------------------


def kill(bench: Bench) -> Row:
    row = Row("SIGKILL a worker mid fan-out, start a new `outage worker`, no beat")
    with deployment(bench, REDIS, sms_people(3000), rate_limits=FAST_SMS) as (running, expected):
        first = running.start_worker()
        running.announce()
        wait_for("a third sent", lambda: received(bench) >= expected // 3)
        in_flight = bench.sandbox.ask("stats")["in_flight"]
        first.kill(0)
        restarted = time.monotonic()
        running.start_worker()
        done = wait_for("everyone told", settled(running, expected))
        row.recovery = f"{done - restarted:.1f} s"
        row.peak = peak(bench, 1000, 100)
        row.note = f"3,000 SMS (paced at 1,000/s); {in_flight} requests in flight at the kill"
        return tallied(row, bench, running, expected)


def rabbitmq(bench: Bench) -> Row:
    row = Row("RabbitMQ, 2 workers, SMS at 30/s (burst 30)")
    if not rabbitmq_available():
        row.note = "skipped: no rabbitmqctl"
        return row
    with (
        rabbitmq_vhost(RABBITMQ) as broker,
        deployment(bench, broker, sms_people(600)) as (
            running,
            expected,
        ),
    ):
        running.start_worker(2)
        running.announce()
        wait_for("everyone told", settled(running, expected))
        stamps = bench.sandbox.departures(bench.scratch / "departures.json")
        row.peak = f"{busiest(stamps)} (limit 60)"
        lines = running.attempt_lines()
        row.note = (
            f"600 SMS; busiest 10 s {busiest(stamps, 10.0)} (limit 330); "
            f"the workers logged {lines} attempt lines as JSON"
        )
        return tallied(row, bench, running, expected)


def storm(bench: Bench) -> Row:
    row = Row("429, 500, then answers slower than the timeout, breaker off (Redis, 2 workers)")
    extra = {"breaker_channels": [], "provider_timeout_s": 1.0}
    with deployment(bench, REDIS, sms_people(600), **extra) as (running, expected):
        running.start_worker(2)
        running.announce()
        wait_for("sending under way", lambda: received(bench) >= 60)
        bench.sandbox.ask("outage 429 2 sms 0.5")
        bench.sandbox.ask("outage 500 4 sms")  # the two seconds after the 429s
        time.sleep(4)
        bench.sandbox.ask("latency 1500")  # accepted, but after the client gave up
        time.sleep(3)
        bench.sandbox.ask(f"latency {LATENCY_MS}")
        ended = time.monotonic()
        done = wait_for("everyone told", settled(running, expected))
        row.recovery = f"{done - ended:.1f} s"
        row.peak = peak(bench, 30, 30)
        row.note = "600 SMS, provider timeout 1 s"
        return tallied(row, bench, running, expected)


def postgres(bench: Bench) -> Row:
    row = Row("PostgreSQL restarted for 2.5 s mid fan-out (Redis)")
    server = bench.postgres
    if server is None:
        row.note = "skipped: no initdb (PostgreSQL)"
        return row
    with deployment(bench, REDIS, sms_people(3000), rate_limits=FAST_SMS) as (running, expected):
        running.start_worker()
        running.announce()
        wait_for("a third sent", lambda: received(bench) >= expected // 3)
        server.stop()
        time.sleep(2.5)
        server.start()
        restarted = time.monotonic()
        done = wait_for("everyone told", settled(running, expected))
        row.recovery = f"{done - restarted:.1f} s"
        row.note = "3,000 SMS (paced at 1,000/s)"
        return tallied(row, bench, running, expected)


def webhooks(bench: Bench, total: int, hanging: list[int], slow: list[int], fault: str) -> Row:
    """`total` receivers, some hanging (never answering) and some slow (3 s): how long the
    others waited, from the incident's commit to their receiver's acceptance."""
    row = Row(fault)
    with deployment(bench, REDIS, webhook_people(total)) as (running, expected):
        for n in hanging:
            bench.sandbox.ask(f"delay 600 {receiver(n)}")
        for n in slow:
            bench.sandbox.ask(f"delay 3 {receiver(n)}")
        running.start_worker(2)
        accepted = running.announce()
        others = expected - len(hanging)
        wait_for("the others told", lambda: received(bench) >= others, 120)
        got = bench.sandbox.times(bench.scratch / "times.json")
        skip = {f"/hooks/hooks.example.com/r{n}" for n in hanging + slow}
        told = sorted(at - accepted for _, at, to in got if to not in skip)
        p50, p95 = told[len(told) // 2], told[int(len(told) * 0.95)]
        row.lost = others - len({to for _, _, to in got})
        row.recovery = f"others told: p50 {p50:.1f} s, p95 {p95:.1f} s, last {told[-1]:.1f} s"
        row.note = f"{total} receivers, {len(hanging)} hanging, {len(slow)} slow (3 s)"
        return row


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(SCENARIOS), help=", ".join(SCENARIOS))
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    args = parser.parse_args(argv)
    chosen = [name for name in args.only.split(",") if name]
    if set(chosen) - set(SCENARIOS):
        parser.error(f"--only takes {', '.join(SCENARIOS)}")
    with tempfile.TemporaryDirectory(prefix="outage-faults-") as tmp:
        server = PostgresServer()
        server.init()
        sandbox = SandboxProcess(LATENCY_MS, ROOT)
        bench = Bench(sandbox, Path(tmp), server if server.available else None)
        runs: dict[str, Callable[[], list[Row]]] = {
            "kill": lambda: [kill(bench)],
            "rabbitmq": lambda: [rabbitmq(bench)],
            "storm": lambda: [storm(bench)],
            "postgres": lambda: [postgres(bench)],
            "webhooks": lambda: [
                webhooks(bench, 300, [0], [1], "one hanging and one slow receiver, first batch"),
                webhooks(bench, 400, list(range(0, 400, 10)), [], "40 of 400 receivers hanging"),
            ],
        }
        try:
            for name in chosen:
                started = time.monotonic()
                for row in runs[name]():
                    bench.rows.append(row)
                    print(f"{name}: {row.cells()} ({time.monotonic() - started:.0f} s)", flush=True)
        finally:
            sandbox.close()
            server.remove()
    header = ["fault", "lost", "duplicates", "counted", "requests", "recovery", "peak/s", ""]
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in bench.rows:
        print("| " + " | ".join(row.cells()) + " |")
    if args.json:
        args.json.write_text(json.dumps([asdict(row) for row in bench.rows], indent=2))
    return bench.rows


if __name__ == "__main__":
    main()
