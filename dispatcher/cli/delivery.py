"""`outage delivery …`: every message to every recipient, as an operator inspects and acts on it.

`list` shows deliveries, `stats` the figures that say whether delivery is healthy (per channel and
status, retries, fallbacks, possible duplicates, the backlog's age, receipts, breakers), and
`retry` puts failed deliveries back in the queue.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from dispatcher.cli.common import (
    JsonOption,
    WaitOption,
    console,
    fail,
    open_pipeline,
    print_json,
    timestamp,
    user_errors,
)
from dispatcher.delivery import operations
from dispatcher.incidents import reports
from dispatcher.models import DeliveryStatus

app = typer.Typer(
    help="Inspect deliveries, their figures, and retry failed ones.", no_args_is_help=True
)

IncidentOption = Annotated[
    int | None, typer.Option(help="Only this incident's deliveries.", show_default=False)
]


@app.command("list")
@user_errors
def delivery_list(
    incident: IncidentOption = None,
    status: Annotated[DeliveryStatus | None, typer.Option(help="Only this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many (newest first).")] = 200,
    as_json: JsonOption = False,
) -> None:
    """Deliveries: who, which channel, status, tries, provider id or error."""
    with open_pipeline() as pipeline:
        if incident is not None:
            reports.incident(pipeline.store, incident)  # a clear error for an unknown id
        lines = reports.deliveries(pipeline.store, incident, status, limit)
    if as_json:
        print_json([line.__dict__ for line in lines])
        return
    _print_deliveries(lines)


@app.command("retry")
@user_errors
def delivery_retry(
    delivery_id: Annotated[
        int | None, typer.Argument(metavar="ID", help="The failed delivery to send again.")
    ] = None,
    incident: IncidentOption = None,
    failed: Annotated[
        bool, typer.Option("--failed", help="With --incident: all its failed deliveries.")
    ] = False,
    wait: WaitOption = 15.0,
    as_json: JsonOption = False,
) -> None:
    """Send failed deliveries again: one by ID, or `--incident ID --failed`."""
    if delivery_id is not None and incident is not None:
        fail("ID, --incident: give a delivery ID or --incident, not both")
    if delivery_id is None and incident is None:
        fail("ID: give a delivery ID, or --incident ID --failed")
    if incident is not None and not failed:
        fail("--failed: retrying an incident's deliveries takes --failed (only failed ones are)")
    with open_pipeline() as pipeline:
        ids = operations.retry(pipeline.store, delivery_id=delivery_id, incident_id=incident)
        pipeline.enqueue(ids, wait_s=wait)
        lines = reports.deliveries(pipeline.store, incident) if incident is not None else []
    if as_json:
        print_json({"retried": ids})
        return
    if not ids:
        console.print(f"incident {incident} has no failed deliveries")
        return
    console.print(f"{len(ids)} deliveries queued again")
    retried = set(ids)
    _print_deliveries([line for line in lines if line.id in retried])


@app.command("stats")
@user_errors
def delivery_stats(incident: IncidentOption = None, as_json: JsonOption = False) -> None:
    """Counts per channel and status, retries, fallbacks, possible duplicates, the oldest
    queued delivery's age, those left in sending past their lease, receipts and the providers'
    circuit breakers."""
    with open_pipeline() as pipeline:
        figures = operations.stats(pipeline.store, incident)
    if as_json:
        print_json(figures.as_dict())
        return
    statuses = [status.value for status in DeliveryStatus]
    table = Table("channel", *(status.replace("_", " ") for status in statuses), "total")
    for channel, counts in sorted(figures.by_channel.items()):
        cells = [str(counts.get(status, 0)) for status in statuses]
        table.add_row(channel, *cells, str(sum(counts.values())))
    console.print(table)
    oldest = figures.oldest_queued_s
    console.print(
        f"deliveries {figures.total}; retried {figures.retried} ({figures.retries} extra sends); "
        f"provider requests {figures.provider_requests}; fallbacks {figures.fallbacks}\n"
        f"possibly sent twice: {figures.possibly_sent_twice} (taken back from a lost worker "
        f"{figures.lease_expiries}, sent again after a timeout or a provider error "
        f"{figures.ambiguous_retries})\n"
        f"queued {figures.queued}"
        + (f", the oldest for {oldest:.0f} s" if oldest is not None else "")
        + f"; sending {figures.sending}"
        + (
            f", {figures.sending_past_lease} of them left by a worker that is gone"
            if figures.sending_past_lease
            else ""
        )
    )
    if figures.receipts:
        receipts = ", ".join(f"{status} {count}" for status, count in figures.receipts.items())
        console.print(f"receipts: {receipts}")
    for key, circuit in sorted(figures.circuits.items()):
        console.print(
            f"circuit {key}: {circuit.state.replace('_', '-')} since {timestamp(circuit.since)} "
            f"({circuit.transitions} transitions)"
        )


def _print_deliveries(lines: list[reports.DeliveryLine]) -> None:
    table = Table("id", "update", "subscriber", "channel", "status", "tries", "detail")
    for line in lines:
        detail = line.last_error or line.provider_id or ""
        if line.fallback_of:
            detail = f"fallback for {line.fallback_of}; {detail}"
        if line.lease_expiries:
            detail = f"taken back from a lost worker (maybe sent twice); {detail}"
        if line.ambiguous_retries:
            detail = f"sent again after an unclear answer (maybe sent twice); {detail}"
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
