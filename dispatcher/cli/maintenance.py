"""`outage maintenance …`: planned work, announced ahead, at its start and at its end; moved or
called off, told once to those who heard of it (dispatcher/incidents/maintenance.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from dispatcher.cli.common import (
    JsonOption,
    WaitOption,
    console,
    open_pipeline,
    print_json,
    timestamp,
    user_errors,
)
from dispatcher.cli.progress import announce
from dispatcher.durations import DurationError, parse_moment
from dispatcher.incidents import maintenance
from dispatcher.models import CancelIn, IncidentState, MaintenanceIn, Severity, WindowIn
from dispatcher.store import Incident, utcnow

app = typer.Typer(
    help="Schedule, move, call off and list planned maintenance.", no_args_is_help=True
)

StartOption = Annotated[
    str, typer.Option(help="When it starts: 2026-11-24T02:00Z, or a duration from now (3d).")
]
EndOption = Annotated[
    str, typer.Option(help="When it ends: a time, or a duration from now (3d2h).")
]


def _window(start: str, end: str) -> dict[str, datetime]:
    """--start and --end as moments; a value that is neither names its option."""
    moments: dict[str, datetime] = {}
    for field, option, text in (("starts_at", "--start", start), ("ends_at", "--end", end)):
        try:
            moments[field] = parse_moment(text)
        except DurationError as exc:
            raise DurationError(f"{option}: {exc}") from None
    return moments


@app.command("schedule")
@user_errors
def schedule(
    title: Annotated[str, typer.Option(help="What will be done, in the customers' words.")],
    start: StartOption,
    end: EndOption,
    component: Annotated[list[str], typer.Option(help="Affected component; repeat for more.")],
    message: Annotated[str | None, typer.Option(help="What customers will notice.")] = None,
    severity: Annotated[
        Severity, typer.Option(help="How much it disrupts: decides who is told.")
    ] = Severity.MINOR,
    as_json: JsonOption = False,
    wait: WaitOption = 15.0,
) -> None:
    """Announce maintenance now, with its start and end; reminders before it
    (OUTAGE_MAINTENANCE_NOTICES_S), and the notices at its start and end, are sent by the
    worker's sweep."""
    data = MaintenanceIn(
        title=title,
        severity=severity,
        components=component,
        message=message,
        **_window(start, end),
    )
    with open_pipeline() as pipeline:
        posted = maintenance.schedule(pipeline.store, data)
        announce(
            pipeline,
            posted,
            wait,
            as_json,
            f"maintenance [bold]{posted.incident_id}[/] scheduled for "
            f"{_span(data.starts_at, data.ends_at)} (update {posted.update_id} announces it)",
        )


@app.command("reschedule")
@user_errors
def reschedule(
    maintenance_id: Annotated[int, typer.Argument(metavar="ID")],
    start: StartOption,
    end: EndOption,
    message: Annotated[
        str | None, typer.Option(help="Why, or what changes (default: a sentence saying so).")
    ] = None,
    as_json: JsonOption = False,
    wait: WaitOption = 15.0,
) -> None:
    """Move a scheduled maintenance (or give a running one a later end). Those who were told
    of it hear the new time once; the reminders and notices follow the new window."""
    data = WindowIn(message=message, **_window(start, end))
    with open_pipeline() as pipeline:
        posted = maintenance.reschedule(pipeline.store, maintenance_id, data)
        announce(
            pipeline,
            posted,
            wait,
            as_json,
            f"maintenance [bold]{maintenance_id}[/] moved to {_span(data.starts_at, data.ends_at)}"
            f" (update {posted.update_id} tells those who were told of it)",
        )


@app.command("cancel")
@user_errors
def cancel(
    maintenance_id: Annotated[int, typer.Argument(metavar="ID")],
    message: Annotated[str | None, typer.Option(help="Why, or what happens instead.")] = None,
    as_json: JsonOption = False,
    wait: WaitOption = 15.0,
) -> None:
    """Call off a maintenance before it starts. Those who were told of it hear it is off,
    once; announcements still waiting to go are withdrawn."""
    data = CancelIn(message=message)
    with open_pipeline() as pipeline:
        posted = maintenance.cancel(pipeline.store, maintenance_id, data.message)
        announce(
            pipeline,
            posted,
            wait,
            as_json,
            f"maintenance [bold]{maintenance_id}[/] cancelled (update {posted.update_id} tells "
            "those who were told of it)",
        )


@app.command("list")
@user_errors
def maintenance_list(
    everything: Annotated[
        bool, typer.Option("--all", help="Completed and cancelled maintenance too.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Planned maintenance, soonest first: scheduled and running (--all: every one)."""
    with open_pipeline() as pipeline:
        found = maintenance.listed(pipeline.store, everything=everything)
    if as_json:
        print_json([_maintenance_dict(item) for item in found])
        return
    table = Table("id", "title", "window", "state", "components")
    for item in found:
        table.add_row(
            str(item.id),
            item.title,
            _span(item.started_at, item.ends_at),
            _state(item),
            ", ".join(item.components),
        )
    console.print(table)


def _state(item: Incident) -> str:
    """scheduled, in progress, completed or cancelled."""
    if item.state is IncidentState.SCHEDULED:
        return "in progress" if item.started_at <= utcnow() else "scheduled"
    return "cancelled" if item.state is IncidentState.CANCELLED else "completed"


def _maintenance_dict(item: Incident) -> dict[str, object]:
    return {
        "id": item.id,
        "title": item.title,
        "severity": item.severity,
        "state": _state(item),
        "components": item.components,
        "starts_at": item.started_at,
        "ends_at": item.ends_at,
    }


def _span(start: datetime, end: datetime | None) -> str:
    """ "2026-12-04 02:00-03:00 UTC", or with both dates when it spans midnight."""
    if end is not None and end.date() == start.date():
        return f"{start:%Y-%m-%d %H:%M}-{end:%H:%M} UTC"
    return f"{start:%Y-%m-%d %H:%M} UTC to {end:%Y-%m-%d %H:%M} UTC" if end else timestamp(start)
