"""What the tests of audiences by impact share: the CLI on the test database, and a small
population with attributes (import the `cli_env` fixture where it is used)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest
from typer.testing import CliRunner

from dispatcher.cli import app as cli
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.models import SubscriberIn
from dispatcher.sandbox.server import Sandbox
from dispatcher.settings import get_settings
from dispatcher.subscribers import records

runner = CliRunner()
CY_PHONE = "+14155550101"
_T = TypeVar("_T")


@pytest.fixture
def cli_env(database_url: str, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> str:
    """The CLI on the test database (SQLite, and PostgreSQL) and the sandbox, with no waiting
    between retries nor between messages."""
    for name, value in {
        "OUTAGE_DATABASE_URL": database_url,
        "OUTAGE_SANDBOX_URL": sandbox.url,
        "OUTAGE_SEND_BACKOFF_S": "0",
        "OUTAGE_DELIVERY_BACKOFF_S": "0",
        "OUTAGE_COALESCE_WINDOW_S": "0",
    }.items():
        monkeypatch.setenv(name, value)
    return database_url


def outage(*args: str) -> tuple[int, str, str]:
    """Run `outage ARGS`: exit code, stdout, stderr."""
    get_settings.cache_clear()
    result = runner.invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def add(pipeline: Pipeline, name: str, **fields: object) -> int:
    """A confirmed email subscriber `name@example.org`, with `fields` over that."""
    data = SubscriberIn.model_validate(
        {"name": name, "email": f"{name}@example.org", "channels": ["email"], "confirmed": True}
        | fields
    )
    return records.add(pipeline.store, pipeline.registry, data).id


def people(pipeline: Pipeline) -> None:
    """Ana and Ben in eu-west (enterprise, free), Cy in us-east (texts only), Dee without
    attributes, and the team."""
    add(pipeline, "ana", attributes={"region": "eu-west", "plan": "enterprise"})
    add(pipeline, "ben", attributes={"region": "eu-west", "plan": "free"})
    add(pipeline, "cy", email=None, phone=CY_PHONE, channels=["sms"],
        attributes={"region": "us-east"})  # fmt: skip
    add(pipeline, "dee")
    add(pipeline, "team", internal=True)


def told(sandbox: Sandbox) -> list[str]:
    """Who received an email or a text, by name, sorted."""
    return sorted(
        "cy" if m["to"] == CY_PHONE else m["to"].split("@")[0]
        for m in sandbox.messages()
        if m["channel"] in ("email", "sms")
    )


def body_for(sandbox: Sandbox, name: str) -> list[str]:
    """The texts `name` received, oldest first."""
    address = CY_PHONE if name == "cy" else f"{name}@example.org"
    return [m["body"] for m in sandbox.messages() if m["to"] == address]


def settled(read: Callable[[], list[_T]], timeout_s: float = 10.0) -> list[_T]:
    """What `read` finds once the app's runner thread has sent something (or the deadline)."""
    deadline = time.monotonic() + timeout_s
    while not (found := read()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found
