"""`outage template …`: see what a channel's message looks like before an outage does."""

from __future__ import annotations

from typing import Annotated

import typer

from dispatcher.cli.common import console, settings, user_errors
from dispatcher.models import IncidentState

app = typer.Typer(help="Preview the message templates.", no_args_is_help=True)


@app.command("preview")
@user_errors
def template_preview(
    channel: Annotated[str, typer.Option(help="sms, email, social or webhook.")],
    state: Annotated[IncidentState, typer.Option(help="The incident state to render.")],
    locale: Annotated[str, typer.Option(help="Language.")] = "en",
    message: Annotated[str | None, typer.Option(help="Operator text to render with.")] = None,
) -> None:
    """Render a channel's template with sample data, with its length figures."""
    from dispatcher.render.preview import preview

    console.print(preview(settings(), channel, state, locale, message), highlight=False)
