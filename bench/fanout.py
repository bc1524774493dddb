"""Fan-out at scale: one incident to N subscribers, ours against the alternatives, side by side.

    .venv/bin/python bench/fanout.py                      # 100,000 subscribers, embedded default
    .venv/bin/python bench/fanout.py --workers 2          # Celery workers on Redis
    .venv/bin/python bench/fanout.py --workers 2 --broker amqp://guest:guest@127.0.0.1:5672//
    .venv/bin/python bench/fanout.py -n 300 --latency-ms 0 --skip naive,apprise --json out.json
    .venv/bin/python bench/fanout.py --scope 10 --skip naive,apprise,ceiling  # 10% of them

One run: write N subscribers (bench/population.py), start the provider sandbox in its own process
with a per-request latency standing in for a real provider's round trip, then on that sandbox and
those subscribers, one after the other: ours (open a critical incident; the clock stops when
every delivery row is final), the bare-client ceiling, Apprise (the webhook subscribers; and
ours again on exactly those, `ours-webhooks`) and the naive one-task-per-message design (on a
sample when N is large: its rate is comparable, its totals are extrapolated). With `--scope P`
every subscriber has a region attribute and ours runs once more, on a database of its own with
the same people, for an incident scoped to P% of them (`ours-scoped`, private: no public post),
to compare its time to the last delivery with the unscoped run's. Per-delivery latencies are the
sandbox's acceptance times, one clock for every design. Prints one table; `--json` writes the
same figures, `--plot` a timeline.

Figures, never pass/fail: this machine is shared and noisy, so compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `bench` and the project importable
    sys.path.insert(0, str(ROOT))

from bench import alternatives, ours  # noqa: E402
from bench.population import channel_counts, in_scope, populate, scope, spec  # noqa: E402
from bench.sandbox_proc import SandboxProcess  # noqa: E402
from bench.workers import Workers, naive_worker  # noqa: E402

DEFAULT_REDIS = "redis://127.0.0.1:6379/14"  # the tests use /15
SKIPPABLE = ("naive", "apprise", "ceiling")


@dataclass
class Result:
    """One design's run, its latencies measured on the sandbox's clock from `accepted`."""

    name: str
    deliveries: int
    wall_s: float  # accepted -> every delivery recorded (ours: rows final; others: answered)
    offsets: list[float] = field(repr=False)  # provider acceptance times, sorted
    requests: int
    peak_rss_mb: dict[str, float]
    note: str = ""
    scale: float = 1.0  # a sample: totals shown are multiplied by this

    @property
    def per_s(self) -> float:
        return self.deliveries / self.wall_s if self.wall_s > 0 else 0.0

    def quantile(self, q: float) -> float:
        if not self.offsets:
            return float("nan")
        return self.offsets[min(len(self.offsets) - 1, int(q * len(self.offsets)))]

    def row(self) -> dict[str, Any]:
        return {
            "deliveries": self.deliveries,
            "deliveries_per_s": round(self.per_s, 1),
            "first_delivery_s": round(self.offsets[0], 3) if self.offsets else None,
            "p50_s": round(self.quantile(0.5), 3),
            "p99_s": round(self.quantile(0.99), 3),
            "last_delivery_s": round(self.wall_s, 3),
            "provider_requests": self.requests,
            "peak_rss_mb": {k: round(v, 1) for k, v in self.peak_rss_mb.items()},
            "sample_scale": self.scale,
            "note": self.note,
        }


def measured(
    name: str,
    sandbox: SandboxProcess,
    run: dict[str, Any],
    deliveries: int,
    scratch: Path,
    note: str = "",
    scale: float = 1.0,
) -> Result:
    times = sandbox.times(scratch / f"{name}.times.json")
    offsets = sorted(at - run["accepted"] for _, at, _ in times)
    return Result(
        name=name,
        deliveries=deliveries,
        wall_s=run["finished"] - run["accepted"],
        offsets=offsets,
        requests=sandbox.requests(),
        peak_rss_mb=run["peak_rss_mb"],
        note=note,
        scale=scale,
    )


def sample_texts(sandbox_url: str) -> dict[str, str]:
    """One rendered text per channel, so the yardsticks send bodies of our size."""
    from datetime import UTC, datetime

    from dispatcher.delivery.registry import ChannelRegistry
    from dispatcher.models import IncidentState, Severity
    from dispatcher.render.messages import render
    from dispatcher.render.views import IncidentView, RecipientView, UpdateView
    from dispatcher.settings import Settings

    settings = Settings(sandbox_url=sandbox_url)
    factories = ChannelRegistry(settings).factories
    now = datetime.now(UTC)
    incident = IncidentView(
        1, "API errors", Severity.CRITICAL, IncidentState.INVESTIGATING, ("api",), now, None, "u"
    )
    update = UpdateView(1, IncidentState.INVESTIGATING, None, now)
    person = RecipientView("Subscriber 1", "en", "https://x/m/1", "https://x/u/1")
    texts = {}
    for channel in ("sms", "email", "webhook", "social"):
        texts[channel] = render(
            channel,
            factories[channel].limits,
            incident,
            update,
            None if channel == "social" else person,
            company_name=settings.company_name,
            support_url=None,
            sms_max_segments=settings.sms_max_segments,
        ).text
    return texts


def run_naive(
    args: argparse.Namespace, sandbox: SandboxProcess, broker: str, scratch: Path
) -> Result:
    """One Celery task per delivery for a sample of the subscribers, spread over the mix."""
    from datetime import UTC, datetime

    from bench import naive
    from dispatcher.models import IncidentState, Severity
    from dispatcher.render.views import IncidentView, UpdateView

    step = max(1, args.n // args.naive_sample)
    indices = list(range(0, args.n, step))
    now = datetime.now(UTC)
    incident = IncidentView(
        1, "API errors", Severity.CRITICAL, IncidentState.INVESTIGATING, ("api",), now, None, "u"
    )
    update = UpdateView(1, IncidentState.INVESTIGATING, None, now)
    processes = max(1, args.workers)
    env = {"NAIVE_BROKER_URL": broker, "OUTAGE_SANDBOX_URL": sandbox.url}
    naive.app.conf.broker_url = broker
    naive.app.control.purge()
    pool = Workers(
        [naive_worker(args.concurrency, f"naive{i}") for i in range(processes)],
        env,
        ROOT,
        scratch / "naive",
        lambda: len(naive.app.control.ping(timeout=0.5)),
    )
    try:
        sandbox.clear()
        accepted = time.time()
        for index in indices:
            person = spec(index)
            channel = person.first_channel
            recipient = {
                "id": index,
                "to": person.address(channel),
                "name": person.name,
                "locale": person.locale,
                "timezone": person.timezone,
                "secret": "naive-webhook-secret",
                "link_secret": "naive-link-secret",
            }
            naive.app.send_task(
                naive.TASK, args=naive.task_args(incident, update, channel, recipient)
            )
        while sandbox.recorded() < len(indices):
            time.sleep(0.05)
        finished = time.time()
        memory = pool.peak_rss_mb()
    finally:
        pool.stop()
    run = {"accepted": accepted, "finished": finished, "peak_rss_mb": memory}
    note = f"sample of {len(indices)}; totals x{args.n / len(indices):.0f}"
    return measured("naive", sandbox, run, len(indices), scratch, note, scale=args.n / len(indices))


def run_ours(
    args: argparse.Namespace,
    sandbox: SandboxProcess,
    database: str,
    broker: str,
    scratch: Path,
    name: str,
    expected: int,
    settings: dict[str, Any],
    affects: dict[str, list[str]] | None = None,
) -> Result:
    """Our dispatcher on `database`'s subscribers (with further Settings fields, and the
    incident's scope): embedded, or `--workers` Celery workers."""
    sandbox.clear()
    config = ours.OursConfig(
        database_url=database,
        sandbox_url=sandbox.url,
        broker_url=broker if args.workers else "embedded",
        send_concurrency=args.concurrency,
        extra=settings,
        affects=affects or {},
    )
    if args.workers:
        run = ours.with_workers(config, args.workers, expected, ROOT, scratch / name)
    else:
        run = alternatives.run_in_child(ours.embedded, config)
    delivered = sum(run["statuses"].values())
    note = " ".join(f"{k}={v}" for k, v in sorted(run["statuses"].items()))
    result = measured(name, sandbox, run, delivered, scratch, note)
    print(f"{name}: {result.per_s:,.0f}/s ({note})", flush=True)
    return result


