"""What an operator sees of a fan-out: the outcome of a command that posted an update, the
summary per channel, and `incident show --follow`.

On a terminal the summary is a table and following draws a bar per channel; off one (a pipe, a
log, a script) both are plain lines, one per channel, that no width can wrap. Following ends by
itself: when nothing is in flight, when what is left is not due soon (coalescing, quiet hours,
the cap: the waiting report says until when), or when nothing has moved for a while (nothing is
running to send it).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from dispatcher.cli.audience import print_reach
from dispatcher.cli.common import console, print_json, waiting_report
from dispatcher.delivery import reach
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents import reports
from dispatcher.incidents.lifecycle import Posted
from dispatcher.models import DeliveryStatus
from dispatcher.store import utcnow

FOLLOW_POLL_S = 0.5
SOON_S = 30.0  # a delivery due later than this is left to wait: following ends
STALL_S = 30.0  # nothing moved for this long (nothing is sending): following ends
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
    told = reach.counted(pipeline.store, pipeline.registry, posted)  # before the fan-out
    pipeline.announce(posted.update_id, wait_s=wait)
    if as_json:
        held = reports.waiting(pipeline.store, posted.incident_id)
        print_json(
            {
                "incident_id": posted.incident_id,
                "update_id": posted.update_id,
                "reach": told.as_dict(),
                "waiting": [item.as_dict() for item in held],
            }
        )
        return
    console.print(
        headline or f"incident [bold]{posted.incident_id}[/] update {posted.update_id} accepted",
        soft_wrap=True,
    )
    print_reach(told)
    if pipeline.settings.embedded:
        print_summary(pipeline, posted.incident_id)
    else:
        console.print("fan-out queued for the workers")
    waiting_report(pipeline, posted.incident_id)


def print_summary(pipeline: Pipeline, incident_id: int) -> None:
    """The incident's deliveries per channel and status: a table on a terminal, else a line per
    channel naming the statuses it has ("email: 2 sent, 1 queued")."""
    summary = reports.delivery_summary(pipeline.store, incident_id)
    if not console.is_terminal:
        for channel in sorted(summary):
            counts = summary[channel]
            parts = [
                f"{counts[status]} {status.value.replace('_', ' ')}"
                for status in SUMMARY_COLUMNS
                if counts.get(status)
            ]
            console.print(f"{channel}: {', '.join(parts)}", highlight=False, soft_wrap=True)
        return
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
) -> str | None:
    """Poll the database and redraw a progress bar per channel (done = no longer queued or being
    sent) until nothing is in flight, or nothing more is due soon, or nothing has moved for
    STALL_S; returns why it stopped early, if it did. Ctrl-C stops following, not the fan-out.
    Off a terminal nothing is drawn; the caller prints the summary."""
    columns = (
        TextColumn("{task.description:<8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
    )
    with Progress(*columns, console=console, disable=not (show and console.is_terminal)) as bars:
        tasks: dict[str, TaskID] = {}
        last: dict[str, Counter[str]] | None = None
        moved_at = utcnow()
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
                now = utcnow()
                flight = reports.in_flight(pipeline.store, incident_id)
                if not flight.any:
                    return None
                if not flight.due_before(now + timedelta(seconds=SOON_S)):
                    return f"nothing more is due in the next {SOON_S:g} s"
                if summary != last:
                    last, moved_at = summary, now
                elif now - moved_at >= timedelta(seconds=STALL_S):
                    return f"nothing has moved for {STALL_S:g} s"
                pause(poll_s)
        except KeyboardInterrupt:
            return "stopped following; the fan-out goes on"
