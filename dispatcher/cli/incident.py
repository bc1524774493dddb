"""`outage incident …`: open, update, resolve and inspect incidents."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from dispatcher import incidents, reports
from dispatcher.cli.common import (
    JsonOption,
    WaitOption,
    console,
    open_pipeline,
    print_json,
    timestamp,
    user_errors,
)
from dispatcher.incidents import Posted
from dispatcher.models import DeliveryStatus, IncidentIn, IncidentState, Severity
from dispatcher.pipeline import Pipeline
from dispatcher.store import Incident

app = typer.Typer(help="Open, update, resolve and inspect incidents.", no_args_is_help=True)


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


@app.command("open")
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


@app.command("update")
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


@app.command("resolve")
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


@app.command("approve")
@user_errors
def incident_approve(
    incident_id: Annotated[int, typer.Argument(metavar="ID")],
    title: Annotated[str | None, typer.Option(help="Reword the title first.")] = None,
    message: Annotated[str | None, typer.Option(help="Reword the latest message first.")] = None,
    as_json: JsonOption = False,
    wait: WaitOption = 15.0,
) -> None:
    """Publish a draft a monitoring system opened: until then only the team was told."""
    with open_pipeline() as pipeline:
        posted = incidents.approve(pipeline.store, incident_id, title=title, message=message)
        _announce(pipeline, posted, wait, as_json)


@app.command("list")
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
            f"{item.state} (draft)" if item.draft else item.state,
            ", ".join(item.components),
            timestamp(item.started_at),
        )
    console.print(table)


def _incident_dict(item: Incident) -> dict[str, Any]:
    return {
        "id": item.id,
        "title": item.title,
        "severity": item.severity,
        "state": item.state,
        "components": item.components,
        "draft": item.draft,
        "source": item.source,
        "started_at": item.started_at,
        "resolved_at": item.resolved_at,
    }


@app.command("show")
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
            timeline.add_row(str(u.id), timestamp(u.created_at), u.state, u.message or "")
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