def prepare_database(url: str | None, scratch: Path, name: str = "bench") -> str:
    """A fresh schema: a new SQLite file, or a PostgreSQL database whose name says bench."""
    from dispatcher.store import Base, make_engine

    if url is None:
        return f"sqlite:///{scratch / (name + '.sqlite3')}"
    if "bench" not in url.rsplit("/", 1)[-1]:
        raise SystemExit("--database: use a database whose name contains 'bench' (it is wiped)")
    engine = make_engine(url)
    Base.metadata.drop_all(engine)
    engine.dispose()
    return url


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=100_000, help="subscribers")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="sandbox delay/request")
    parser.add_argument("--workers", type=int, default=0, help="0: embedded; K: Celery workers")
    parser.add_argument("--broker", default=None, help=f"broker for --workers ({DEFAULT_REDIS})")
    parser.add_argument("--database", default=None, help="SQLAlchemy URL (default: SQLite)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight/process")
    parser.add_argument("--naive-sample", type=int, default=5000, help="naive: at most this many")
    parser.add_argument("--skip", default="", help=f"comma-separated: {', '.join(SKIPPABLE)}")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--plot", type=Path, default=None, help="deliveries-over-time PNG")
    parser.add_argument("--set", action="append", default=[], help="a Settings field: name=JSON")
    parser.add_argument(
        "--scope",
        type=int,
        default=None,
        metavar="P",
        help="also run an incident scoped to P%% of the subscribers (by region), on its own copy",
    )
    args = parser.parse_args(argv)
    if args.scope is not None and not 1 <= args.scope <= 100:
        parser.error("--scope takes a percentage from 1 to 100")
    skip = {name for name in args.skip.split(",") if name}
    if skip - set(SKIPPABLE):
        parser.error(f"--skip takes {', '.join(SKIPPABLE)}")
    broker = args.broker or DEFAULT_REDIS
    extra = {name: json.loads(value) for name, _, value in (s.partition("=") for s in args.set)}

    from dispatcher.store import Store

    results: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="outage-bench-") as tmp:
        scratch = Path(tmp)
        database = prepare_database(args.database, scratch)
        if args.workers and broker == DEFAULT_REDIS:
            import redis

            redis.Redis.from_url(broker).flushdb()
        regions = args.scope is not None
        started = time.monotonic()
        store = Store(database)
        populate(store, args.n, regions=regions)
        store.close()
        print(f"{args.n:,} subscribers written in {time.monotonic() - started:.1f}s", flush=True)
        sandbox = SandboxProcess(args.latency_ms, ROOT)
        try:
            expected = args.n + 1  # and the public post
            results["ours"] = run_ours(
                args, sandbox, database, broker, scratch, "ours", expected, extra
            )
            if regions:
                # The same people in a database of their own: the first run's rows would weigh
                # on this one's pacing queries, which an incident of its own never sees.
                scoped = prepare_database(args.database, scratch, "scoped")
                store = Store(scoped)
                populate(store, args.n, regions=True)
                store.close()
                results["ours-scoped"] = run_ours(
                    args,
                    sandbox,
                    scoped,
                    broker,
                    scratch,
                    "ours-scoped",
                    in_scope(args.n, args.scope),  # private: no public post
                    extra,
                    scope(args.scope),
                )
            concurrency = args.concurrency * max(1, args.workers)
            texts = sample_texts(sandbox.url)
            if "ceiling" not in skip:
                sandbox.clear()
                run = alternatives.run_in_child(
                    alternatives.ceiling, sandbox.url, args.n, concurrency, texts
                )
                note = f"{concurrency} in flight" + (
                    f", {run['failures']} failed" if run["failures"] else ""
                )
                results["ceiling"] = measured("ceiling", sandbox, run, expected, scratch, note)
                print(f"ceiling: {results['ceiling'].per_s:,.0f}/s", flush=True)
            if "apprise" not in skip:
                # Ours again on exactly Apprise's audience: the webhook subscribers alone.
                database = prepare_database(args.database, scratch, "webhooks")
                store = Store(database)
                populate(store, args.n, first_channel="webhook")
                store.close()
                results["ours-webhooks"] = run_ours(
                    args,
                    sandbox,
                    database,
                    broker,
                    scratch,
                    "ours-webhooks",
                    channel_counts(args.n)["webhook"],
                    {**extra, "broadcast": []},  # no public post: Apprise makes none
                )
                sandbox.clear()
                run = alternatives.run_in_child(
                    alternatives.apprise_run, sandbox.url, args.n, concurrency, texts["webhook"]
                )
                note = f"webhooks only; {run['setup_s']:.1f}s adding URLs" + (
                    "; some failed" if run["failures"] else ""
                )
                results["apprise"] = measured(
                    "apprise", sandbox, run, run["deliveries"], scratch, note
                )
                print(f"apprise: {results['apprise'].per_s:,.0f}/s", flush=True)
            if "naive" not in skip:
                results["naive"] = run_naive(args, sandbox, broker, scratch)
                print(f"naive: {results['naive'].per_s:,.0f}/s", flush=True)
            sandbox_rss = sandbox.peak_rss_mb()
        finally:
            sandbox.close()
    figures = report(args, results, sandbox_rss, extra)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if args.plot:
        plot(args, results, args.plot)
    return figures


