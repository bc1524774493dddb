"""`outage incident …`: open, update, resolve and inspect incidents."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from dispatcher.cli import audience
from dispatcher.cli.audience import (
    AffectsOption,
    DryRunOption,
    NoteForOption,
    OneNoteCommand,
    PublicOption,
)
from dispatcher.cli.common import (
    JsonOption,
    WaitOption,
    console,
    open_pipeline,
    print_json,
    timestamp,
    user_errors,
    waiting_report,
)
from dispatcher.delivery import reach
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.durations import DurationError, parse_duration, parse_moment
from dispatcher.incidents import lifecycle, reports
from dispatcher.incidents.lifecycle import Extras, IncidentError, Posted
from dispatcher.models import DeliveryStatus, IncidentIn, IncidentState, Severity
from dispatcher.policy.scope import ScopeError, describe, scope_of
from dispatcher.store import Incident, utcnow

app = typer.Typer(help="Open, update, resolve and inspect incidents.", no_args_is_help=True)


def _announce(pipeline: Pipeline, posted: Posted, wait: float, as_json: bool) -> None:
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
    console.print(f"incident [bold]{posted.incident_id}[/] update {posted.update_id} accepted")
    audience.print_reach(told)
    if pipeline.settings.embedded:
        _print_summary(pipeline, posted.incident_id)
    else:
        console.print("fan-out queued for the workers")
    waiting_report(pipeline, posted.incident_id)


NextUpdateOption = Annotated[
    str | None,
    typer.Option(help="Promise the next update within this time (30m, 1h); the team is reminded."),
]
EtaOption = Annotated[
    str | None,
    typer.Option(help="Estimated resolution: a time (2026-11-24T02:00Z) or a duration (2h)."),
]
NoteOption = Annotated[
    str | None, typer.Option(help="A note for the internal audience; customers never see it.")
]


def _extras(next_update: str | None, eta: str | None, note: str | None) -> Extras:
    """The options every update takes, parsed; a bad value names its option."""
    try:
        promise = utcnow() + parse_duration(next_update) if next_update else None
    except DurationError as exc:
        raise DurationError(f"--next-update: {exc}") from None
    try:
        estimate = parse_moment(eta) if eta else None
    except DurationError as exc:
        raise DurationError(f"--eta: {exc}") from None
    return Extras(next_update_at=promise, eta=estimate, internal_note=note)


@app.command("open", cls=OneNoteCommand)
@user_errors
def incident_open(
    title: Annotated[str, typer.Option(help="What is broken, in the customers' words.")],
    severity: Annotated[Severity, typer.Option(help="minor, major or critical.")],
    component: Annotated[list[str], typer.Option(help="Affected component; repeat for more.")],
    message: Annotated[str | None, typer.Option(help="What customers notice.")] = None,
    next_update: NextUpdateOption = None,
    eta: EtaOption = None,
    internal_note: NoteOption = None,
    affects: AffectsOption = None,
    public: PublicOption = False,
    note_for: NoteForOption = None,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
    wait: WaitOption = 15.0,
) -> None:
    """Open an incident (state: investigating) and notify everyone it concerns."""
    data = IncidentIn(
        title=title,
        severity=severity,
        components=component,
        message=message,
        affects=scope_of(affects or [], "--affects"),
        public=public,
        notes=audience.notes(note_for),
    )
    extras = _extras(next_update, eta, internal_note)
    with open_pipeline() as pipeline:
        if dry_run:
            audience.dry_run(
                pipeline, lambda session: lifecycle.create(session, data, extras=extras), as_json
            )
            return
        with pipeline.store.session() as session:
            posted = lifecycle.create(session, data, extras=extras)
        _announce(pipeline, posted, wait, as_json)


@app.command("update", cls=OneNoteCommand)
@user_errors
def incident_update(
    incident_id: Annotated[int, typer.Argument(metavar="ID")],
    state: Annotated[IncidentState, typer.Option(help="investigating, identified or monitoring.")],
    message: Annotated[str, typer.Option(help="What changed, what happens next.")],
    next_update: NextUpdateOption = None,
    eta: EtaOption = None,
    internal_note: NoteOption = None,
    affects: AffectsOption = None,
    everyone: Annotated[
        bool,
        typer.Option("--everyone", help="Lift the scope: tell everyone the incident concerns."),
    ] = False,
    public: PublicOption = False,
    note_for: NoteForOption = None,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
    wait: WaitOption = 15.0,
) -> None:
    """Post an update on an open incident. A new --affects replaces the scope: whoever it adds
    is told the story so far; whoever was told before still hears, however it narrows."""
    if everyone and affects:
        raise ScopeError("--everyone: give it or --affects, not both")
    extras = replace(
        _extras(next_update, eta, internal_note),
        scope={} if everyone else (scope_of(affects, "--affects") if affects else None),
        public=public,
        notes=audience.notes(note_for),
    )
    with open_pipeline() as pipeline:
        if dry_run:
            audience.dry_run(
                pipeline,
                lambda session: lifecycle.update_in(session, incident_id, state, message, extras),
                as_json,
            )
            return
        posted = lifecycle.post_update(pipeline.store, incident_id, state, message, extras)
        _announce(pipeline, posted, wait, as_json)


@app.command("resolve")
@user_errors
def incident_resolve(
    incident_id: Annotated[int, typer.Argument(metavar="ID")],
    message: Annotated[str | None, typer.Option(help="What happened, in a sentence.")] = None,
    credit_note: Annotated[
        str | None, typer.Option(help="A service credit offered to those affected.")
    ] = None,
    internal_note: NoteOption = None,
    as_json: JsonOption = False,
    wait: WaitOption = 15.0,
) -> None:
    """Resolve an incident and tell everyone who heard of it (with the feedback survey link,
    OUTAGE_FEEDBACK_URL, and a credit note when given)."""
    extras = _extras(None, None, internal_note)
    with open_pipeline() as pipeline:
        text = lifecycle.with_follow_up(message, credit_note, pipeline.settings.feedback_url)
        posted = lifecycle.resolve(pipeline.store, incident_id, text, extras)
        _announce(pipeline, posted, wait, as_json)


@app.command("postmortem")
@user_errors
def incident_postmortem(
    incident_id: Annotated[int, typer.Argument(metavar="ID")],
    url: Annotated[str, typer.Option(help="Where the post-incident review is published.")],
    as_json: JsonOption = False,
    wait: WaitOption = 15.0,
) -> None:
    """Send the post-incident review to everyone who was told of the incident (once)."""
    if not url.startswith(("https://", "http://")):
        raise IncidentError("--url: the review's address must be an http(s) URL")
    with open_pipeline() as pipeline:
        _announce(pipeline, lifecycle.postmortem(pipeline.store, incident_id, url), wait, as_json)


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
        posted = lifecycle.approve(pipeline.store, incident_id, title=title, message=message)
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
        "scope": item.scope,
        "private": item.private,
        "started_at": item.started_at,
        "resolved_at": item.resolved_at,
    }


@app.command("show")
@user_errors
def incident_show(
    incident_id: Annotated[int, typer.Argument(metavar="ID")],
    as_json: JsonOption = False,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Show the fan-out's progress live until it is done (Ctrl-C)."
        ),
    ] = False,
) -> None:
    """Show an incident, its updates and how its deliveries stand per channel."""
    with open_pipeline() as pipeline:
        found, updates = reports.incident(pipeline.store, incident_id)
        if follow and as_json:
            follow_progress(pipeline, incident_id, show=False)
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
        if found.scope:
            shown = "private" if found.private else "public"
            console.print(f"affects {describe(found.scope)} ({shown})", highlight=False)
        timeline = Table("update", "at", "state", "message")
        for u in updates:
            timeline.add_row(str(u.id), timestamp(u.created_at), u.state, u.message or "")
        console.print(timeline)
        if follow:
            follow_progress(pipeline, incident_id)
        _print_summary(pipeline, incident_id)


FOLLOW_POLL_S = 0.5
_IN_FLIGHT = (DeliveryStatus.QUEUED, DeliveryStatus.SENDING)


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


def _print_summary(pipeline: Pipeline, incident_id: int) -> None:
    summary = reports.delivery_summary(pipeline.store, incident_id)
    table = Table("channel", *(status.value.replace("_", " ") for status in SUMMARY_COLUMNS))
    for channel in sorted(summary):
        counts = summary[channel]
        table.add_row(channel, *(str(counts.get(status, 0)) for status in SUMMARY_COLUMNS))
    console.print(table)
