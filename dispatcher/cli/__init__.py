"""The `outage` command: operators open and follow incidents and manage subscribers from here.

Every command turns bad input into one red line naming the option and exit code 2, Click's own
usage errors included (`usage.py`); a stack trace is a bug. Commands that post an update run the
fan-out in-process on the embedded default, and only enqueue it when a broker is configured. One
module per command group.
"""

from __future__ import annotations

from typing import Annotated

import typer

from dispatcher.cli import (
    db,
    delivery,
    doctor,
    incident,
    maintenance,
    process,
    subscriber,
    template,
)
from dispatcher.cli.usage import OneLineErrors
from dispatcher.logs import setup_logging

app = typer.Typer(
    cls=OneLineErrors,
    help="Tell customers, on their chosen channel, that a service is down and when it is back.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(incident.app, name="incident")
app.add_typer(subscriber.app, name="subscriber")
app.add_typer(template.app, name="template")
app.add_typer(delivery.app, name="delivery")
app.add_typer(maintenance.app, name="maintenance")
app.add_typer(db.app, name="db")
app.registered_commands.extend(process.app.registered_commands)
app.registered_commands.extend(doctor.app.registered_commands)

LONG_RUNNING = frozenset({"serve", "worker", "sandbox"})  # log what they do; others only problems


@app.callback()
def _logging(
    context: typer.Context,
    log_level: Annotated[
        str | None,
        typer.Option(
            envvar="OUTAGE_LOG_LEVEL",
            help="debug, info, warning or error (default: info for serve and worker, else"
            " warning). JSON lines when stderr is not a terminal.",
        ),
    ] = None,
) -> None:
    """Structured, redacted logs on stderr for every command."""
    default = "info" if context.invoked_subcommand in LONG_RUNNING else "warning"
    setup_logging(log_level or default)
