"""`outage subscriber …`: add, import, list and remove subscribers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from dispatcher import subscribers
from dispatcher.cli.common import (
    JsonOption,
    console,
    errors,
    open_pipeline,
    print_json,
    user_errors,
)
from dispatcher.models import Severity, SubscriberIn
from dispatcher.store import Subscriber

app = typer.Typer(help="Add, import, list and remove subscribers.", no_args_is_help=True)


def _subscriber_dict(subscriber: Subscriber, *, with_secret: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": subscriber.id,
        "name": subscriber.name,
        "email": subscriber.email,
        "phone": subscriber.phone,
        "webhook": subscriber.webhook_url,
        "channels": subscriber.channels,
        "components": subscriber.components,
        "min_severity": subscriber.min_severity,
        "locale": subscriber.locale,
        "email_confirmed": subscriber.email_confirmed_at is not None,
        "phone_confirmed": subscriber.phone_confirmed_at is not None,
        "internal": subscriber.internal,
        "tier": subscriber.tier,
    }
    if with_secret and subscriber.webhook_secret:
        data["webhook_secret"] = subscriber.webhook_secret
    return data


@app.command("add")
@user_errors
def subscriber_add(
    name: Annotated[str, typer.Option(help="Who this is.")],
    channels: Annotated[
        str, typer.Option(help="Channels in order of preference: sms,email,webhook.")
    ],
    email: Annotated[str | None, typer.Option(help="Email address.")] = None,
    phone: Annotated[str | None, typer.Option(help="Phone number in +E.164 form.")] = None,
    webhook: Annotated[
        str | None, typer.Option(help="http(s) URL to POST signed updates to.")
    ] = None,
    component: Annotated[
        list[str] | None, typer.Option(help="Only hear of this component; repeat. Default: all.")
    ] = None,
    min_severity: Annotated[
        Severity, typer.Option(help="Hear nothing below this.")
    ] = Severity.MINOR,
    locale: Annotated[str, typer.Option(help="Language of the messages.")] = "en",
    confirmed: Annotated[bool, typer.Option(help="The addresses are known to be theirs.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Add a subscriber. A webhook subscriber gets a signing secret, printed once."""
    data = SubscriberIn(
        name=name,
        email=email,
        phone=phone,
        webhook=webhook,
        channels=channels.split(","),
        components=component or [],
        min_severity=min_severity,
        locale=locale,
        confirmed=confirmed,
    )
    with open_pipeline() as pipeline:
        subscriber = subscribers.add(pipeline.store, pipeline.registry, data)
    if as_json:
        print_json(_subscriber_dict(subscriber, with_secret=True))
        return
    console.print(f"subscriber [bold]{subscriber.id}[/] added: {subscriber.name}")
    if subscriber.webhook_secret:
        console.print(f"webhook signing secret (shown once): {subscriber.webhook_secret}")
    if not data.confirmed and (data.email or data.phone):
        console.print("[yellow]not confirmed:[/] nothing is sent until the addresses are confirmed")


@app.command("list")
@user_errors
def subscriber_list(as_json: JsonOption = False) -> None:
    """List subscribers with their channels and filters."""
    with open_pipeline() as pipeline:
        found = subscribers.list_all(pipeline.store)
    if as_json:
        print_json([_subscriber_dict(s) for s in found])
        return
    table = Table("id", "name", "channels", "addresses", "components", "min", "confirmed")
    for s in found:
        addresses = ", ".join(a for a in (s.phone, s.email, s.webhook_url) if a)
        table.add_row(
            str(s.id),
            s.name,
            " > ".join(s.channels),
            addresses,
            ", ".join(s.components) or "all",
            s.min_severity,
            _confirmation(s),
        )
    console.print(table)


@app.command("remove")
@user_errors
def subscriber_remove(subscriber_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Remove a subscriber and their addresses (delivery statistics stay, anonymous)."""
    with open_pipeline() as pipeline:
        subscribers.remove(pipeline.store, subscriber_id)
    console.print(f"subscriber {subscriber_id} removed")


@app.command("import")
@user_errors
def subscriber_import(
    file: Annotated[Path, typer.Argument(help="CSV: name,email,phone,webhook,channels,...")],
) -> None:
    """Import subscribers from CSV: good rows are stored, bad rows reported by line number."""
    with open_pipeline() as pipeline:
        report = subscribers.import_csv(pipeline.store, pipeline.registry, file)
    console.print(f"imported {report.imported} subscribers")
    for line, problem in report.errors:
        errors.print(f"[red]line {line}:[/] {problem}", highlight=False)
    if report.errors:
        raise typer.Exit(1)


def _confirmation(subscriber: Subscriber) -> str:
    """Which of the subscriber's addresses still wait for their double opt-in."""
    waiting = [
        field
        for field, confirmed in (
            ("email", subscriber.email_confirmed_at),
            ("phone", subscriber.phone_confirmed_at),
        )
        if getattr(subscriber, field) and confirmed is None
    ]
    return "yes" if not waiting else "waiting: " + ", ".join(waiting)
