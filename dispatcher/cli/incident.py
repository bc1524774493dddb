"""`outage incident …`: open, update, resolve and inspect incidents."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any

import typer
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
from dispatcher.cli.progress import announce, follow_progress, print_summary
from dispatcher.durations import DurationError, parse_duration, parse_moment
from dispatcher.incidents import lifecycle, reports
from dispatcher.incidents.lifecycle import Extras, IncidentError
from dispatcher.models import ApproveIn, IncidentIn, IncidentState, ReopenIn, Severity, UpdateIn
from dispatcher.policy.scope import ScopeError, describe, scope_of
from dispatcher.store import Incident, utcnow

app = typer.Typer(help="Open, update, resolve and inspect incidents.", no_args_is_help=True)


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


def _moments(next_update: str | None, eta: str | None) -> dict[str, datetime | None]:
    """--next-update and --eta as the moments the input models check (both still to come); a
    value that is neither a duration nor a time names its option."""
    try:
        promise = utcnow() + parse_duration(next_update) if next_update else None
    except DurationError as exc:
        raise DurationError(f"--next-update: {exc}") from None
    try:
        estimate = parse_moment(eta) if eta else None
    except DurationError as exc:
        raise DurationError(f"--eta: {exc}") from None
    return {"next_update_at": promise, "eta": estimate}


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
        internal_note=internal_note,
        **_moments(next_update, eta),
        affects=scope_of(affects or [], "--affects"),
        public=public,
        notes=audience.notes(note_for),
    )
    with open_pipeline() as pipeline:
        if dry_run:
            audience.dry_run(pipeline, lambda session: lifecycle.create(session, data), as_json)
            return
        with pipeline.store.session() as session:
            posted = lifecycle.create(session, data)
        announce(pipeline, posted, wait, as_json)


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
    data = UpdateIn(
        state=state, message=message, internal_note=internal_note, **_moments(next_update, eta)
    )
    extras = replace(
        Extras.of(data),
        scope={} if everyone else (scope_of(affects, "--affects") if affects else None),
        public=public,
        notes=audience.notes(note_for),
    )
    with open_pipeline() as pipeline:
        if dry_run:
            audience.dry_run(
                pipeline,
                lambda session: lifecycle.update_in(
                    session, incident_id, data.state, data.message, extras
                ),
                as_json,
            )
            return
        posted = lifecycle.post_update(
            pipeline.store, incident_id, data.state, data.message, extras
        )
        announce(pipeline, posted, wait, as_json)


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
    OUTAGE_FEEDBACK_URL, and a credit note when given: to subscribers, never the public post)."""
    data = UpdateIn(
        state=IncidentState.RESOLVED,
        message=message,
        credit_note=credit_note,
        internal_note=internal_note,
    )
    with open_pipeline() as pipeline:
        posted = lifecycle.resolve(pipeline.store, incident_id, data.message, Extras.of(data))
        announce(pipeline, posted, wait, as_json)


@app.command("reopen")
@user_errors
def incident_reopen(
    incident_id: Annotated[int, typer.Argument(metavar="ID")],
    message: Annotated[str, typer.Option(help="What broke again, in the customers' words.")],
    next_update: NextUpdateOption = None,
    eta: EtaOption = None,
    internal_note: NoteOption = None,
    as_json: JsonOption = False,
    wait: WaitOption = 15.0,
) -> None:
    """Reopen a resolved incident (investigating again): those who heard it was resolved, and
    the public post, are told it is not; nobody else is paged."""
    data = ReopenIn(message=message, internal_note=internal_note, **_moments(next_update, eta))
    with open_pipeline() as pipeline:
        announce(
            pipeline, lifecycle.reopen_incident(pipeline.store, incident_id, data), wait, as_json
        )


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
        announce(pipeline, lifecycle.postmortem(pipeline.store, incident_id, url), wait, as_json)


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
    data = ApproveIn(title=title, message=message)
    with open_pipeline() as pipeline:
        posted = lifecycle.approve(
            pipeline.store, incident_id, title=data.title, message=data.message
        )
        announce(pipeline, posted, wait, as_json)


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
    """Show an incident, its updates, how its deliveries stand per channel and what waits.
    --follow ends by itself once nothing more is due soon (what waits longer is listed)."""
    with open_pipeline() as pipeline:
        found, updates = reports.incident(pipeline.store, incident_id)
        if follow and as_json:
            follow_progress(pipeline, incident_id, show=False)
        summary = reports.delivery_summary(pipeline.store, incident_id)
        if as_json:
            held = reports.waiting(pipeline.store, incident_id)
            print_json(
                {
                    **_incident_dict(found),
                    "updates": [
                        {
                            "id": u.id,
                            "state": u.state,
                            "message": u.message,
                            "credit_note": u.credit_note,
                            "at": u.created_at,
                        }
                        for u in updates
                    ],
                    "deliveries": {channel: dict(counts) for channel, counts in summary.items()},
                    "waiting": [item.as_dict() for item in held],
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
            credit = f"\n(subscribers only) {u.credit_note}" if u.credit_note else ""
            timeline.add_row(
                str(u.id), timestamp(u.created_at), u.state, (u.message or "") + credit
            )
        console.print(timeline)
        stopped = follow_progress(pipeline, incident_id) if follow else None
        if stopped:
            console.print(f"following ended: {stopped}", highlight=False, soft_wrap=True)
        print_summary(pipeline, incident_id)
        waiting_report(pipeline, incident_id)
