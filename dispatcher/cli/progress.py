"""What an operator sees of a fan-out: the outcome of a command that posted an update, the
summary per channel, and `incident show --follow`."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from dispatcher.cli.common import console, print_json, waiting_report
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents import reports
from dispatcher.incidents.lifecycle import Posted
from dispatcher.models import DeliveryStatus

FOLLOW_POLL_S = 0.5
_IN_FLIGHT = (DeliveryStatus.QUEUED, DeliveryStatus.SENDING)

SUMMARY_COLUMNS = (
    DeliveryStatus.QUEUED,
    DeliveryStatus.SENDING,
    DeliveryStatus.SENT,
    DeliveryStatus.DELIVERED,
    DeliveryStatus.FAILED,
    DeliveryStatus.FELL_BACK,
    DeliveryStatus.SUPPRESSED,
    DeliveryStatus.SUPERSEDED,
)


def announce(
    pipeline: Pipeline, posted: Posted, wait: float, as_json: bool, headline: str | None = None
) -> None:
    """Hand a committed update to the queue (sending it here on the embedded default), then say
    what became of it: the summary per channel, and what waits, until when, why, for whom."""
    pipeline.announce(posted.update_id, wait_s=wait)
    if as_json:
        held = reports.waiting(pipeline.store, posted.incident_id)
        print_json(
            {
                "incident_id": posted.incident_id,
                "update_id": posted.update_id,
                "waiting": [item.as_dict() for item in held],
            }
        )
        return
    console.print(
        headline or f"incident [bold]{posted.incident_id}[/] update {posted.update_id} accepted"
    )
    if pipeline.settings.embedded:
        print_summary(pipeline, posted.incident_id)
    else:
        console.print("fan-out queued for the workers")
    waiting_report(pipeline, posted.incident_id)


def print_summary(pipeline: Pipeline, incident_id: int) -> None:
    """The incident's deliveries per channel and status, as a table."""
    summary = reports.delivery_summary(pipeline.store, incident_id)
    table = Table("channel", *(status.value.replace("_", " ") for status in SUMMARY_COLUMNS))
    for channel in sorted(summary):
        counts = summary[channel]
        table.add_row(channel, *(str(counts.get(status, 0)) for status in SUMMARY_COLUMNS))
    console.print(table)


def _progress_text(counts: Counter[str]) -> str:
    """The four numbers an operator follows: waiting, handed over, confirmed, lost."""
    waiting = sum(counts.get(status, 0) for status in _IN_FLIGHT)
    failed = counts.get(DeliveryStatus.FAILED, 0)
    fell_back = counts.get(DeliveryStatus.FELL_BACK, 0)
    return (
        f"queued {waiting} · sent {counts.get(DeliveryStatus.SENT, 0)} · "
        f"delivered {counts.get(DeliveryStatus.DELIVERED, 0)} · failed {failed}"
        + (f" · fell back {fell_back}" if fell_back else "")
    )


def follow_progress(
    pipeline: Pipeline,
    incident_id: int,
    *,
    show: bool = True,
    poll_s: float = FOLLOW_POLL_S,
    pause: Callable[[float], None] = time.sleep,
) -> None:
    """Poll the database and redraw a progress bar per channel (done = no longer queued or being
    sent) until every update is fanned out and no delivery is in flight. Ctrl-C stops following,
    not the fan-out. Off a terminal nothing is drawn; the caller prints the final summary."""
    columns = (
        TextColumn("{task.description:<8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
    )
    with Progress(*columns, console=console, disable=not (show and console.is_terminal)) as bars:
        tasks: dict[str, TaskID] = {}
        try:
            while True:
                summary = reports.delivery_summary(pipeline.store, incident_id)
                for channel, counts in sorted(summary.items()):
                    total = sum(counts.values())
                    done = total - sum(counts.get(status, 0) for status in _IN_FLIGHT)
                    if channel not in tasks:
                        tasks[channel] = bars.add_task(channel, total=total, counts="")
                    bars.update(
                        tasks[channel], total=total, completed=done, counts=_progress_text(counts)
                    )
                _, updates = reports.incident(pipeline.store, incident_id)
                in_flight = any(counts.get(s, 0) for counts in summary.values() for s in _IN_FLIGHT)
                if not in_flight and all(u.fanned_out_at is not None for u in updates):
                    return
                pause(poll_s)
        except KeyboardInterrupt:
            console.print("stopped following; the fan-out goes on")
