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
from sqlalchemy.exc import SQLAlchemyError

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.delivery.registry import UnknownChannel
from dispatcher.incidents.lifecycle import IncidentError
from dispatcher.logs import redact
from dispatcher.migrations import SchemaMismatch
from dispatcher.render.core import TemplateMissing
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
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(2)


def user_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn the errors a user can cause into one clear line and exit code 2."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except ValidationError as exc:
            fail(records.describe(exc))
        except (
            IncidentError,
            records.SubscriberError,
            UnknownChannel,
            TemplateMissing,
            SchemaMismatch,
        ) as exc:
            fail(str(exc))
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


def print_json(data: Any) -> None:
    console.print_json(json.dumps(data, default=str))


def timestamp(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""
