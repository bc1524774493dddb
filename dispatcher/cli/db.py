"""`outage db …`: the database schema across releases.

`upgrade` brings the schema to this release's revision, keeping every row (a 0.1.0 database is
adopted first: it has no revision recorded); `current` says where it stands. Every other command
refuses a schema behind the release rather than alter it unasked (see dispatcher/migrations).
"""

from __future__ import annotations

import typer

from dispatcher.cli.common import (
    JsonOption,
    console,
    database_errors,
    print_json,
    settings,
    user_errors,
)
from dispatcher.migrations import UPGRADE_HINT
from dispatcher.store import read_schema, upgrade_schema

app = typer.Typer(help="The database schema: upgrade it, see its revision.", no_args_is_help=True)


@app.command()
@user_errors
def upgrade() -> None:
    """Upgrade the schema to this release's revision, keeping every row.

    Back the database up and stop the previous release's processes first. It takes a lock
    (several at once upgrade once), does nothing at the latest revision, creates an empty
    database."""
    with database_errors():
        done = upgrade_schema(settings().database_url)
    console.print(done.describe(), highlight=False)


@app.command()
@user_errors
def current(as_json: JsonOption = False) -> None:
    """The schema's revision and the migrations pending; exit code 0 only when there are none."""
    with database_errors():
        schema = read_schema(settings().database_url)
    if as_json:
        print_json(
            {
                "revision": schema.revision,
                "head": schema.head,
                "pending": schema.pending,
                "up_to_date": schema.up_to_date,
            }
        )
    else:
        hint = f"; {UPGRADE_HINT}" if schema.pending else ""
        console.print(schema.status() + hint, highlight=False)
    raise typer.Exit(0 if schema.up_to_date else 1)
