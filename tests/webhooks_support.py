"""What the monitoring webhook tests share: the fixtures, an app with two subscribers (the team
and a customer), and the way to wait for its fan-out.

Fixtures in tests/fixtures/ingest are JSON with comments (`.jsonc`): each opens with `//` lines
naming the product's source files it follows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import func, select

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.models import DeliveryStatus, SubscriberIn
from dispatcher.sandbox.server import Sandbox
from dispatcher.settings import Settings
from dispatcher.store import Delivery, Update
from dispatcher.subscribers import records
from dispatcher.web.app import create_app
from tests.conftest import WEBHOOK_TOKEN

FIXTURES = Path(__file__).parent / "fixtures" / "ingest"
AUTH = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
TEAM, CUSTOMER = "ops@example.org", "customer@example.org"
SOURCES = ("alertmanager", "grafana", "uptime-kuma", "pagerduty", "generic")


def fixture(name: str) -> dict[str, Any]:
    """A fixture's payload: its leading `//` comment lines dropped."""
    text = (FIXTURES / f"{name}.jsonc").read_text(encoding="utf-8")
    body = "\n".join(line for line in text.splitlines() if not line.startswith("//"))
    loaded: dict[str, Any] = json.loads(body)
    return loaded


def publishing(settings: Settings, **extra: object) -> Settings:
    """Sources publish at once and resolves are announced without a hold, unless overridden."""
    values: dict[str, object] = {
        "auto_publish": {source: "minor" for source in SOURCES},
        "resolve_hold_s": 0,
    }
    values.update(extra)
    # Read from the environment only (PAGERDUTY_WEBHOOK_SECRET), so carried over by hand.
    secret = values.pop("pagerduty_webhook_secret", settings.pagerduty_webhook_secret)
    validated = Settings.model_validate({**settings.model_dump(), **values})
    if isinstance(secret, str):
        secret = SecretStr(secret)
    return validated.model_copy(update={"pagerduty_webhook_secret": secret})


@contextmanager
def webhook_app(settings: Settings, **overrides: object) -> Iterator[TestClient]:
    """The app, publishing per `publishing`, with the team and one customer subscribed by email
    to everything."""
    with TestClient(create_app(publishing(settings, **overrides))) as running:
        pipeline: Pipeline = running.app.state.pipeline  # type: ignore[attr-defined]
        for n, email in enumerate([TEAM, CUSTOMER]):
            records.add(
                pipeline.store,
                pipeline.registry,
                SubscriberIn(
                    name=f"s{n}", email=email, channels=["email"], confirmed=True, internal=n == 0
                ),
            )
        yield running


def settings_marker(request: pytest.FixtureRequest) -> dict[str, Any]:
    """A test's `@pytest.mark.settings(...)` overrides, if any."""
    marker = request.node.get_closest_marker("settings")
    return dict(marker.kwargs) if marker else {}


def settle(client: TestClient) -> Pipeline:
    """Help the embedded runner finish the fan-out, and wait (bounded) until the database says
    every update is fanned out and no delivery is queued or in flight."""
    pipeline: Pipeline = client.app.state.pipeline  # type: ignore[attr-defined]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        pipeline.sweep(stale_s=0)
        pipeline.drain()
        with pipeline.store.session() as session:
            pending = session.scalar(
                select(func.count()).select_from(Update).where(Update.fanned_out_at.is_(None))
            ) or session.scalar(
                select(func.count())
                .select_from(Delivery)
                .where(Delivery.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.SENDING]))
            )
        if not pending:
            return pipeline
        time.sleep(0.05)
    pytest.fail("the fan-out did not finish within 15 s")


def post(client: TestClient, source: str, payload: object, **headers: str) -> Any:
    return client.post(f"/webhooks/{source}", json=payload, headers={**AUTH, **headers})


def emails(sandbox: Sandbox, to: str = CUSTOMER) -> list[str]:
    return [m["subject"] for m in sandbox.messages("email") if m["to"] == to]


def bodies(sandbox: Sandbox, to: str = CUSTOMER) -> list[str]:
    return [m["body"] or "" for m in sandbox.messages("email") if m["to"] == to]
