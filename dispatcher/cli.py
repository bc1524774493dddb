"""The `outage` command: operators open and follow incidents and manage subscribers from here.

Every command turns bad input into one red line naming the field and exit code 2; a stack trace
is a bug. Commands that post an update run the fan-out in-process on the embedded default, and
only enqueue it when a broker is configured.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from dispatcher import incidents, reports, subscribers
from dispatcher.incidents import IncidentError, Posted
from dispatcher.models import DeliveryStatus, IncidentIn, IncidentState, Severity, SubscriberIn
from dispatcher.pipeline import Pipeline
from dispatcher.registry import UnknownChannel
from dispatcher.render import TemplateMissing
from dispatcher.settings import Settings, get_settings
from dispatcher.store import Incident, Subscriber

app = typer.Typer(
    help="Tell customers, on their chosen channel, that a service is down and when it is back.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
incident_app = typer.Typer(
    help="Open, update, resolve and inspect incidents.", no_args_is_help=True
)
subscriber_app = typer.Typer(help="Add, import, list and remove subscribers.", no_args_is_help=True)
template_app = typer.Typer(help="Preview the message templates.", no_args_is_help=True)
delivery_app = typer.Typer(help="Inspect individual deliveries.", no_args_is_help=True)
app.add_typer(incident_app, name="incident")
app.add_typer(subscriber_app, name="subscriber")
app.add_typer(template_app, name="template")
app.add_typer(delivery_app, name="delivery")

console = Console()
errors = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
WaitOption = Annotated[
    float,
    typer.Option(help="Embedded mode: seconds to wait for retries before returning."),
]


def fail(message: str) -> NoReturn:
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(2)


def user_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn the errors a user can cause into one clear line and exit code 2."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except ValidationError as exc:
            fail(subscribers.describe(exc))
        except (IncidentError, subscribers.SubscriberError, UnknownChannel, TemplateMissing) as exc:
            fail(str(exc))
        except OSError as exc:
            fail(f"{exc.strerror or exc}: {getattr(exc, 'filename', '') or ''}".rstrip(": "))

    return wrapper


def settings() -> Settings:
    try:
        return get_settings()
    except ValidationError as exc:
        fail(f"configuration: {subscribers.describe(exc)}")


@contextmanager
def open_pipeline(config: Settings | None = None) -> Iterator[Pipeline]:
    from dispatcher.worker import connect  # Celery is only imported by commands that need it

    pipeline = connect(config or settings())
    try:
        yield pipeline
    finally:
        pipeline.close()


def print_json(data: Any) -> None:
    console.print_json(json.dumps(data, default=str))


# ---------------------------------------------------------------------------------- incidents


def _announce(pipeline: Pipeline, posted: Posted, wait: float, as_json: bool) -> None:
    pipeline.queue.fan_out(posted.update_id)
    pipeline.drain(wait_s=wait)
    if as_json:
        print_json({"incident_id": posted.incident_id, "update_id": posted.update_id})
        return
    console.print(f"incident [bold]{posted.incident_id}[/] update {posted.update_id} accepted")
    if pipeline.settings.embedded:
        _print_summary(pipeline, posted.incident_id)
    else:
        console.print("fan-out queued for the workers")


@incident_app.command("open")
@user_errors
def incident_open(
    title: Annotated[str, typer.Option(help="What is broken, in the customers' words.")],
    severity: Annotated[Severity, typer.Option(help="minor, major or critical.")],
    component: Annotated[list[str], typer.Option(help="Affected component; repeat for more.")],
    message: Annotated[str | None, typer.Option(help="What customers notice.")] = None,
    as_json: JsonOption = False,
    wait: WaitOption = 15.0,
) -> None:
    """Open an incident (state: investigating) and notify everyone it concerns."""
    data = IncidentIn(title=title, severity=severity, components=component, message=message)
    with open_pipeline() as pipeline:
        _announce(pipeline, incidents.open_incident(pipeline.store, data), wait, as_json)


@incident_app.command("update")
@user_errors
def incident_update(
    incident_id: Annotated[int, typer.Argument(metavar="ID")],
    state: Annotated[IncidentState, typer.Option(help="investigating, identified or monitoring.")],
    message: Annotated[str, typer.Option(help="What changed, what happens next.")],
    as_json: JsonOption = False,
    wait: WaitOption = 15.0,
) -> None:
    """Post an update on an open incident."""
    with open_pipeline() as pipeline:
        posted = incidents.post_update(pipeline.store, incident_id, state, message)
        _announce(pipeline, posted, wait, as_json)


@incident_app.command("resolve")
@user_errors
def incident_resolve(
    incident_id: Annotated[int, typer.Argument(metavar="ID")],
    message: Annotated[str | None, typer.Option(help="What happened, in a sentence.")] = None,
    as_json: JsonOption = False,
    wait: WaitOption = 15.0,
) -> None:
    """Resolve an incident and tell everyone who heard of it."""
    with open_pipeline() as pipeline:
        _announce(pipeline, incidents.resolve(pipeline.store, incident_id, message), wait, as_json)


@incident_app.command("list")
@user_errors
def incident_list(as_json: JsonOption = False) -> None:
    """List incidents, newest first."""
    with open_pipeline() as pipeline:
        found = reports.incidents(pipeline.store)
    if as_json:
        print_json([_incident_dict(item) for item in found])
        return
    table = Table("id", "title", "severity", "state", "components", "started")
    for item in found:
        table.add_row(
            str(item.id),
            item.title,
            item.severity,
            item.state,
            ", ".join(item.components),
            _time(item.started_at),
        )
    console.print(table)


def _incident_dict(item: Incident) -> dict[str, Any]:
    return {
        "id": item.id,
        "title": item.title,
        "severity": item.severity,
        "state": item.state,
        "components": item.components,
        "started_at": item.started_at,
        "resolved_at": item.resolved_at,
    }


@incident_app.command("show")
@user_errors
def incident_show(
    incident_id: Annotated[int, typer.Argument(metavar="ID")], as_json: JsonOption = False
) -> None:
    """Show an incident, its updates and how its deliveries stand per channel."""
    with open_pipeline() as pipeline:
        found, updates = reports.incident(pipeline.store, incident_id)
        summary = reports.delivery_summary(pipeline.store, incident_id)
        if as_json:
            print_json(
                {
                    **_incident_dict(found),
                    "updates": [
                        {"id": u.id, "state": u.state, "message": u.message, "at": u.created_at}
                        for u in updates
                    ],
                    "deliveries": {channel: dict(counts) for channel, counts in summary.items()},
                }
            )
            return
        console.print(
            f"[bold]#{found.id} {found.title}[/]  {found.severity} · {found.state} · "
            f"{', '.join(found.components)}"
        )
        timeline = Table("update", "at", "state", "message")
        for u in updates:
            timeline.add_row(str(u.id), _time(u.created_at), u.state, u.message or "")
        console.print(timeline)
        _print_summary(pipeline, incident_id)


SUMMARY_COLUMNS = (
    DeliveryStatus.QUEUED,
    DeliveryStatus.SENDING,
    DeliveryStatus.SENT,
    DeliveryStatus.DELIVERED,
    DeliveryStatus.FAILED,
    DeliveryStatus.FELL_BACK,
    DeliveryStatus.SUPPRESSED,
)


def _print_summary(pipeline: Pipeline, incident_id: int) -> None:
    summary = reports.delivery_summary(pipeline.store, incident_id)
    table = Table("channel", *(status.value.replace("_", " ") for status in SUMMARY_COLUMNS))
    for channel in sorted(summary):
        counts = summary[channel]
        table.add_row(channel, *(str(counts.get(status, 0)) for status in SUMMARY_COLUMNS))
    console.print(table)


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


# ---------------------------------------------------------------------------------- deliveries


@delivery_app.command("list")
@user_errors
def delivery_list(
    incident: Annotated[int, typer.Option(help="The incident whose deliveries to list.")],
    status: Annotated[DeliveryStatus | None, typer.Option(help="Only this status.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Every delivery of an incident: who, which channel, status, attempts, provider id, error."""
    with open_pipeline() as pipeline:
        reports.incident(pipeline.store, incident)  # a clear error for an unknown id
        lines = [
            line
            for line in reports.deliveries(pipeline.store, incident)
            if status is None or line.status == status
        ]
    if as_json:
        print_json([line.__dict__ for line in lines])
        return
    _print_deliveries(lines)


