"""`outage delivery …`: every message to every recipient, as an operator inspects it."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from dispatcher import reports
from dispatcher.cli.common import JsonOption, console, open_pipeline, print_json, user_errors
from dispatcher.models import DeliveryStatus

app = typer.Typer(help="Inspect individual deliveries.", no_args_is_help=True)


@app.command("list")
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
