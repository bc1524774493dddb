"""What every command shares: the consoles, the error handling, and opening a Pipeline."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import wraps
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from sqlalchemy.exc import SQLAlchemyError

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.errors import OutageError
from dispatcher.incidents import reports
from dispatcher.incidents.reports import Waiting
from dispatcher.logs import redact
from dispatcher.settings import Settings, get_settings
from dispatcher.subscribers import records

console = Console()
errors = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
WaitOption = Annotated[
    float,
    typer.Option(help="Embedded mode: seconds to wait for retries before returning."),
]


def fail(message: str) -> NoReturn:
    """Print `message` as one red-labelled line on stderr and exit with code 2."""
    say_error("[bold red]error:[/]", message)
    raise typer.Exit(2)


def say_error(label: str, message: str) -> None:
    """`label` (markup) and `message` as they are on one line of stderr. A message often quotes
    what the user typed, so it is escaped rather than read as markup ("[/x]" would raise), and it
    is not wrapped: with stderr not a terminal, Rich would break it at 80 columns."""
    errors.print(f"{label} {escape(message)}", highlight=False, soft_wrap=True)


# The option a user typed for each input field the models validate (and the core's errors
# name): an error shows the option, never the field behind it.
OPTIONS = {
    "title": "--title",
    "severity": "--severity",
    "components": "--component",
    "message": "--message",
    "next_update_at": "--next-update",
    "eta": "--eta",
    "internal_note": "--internal-note",
    "credit_note": "--credit-note",
    "starts_at": "--start",
    "ends_at": "--end",
    "state": "--state",
    "name": "--name",
    "email": "--email",
    "phone": "--phone",
    "webhook": "--webhook",
    "channels": "--channels",
    "min_severity": "--min-severity",
    "locale": "--locale",
    "quiet_start": "--quiet-hours",
    "quiet_end": "--quiet-hours",
    "timezone": "--timezone",
    "tier": "--tier",
    "purpose": "--purpose",
}


def as_typed(message: str) -> str:
    """A core error's message with its leading field ("channels: ...") named as the option."""
    field, colon, rest = message.partition(": ")
    return f"{OPTIONS[field]}: {rest}" if colon and field in OPTIONS else message


def user_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn the errors a user can cause into one clear line and exit code 2: bad input (pydantic
    names the field, shown as its option), any OutageError, and a file that cannot be read or
    written."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except ValidationError as exc:
            fail(records.describe(exc, OPTIONS))
        except OutageError as exc:
            fail(as_typed(str(exc)))
        except OSError as exc:
            fail(f"{exc.strerror or exc}: {getattr(exc, 'filename', '') or ''}".rstrip(": "))

    return wrapper


@contextmanager
def database_errors() -> Iterator[None]:
    """A database that cannot be reached, or refuses a change to its schema, is one line (its
    own words, secrets removed) rather than a traceback; a failed change was rolled back."""
    try:
        yield
    except SQLAlchemyError as exc:
        words = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        reason = redact(words[0]) if words else type(exc).__name__
        fail(f"the database failed, its schema is unchanged ({reason}): `outage doctor` checks it")


def settings() -> Settings:
    try:
        return get_settings()
    except ValidationError as exc:
        fail(f"configuration: {records.describe(exc)}")


@contextmanager
def open_pipeline(config: Settings | None = None) -> Iterator[Pipeline]:
    from dispatcher.delivery.bootstrap import connect

    pipeline = connect(config or settings())
    try:
        yield pipeline
    finally:
        pipeline.close()


REASONS = {
    "due": "due now",
    "coalescing": "coalescing: they heard of this incident moments ago",
    "quiet_hours": "quiet hours",
    "hourly_cap": "their hourly cap",
    "retry": "a retry after a provider failure",
    "breaker": "the provider's circuit breaker",
    "rate_limit": "the provider's rate limit",
    "newer_update": "behind a newer update still on its way: sent only if that one fails",
}


def waiting_report(pipeline: Pipeline, incident_id: int | None) -> list[Waiting]:
    """What this command leaves queued, printed in a line each (how many, until when, why) and
    what will send them; returned for `--json` (`waiting: [{count, until, reason}]`)."""
    held = reports.waiting(pipeline.store, incident_id)
    if not held:
        return held
    total = sum(item.count for item in held)
    for item in held:
        console.print(
            f"{item.count} waiting until {timestamp(item.until)} ({REASONS[item.reason]})",
            highlight=False,
            soft_wrap=True,  # a line each, whatever the width: a pipe would break it at 80
        )
    if pipeline.settings.embedded:
        with pipeline.store.session() as session:
            running = reports.runners_alive(session)
        sender = (
            f"the running runner ({', '.join(running)}) sends them"
            if running
            else "nothing is running to send them: run `outage worker`, or keep `outage serve` "
            "running"
        )
    else:
        sender = "the workers (`outage worker`) send them"
    console.print(f"{total} message(s) wait; {sender}", highlight=False, soft_wrap=True)
    return held


def print_json(data: Any) -> None:
    console.print_json(json.dumps(data, default=str))


def timestamp(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""
