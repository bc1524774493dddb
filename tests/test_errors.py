"""The user-error tree: drawn truthfully in `dispatcher/errors.py`, and every member of it answered
by the CLI (one red line, exit code 2) and by the API (its status, `{"detail": message}`) without
either keeping a list of classes."""

from __future__ import annotations

import importlib
import pkgutil
import re
from typing import NoReturn

import pytest
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import channels
import dispatcher
from dispatcher import errors
from dispatcher.cli.common import OPTIONS, user_errors
from dispatcher.delivery.operations import DeliveryError
from dispatcher.delivery.registry import UnknownChannel
from dispatcher.durations import DurationError
from dispatcher.errors import OutageError
from dispatcher.incidents.lifecycle import IncidentError, IncidentNotFound
from dispatcher.links import LinkError, LinkRevoked
from dispatcher.migrations import SchemaMismatch
from dispatcher.policy.quiet_hours import QuietHoursError
from dispatcher.policy.scope import ScopeError
from dispatcher.render.templates import RenderError, TemplateMissing
from dispatcher.settings import Settings
from dispatcher.subscribers.confirmations import ConfirmationError
from dispatcher.subscribers.new_link import NoConfirmedAddress
from dispatcher.subscribers.preferences import SubscriberNotFound
from dispatcher.subscribers.records import SubscriberError
from dispatcher.web.app import create_app

# One of each user error, with the HTTP status the API must answer it with: the contract.
EXAMPLES: list[tuple[OutageError, int]] = [
    (OutageError("something cannot be done"), 422),
    (IncidentError("incident 7 is already resolved"), 409),
    (IncidentNotFound(7), 404),
    (SubscriberError("channels: 'sms' needs a phone number"), 422),
    (SubscriberNotFound(7), 404),
    (ConfirmationError("this subscription no longer exists"), 410),
    (NoConfirmedAddress("no confirmed address to send a new link to"), 409),
    (LinkError("this link is not valid", expired=False), 403),
    (LinkError("this link has expired; ask for a new one", expired=True), 410),
    (LinkRevoked(), 410),
    (QuietHoursError("quiet_end: not a time of day like 22:00 ('7')"), 422),
    (ScopeError("--affects: 'region' is not key=value (e.g. region=eu-west)"), 422),
    (DeliveryError("ID: no delivery with id 7"), 422),
    (UnknownChannel("fax", ["email", "sms"]), 422),
    (RenderError("sms", "resolved", "does not fit the channel even when shortened"), 422),
    (TemplateMissing("fax", "resolved", "text", ["fax/en/resolved.text.j2"]), 422),
    (SchemaMismatch("the database schema is at revision 0001: run `outage db upgrade`"), 503),
    (DurationError("--eta: 'soon' is not a duration like 30m, 2h or 1h30m"), 422),
]
ID = [f"{type(error).__name__}-{status}" for error, status in EXAMPLES]

# A line of the drawing: its marker's indent, the class, its status, and the module it lives in.
TREE_LINE = re.compile(
    r"^(?P<indent> *)[*x+] (?P<name>\w+) +(?P<status>\d{3})  (?P<path>[\w/]+)\.py"
)


def user_error_classes() -> set[type[OutageError]]:
    """OutageError and every class below it, wherever it is defined: every module is imported
    first, so that a subclass in a module nothing else imports is found too."""
    for package in (dispatcher, channels):
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            # __main__ would run the CLI; Alembic's env and revisions run only inside Alembic
            script = module.name.endswith(".__main__") or ".migrations." in module.name
            if not script:
                importlib.import_module(module.name)
    found: set[type[OutageError]] = set()
    todo: list[type[OutageError]] = [OutageError]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_the_docstring_draws_the_tree_as_it_is() -> None:
    assert errors.__doc__ is not None
    drawn = [match for line in errors.__doc__.splitlines() if (match := TREE_LINE.match(line))]
    classes = {cls.__name__: cls for cls in user_error_classes()}
    assert sorted(m["name"] for m in drawn) == sorted(classes), "draw each class once"
    parents: list[type[OutageError]] = []  # the drawn ancestors of the current line
    for match in drawn:
        cls = classes[match["name"]]
        depth = len(match["indent"]) // 2
        del parents[depth:]
        if parents:
            assert parents[-1] in cls.__bases__, f"{cls.__name__} is drawn under {parents[-1]}"
        else:
            assert cls is OutageError
        assert int(match["status"]) == cls.http_status, cls.__name__
        module = f"dispatcher.{match['path'].replace('/', '.')}".removesuffix(".__init__")
        assert module == cls.__module__, cls.__name__
        parents.append(cls)


def test_every_user_error_has_an_example() -> None:
    """A new user error joins EXAMPLES, so the tests below prove both doors answer it."""
    assert {type(error) for error, _ in EXAMPLES} == user_error_classes()


def _raising(error: OutageError) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @user_errors
    def command() -> NoReturn:
        raise error

    return app


@pytest.mark.parametrize(("error", "status"), EXAMPLES, ids=ID)
def test_the_cli_answers_every_user_error_with_one_line_and_exit_2(
    error: OutageError, status: int
) -> None:
    result = CliRunner().invoke(_raising(error), [])
    assert result.exit_code == 2
    # The field a message starts with is shown as the option the user typed.
    field, _, rest = str(error).partition(": ")
    shown = f"{OPTIONS[field]}: {rest}" if field in OPTIONS else str(error)
    assert result.stderr == f"error: {shown}\n"
    assert result.stdout == ""


@pytest.mark.parametrize(("error", "status"), EXAMPLES, ids=ID)
def test_the_api_answers_every_user_error_with_its_status_and_detail(
    error: OutageError, status: int
) -> None:
    app = create_app(Settings())  # its lifespan is not run: the route needs no pipeline

    def route() -> NoReturn:
        raise error

    app.add_api_route("/raises", route, response_model=None)
    answer = TestClient(app).get("/raises")
    assert answer.status_code == status
    assert answer.json() == {"detail": str(error)}