def _print_deliveries(lines: list[reports.DeliveryLine]) -> None:
    table = Table("id", "update", "subscriber", "channel", "status", "tries", "detail")
    for line in lines:
        detail = line.last_error or line.provider_id or ""
        if line.fallback_of:
            detail = f"fallback for {line.fallback_of}; {detail}"
        table.add_row(
            str(line.id),
            line.update_state,
            line.subscriber,
            line.channel,
            line.status.replace("_", " "),
            str(line.attempts),
            detail,
        )
    console.print(table)


# ---------------------------------------------------------------------------------- subscribers


def _subscriber_dict(subscriber: Subscriber, *, with_secret: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": subscriber.id,
        "name": subscriber.name,
        "email": subscriber.email,
        "phone": subscriber.phone,
        "webhook": subscriber.webhook_url,
        "channels": subscriber.channels,
        "components": subscriber.components,
        "min_severity": subscriber.min_severity,
        "locale": subscriber.locale,
        "confirmed": subscriber.confirmed,
    }
    if with_secret and subscriber.webhook_secret:
        data["webhook_secret"] = subscriber.webhook_secret
    return data


@subscriber_app.command("add")
@user_errors
def subscriber_add(
    name: Annotated[str, typer.Option(help="Who this is.")],
    channels: Annotated[
        str, typer.Option(help="Channels in order of preference: sms,email,webhook.")
    ],
    email: Annotated[str | None, typer.Option(help="Email address.")] = None,
    phone: Annotated[str | None, typer.Option(help="Phone number in +E.164 form.")] = None,
    webhook: Annotated[
        str | None, typer.Option(help="http(s) URL to POST signed updates to.")
    ] = None,
    component: Annotated[
        list[str] | None, typer.Option(help="Only hear of this component; repeat. Default: all.")
    ] = None,
    min_severity: Annotated[
        Severity, typer.Option(help="Hear nothing below this.")
    ] = Severity.MINOR,
    locale: Annotated[str, typer.Option(help="Language of the messages.")] = "en",
    confirmed: Annotated[bool, typer.Option(help="The addresses are known to be theirs.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Add a subscriber. A webhook subscriber gets a signing secret, printed once."""
    data = SubscriberIn(
        name=name,
        email=email,
        phone=phone,
        webhook=webhook,
        channels=channels.split(","),
        components=component or [],
        min_severity=min_severity,
        locale=locale,
        confirmed=confirmed,
    )
    with open_pipeline() as pipeline:
        subscriber = subscribers.add(pipeline.store, pipeline.registry, data)
    if as_json:
        print_json(_subscriber_dict(subscriber, with_secret=True))
        return
    console.print(f"subscriber [bold]{subscriber.id}[/] added: {subscriber.name}")
    if subscriber.webhook_secret:
        console.print(f"webhook signing secret (shown once): {subscriber.webhook_secret}")
    if not subscriber.confirmed:
        console.print("[yellow]not confirmed:[/] nothing is sent until the addresses are confirmed")


@subscriber_app.command("list")
@user_errors
def subscriber_list(as_json: JsonOption = False) -> None:
    """List subscribers with their channels and filters."""
    with open_pipeline() as pipeline:
        found = subscribers.list_all(pipeline.store)
    if as_json:
        print_json([_subscriber_dict(s) for s in found])
        return
    table = Table("id", "name", "channels", "addresses", "components", "min", "confirmed")
    for s in found:
        addresses = ", ".join(a for a in (s.phone, s.email, s.webhook_url) if a)
        table.add_row(
            str(s.id),
            s.name,
            " > ".join(s.channels),
            addresses,
            ", ".join(s.components) or "all",
            s.min_severity,
            "yes" if s.confirmed else "no",
        )
    console.print(table)


@subscriber_app.command("remove")
@user_errors
def subscriber_remove(subscriber_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Remove a subscriber and their addresses (delivery statistics stay, anonymous)."""
    with open_pipeline() as pipeline:
        subscribers.remove(pipeline.store, subscriber_id)
    console.print(f"subscriber {subscriber_id} removed")


@subscriber_app.command("import")
@user_errors
def subscriber_import(
    file: Annotated[Path, typer.Argument(help="CSV: name,email,phone,webhook,channels,...")],
) -> None:
    """Import subscribers from CSV: good rows are stored, bad rows reported by line number."""
    with open_pipeline() as pipeline:
        report = subscribers.import_csv(pipeline.store, pipeline.registry, file)
    console.print(f"imported {report.imported} subscribers")
    for line, problem in report.errors:
        errors.print(f"[red]line {line}:[/] {problem}", highlight=False)
    if report.errors:
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------- templates


@template_app.command("preview")
@user_errors
def template_preview(
    channel: Annotated[str, typer.Option(help="sms, email, social or webhook.")],
    state: Annotated[IncidentState, typer.Option(help="The incident state to render.")],
    locale: Annotated[str, typer.Option(help="Language.")] = "en",
    message: Annotated[str | None, typer.Option(help="Operator text to render with.")] = None,
) -> None:
    """Render a channel's template with sample data, with its length figures."""
    from dispatcher.preview import preview

    console.print(preview(settings(), channel, state, locale, message), highlight=False)


# ---------------------------------------------------------------------------------- processes


@app.command()
@user_errors
def demo(
    database: Annotated[Path, typer.Option(help="SQLite file, recreated.")] = Path(
        "outage-demo.sqlite3"
    ),
) -> None:
    """Seed subscribers, open, update and resolve an incident on the embedded default, and show
    what each subscriber received."""
    from dispatcher.demo import run_demo

    run_demo(console, database)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
) -> None:
    """Serve the HTTP API (webhooks, subscriber API, status page)."""
    import uvicorn

    settings()
    uvicorn.run("dispatcher.web.app:create_app", factory=True, host=host, port=port)


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(help="Worker processes (Celery).")] = 2,
    beat: Annotated[bool, typer.Option(help="Also run the periodic sweep (Celery beat).")] = False,
) -> None:
    """Run a worker: a Celery worker when a broker is set, else an embedded polling loop."""
    config = settings()
    if config.embedded:
        _embedded_worker(config)
        return
    from dispatcher.worker import app as celery_app

    argv = ["worker", "--loglevel=INFO", f"--concurrency={concurrency}"]
    celery_app.worker_main([*argv, "--beat"] if beat else argv)


def _embedded_worker(config: Settings) -> None:
    console.print("embedded worker: sending due deliveries from the database (Ctrl-C stops)")
    with open_pipeline(config) as pipeline:
        try:
            while True:
                pipeline.sweep(stale_s=0)
                pipeline.drain()
                time.sleep(1.0)
        except KeyboardInterrupt:
            console.print("stopped")


@app.command()
def sandbox(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8025,
    latency_ms: Annotated[float, typer.Option(help="Delay added to every provider request.")] = 0,
) -> None:
    """Run the local provider sandbox (Twilio, SendGrid, X shapes and a webhook receiver)."""
    from dispatcher.sandbox import Sandbox

    console.print(f"provider sandbox on http://{host}:{port} (messages: /sandbox/messages)")
    try:
        Sandbox(latency_ms=latency_ms).serve_forever(host, port)
    except KeyboardInterrupt:
        console.print("stopped")
