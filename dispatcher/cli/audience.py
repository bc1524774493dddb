"""What `outage incident open|update` take for audiences by impact: `--affects` (the scope),
`--public`, `--note-for` (a note for a segment), `--dry-run`, and how the counts of who is told
are printed (README "Telling only those affected")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from sqlalchemy.orm import Session
from typer.core import TyperCommand

from dispatcher.cli.common import console, print_json
from dispatcher.delivery import reach
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents.lifecycle import Posted
from dispatcher.models import SegmentNote
from dispatcher.policy.scope import ScopeError, scope_of
from dispatcher.subscribers import records

AffectsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--affects",
        metavar="KEY=VALUE",
        help="Tell only subscribers with this attribute (region=eu-west); repeat: OR within a "
        "key, AND across keys. Scoped incidents stay off the public page unless --public.",
    ),
]
PublicOption = Annotated[
    bool,
    typer.Option("--public", help="Show a scoped incident on the public page, feed and X too."),
]
NoteForOption = Annotated[
    tuple[str, str] | None,
    typer.Option(
        "--note-for",
        metavar="KEY=VALUE TEXT",
        help='A note only subscribers with this attribute see, e.g. plan=enterprise "Your '
        'account manager will call you." (several keys: plan=x,region=y; once per command).',
    ),
]
DryRunOption = Annotated[
    bool,
    typer.Option(
        "--dry-run", help="Count who would be told, on which channel, who is held; send nothing."
    ),
]


class OneNoteCommand(TyperCommand):
    """`--note-for` takes two values, which Typer cannot repeat: a second one would silently
    replace the first, so it is refused (notes for several segments: the incidents API)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # Typer's own Click context
        if args.count("--note-for") > 1:
            raise typer.BadParameter(
                "give it once (notes for several segments: the incidents API)",
                ctx=ctx,
                param_hint="'--note-for'",
            )
        return super().parse_args(ctx, args)


def notes(note_for: tuple[str, str] | None) -> list[SegmentNote]:
    """`--note-for plan=enterprise "text"` as a segment note; a bad one names the option."""
    if note_for is None:
        return []
    selector, text = note_for
    segment = scope_of(selector.split(","), "--note-for")
    try:
        return [SegmentNote(segment=segment, text=text)]
    except ValidationError as exc:
        raise ScopeError(f"--note-for: {records.describe(exc)}") from None


def print_reach(told: reach.Reach, *, dry_run: bool = False) -> None:
    """The headline ("told 312 of 10,000: region=eu-west"), then channels, scope, held."""
    console.print(("would be " if dry_run else "") + told.headline, highlight=False)
    for line in told.lines():
        console.print(f"  {line}", highlight=False)


def dry_run(pipeline: Pipeline, write: Callable[[Session], Posted], as_json: bool) -> None:
    """Count what `write` would do, write nothing, send nothing."""
    told = reach.preview(pipeline.store, pipeline.registry, write)
    if as_json:
        print_json({"dry_run": True, **told.as_dict(ids=False)})
        return
    console.print("dry run: nothing is stored and nothing is sent")
    print_reach(told, dry_run=True)
