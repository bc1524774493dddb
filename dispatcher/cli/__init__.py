"""The `outage` command: operators open and follow incidents and manage subscribers from here.

Every command turns bad input into one red line naming the field and exit code 2; a stack trace
is a bug. Commands that post an update run the fan-out in-process on the embedded default, and
only enqueue it when a broker is configured. One module per command group.
"""

from __future__ import annotations

import typer

from dispatcher.cli import delivery, incident, process, subscriber, template

app = typer.Typer(
    help="Tell customers, on their chosen channel, that a service is down and when it is back.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(incident.app, name="incident")
app.add_typer(subscriber.app, name="subscriber")
app.add_typer(template.app, name="template")
app.add_typer(delivery.app, name="delivery")
app.registered_commands.extend(process.app.registered_commands)
