"""`outage maintenance …`: planned work, announced ahead, at its start and at its end."""

from __future__ import annotations

from typing import Annotated

import typer

from dispatcher.cli.common import JsonOption, console, open_pipeline, print_json, user_errors
from dispatcher.durations import DurationError, parse_moment
from dispatcher.incidents import lifecycle
from dispatcher.models import IncidentIn, Severity

app = typer.Typer(help="Schedule planned maintenance.", no_args_is_help=True)


@app.command("schedule")
@user_errors
def schedule(
    title: Annotated[str, typer.Option(help="What will be done, in the customers' words.")],
    start: Annotated[str, typer.Option(help="When it starts: 2026-11-24T02:00Z, or 3d from now.")],
    end: Annotated[str, typer.Option(help="When it ends: a time, or a duration from now.")],
    component: Annotated[list[str], typer.Option(help="Affected component; repeat for more.")],
    message: Annotated[str | None, typer.Option(help="What customers will notice.")] = None,
    severity: Annotated[
        Severity, typer.Option(help="How much it disrupts: decides who is told.")
    ] = Severity.MINOR,
    as_json: JsonOption = False,
) -> None:
    """Announce maintenance now; reminders before it (OUTAGE_MAINTENANCE_NOTICES_S), and the
    notices at its start and end, are sent by the worker's sweep."""
    try:
        starts_at, ends_at = parse_moment(start), parse_moment(end)
    except DurationError as exc:
        raise DurationError(f"--start/--end: {exc}") from None
    data = IncidentIn(title=title, severity=severity, components=component, message=message)
    with open_pipeline() as pipeline:
        posted = lifecycle.schedule_maintenance(pipeline.store, data, starts_at, ends_at)
        pipeline.announce(posted.update_id, wait_s=0)
    if as_json:
        print_json({"incident_id": posted.incident_id, "update_id": posted.update_id})
        return
    console.print(
        f"maintenance [bold]{posted.incident_id}[/] scheduled "
        f"{starts_at:%Y-%m-%d %H:%M} to {ends_at:%Y-%m-%d %H:%M} UTC; subscribers told"
    )