def report(
    args: argparse.Namespace,
    results: dict[str, Result],
    sandbox_rss: float,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Print the table and return the JSON figures (the required keys at the top level)."""
    mode = "embedded" if not args.workers else f"{args.workers} workers on {args.broker or 'redis'}"
    ours_result = results["ours"]

    def mine(name: str) -> Result:
        """Ours on the audience `name` was given: Apprise had the webhook subscribers alone."""
        return results.get("ours-webhooks", ours_result) if name == "apprise" else ours_result

    print()
    print(
        f"fan-out of one critical incident to {args.n:,} subscribers "
        f"({channel_counts(args.n)}) + 1 public post; sandbox latency {args.latency_ms:g} ms; "
        f"{mode}; {args.concurrency} requests in flight per process"
    )
    print(
        "rate limits lifted for the benchmark (settings.rate_limits: sms and email 1,000,000/s;"
        " defaults are sms 30/s, email 1,000/s)" + (f"; settings {extra}" if extra else "")
    )
    header = (
        f"{'design':<14}{'deliveries':>11}{'per s':>9}{'first s':>9}{'p50 s':>8}{'p99 s':>8}"
        f"{'last s':>9}{'requests':>10}{'peak MB':>9}  ratio  note"
    )
    print(header)
    print("-" * len(header))
    for name, result in results.items():
        ratio = mine(name).per_s / result.per_s if result.per_s else float("nan")
        peak = max(result.peak_rss_mb.values(), default=0.0)
        print(
            f"{name:<14}{result.deliveries:>11,}{result.per_s:>9,.0f}"
            f"{result.offsets[0] if result.offsets else float('nan'):>9.3f}"
            f"{result.quantile(0.5):>8.2f}{result.quantile(0.99):>8.2f}{result.wall_s:>9.2f}"
            f"{result.requests:>10,}{peak:>9.0f}  "
            f"{'' if name.startswith('ours') else f'{ratio:5.1f}x'}  {result.note}"
        )
    print(
        "(ratio: ours per s / theirs per s, Apprise's against ours-webhooks, the same audience;"
        f" the sandbox process peaked at {sandbox_rss:.0f} MB)"
    )
    scoped = scoped_figures(args, results)
    if scoped:
        print(
            f"scoped to {args.scope}% ({scoped['deliveries']:,} subscribers): last delivery "
            f"{scoped['last_delivery_s']:.2f} s against {scoped['unscoped_last_delivery_s']:.2f} s"
            f" unscoped, {scoped['shorter']:.1f}x shorter; first delivery "
            f"{scoped['first_delivery_s']:.3f} s"
        )

    def rate(name: str) -> float | None:
        return round(results[name].per_s, 1) if name in results else None

    return {
        "n": args.n,
        "latency_ms": args.latency_ms,
        "workers": args.workers,
        "broker": (args.broker or DEFAULT_REDIS) if args.workers else "embedded",
        "deliveries_per_s": rate("ours"),
        "first_delivery_s": ours_result.row()["first_delivery_s"],
        "last_delivery_s": ours_result.row()["last_delivery_s"],
        "p50_delivery_s": ours_result.row()["p50_s"],
        "p99_delivery_s": ours_result.row()["p99_s"],
        "naive_deliveries_per_s": rate("naive"),
        "apprise_deliveries_per_s": rate("apprise"),
        "ceiling_deliveries_per_s": rate("ceiling"),
        "peak_rss_mb": ours_result.row()["peak_rss_mb"],
        "provider_requests": ours_result.requests,
        "ratios": {
            f"{mine(name).name.replace('-', '_')}_to_{name}": round(mine(name).per_s / r.per_s, 2)
            for name, r in results.items()
            if not name.startswith("ours") and r.per_s
        },
        "designs": {name: r.row() for name, r in results.items()},
        "scope": scoped,
        "sandbox_peak_rss_mb": round(sandbox_rss, 1),
        "settings": extra,
    }


def scoped_figures(args: argparse.Namespace, results: dict[str, Result]) -> dict[str, Any] | None:
    """The scoped run against the unscoped one: time to the last delivery, and the first."""
    scoped = results.get("ours-scoped")
    if scoped is None:
        return None
    unscoped = results["ours"]
    return {
        "percent": args.scope,
        "deliveries": scoped.deliveries,
        "first_delivery_s": scoped.row()["first_delivery_s"],
        "last_delivery_s": round(scoped.wall_s, 3),
        "unscoped_last_delivery_s": round(unscoped.wall_s, 3),
        "shorter": round(unscoped.wall_s / scoped.wall_s, 2) if scoped.wall_s else None,
    }


def plot(args: argparse.Namespace, results: dict[str, Result], path: Path) -> None:
    """Deliveries accepted by the provider over time. The naive design ran on a sample: its
    curve is stretched to the whole audience at the rate it showed (dashed); Apprise and
    ours-webhooks cover only the webhook subscribers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5))
    for name, result in results.items():
        if not result.offsets:
            continue
        scale = result.scale
        label = f"{name} ({result.per_s:,.0f}/s)"
        if scale > 1:
            label += f", extrapolated from {len(result.offsets):,}"
        elif name in ("apprise", "ours-webhooks"):
            label += ", webhooks only"
        axes.plot(
            [offset * scale for offset in result.offsets],
            [(i + 1) * scale for i in range(len(result.offsets))],
            label=label,
            linestyle="--" if scale > 1 else "-",
        )
    axes.set_xlabel("seconds since the incident was accepted")
    axes.set_ylabel("deliveries accepted by the provider")
    mode = "embedded" if not args.workers else f"{args.workers} workers"
    axes.set_title(f"{args.n:,} subscribers, {args.latency_ms:g} ms provider latency, {mode}")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
