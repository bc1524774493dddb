"""Shared fixtures: a database per test (SQLite, and PostgreSQL when reachable), the sandbox, and
a Pipeline wired to both with the backoff delays taken out. Each run has a PostgreSQL database
and a Redis key prefix of its own, so that two runs at once never see each other's data.

Tests that need PostgreSQL or Redis skip with the reason when the server is missing; with
OUTAGE_REQUIRE_SERVICES=1 (set by .ci/run) such a skip becomes a failure, so CI runs them all.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import text

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents import lifecycle, reports
from dispatcher.models import IncidentIn, Severity, SubscriberIn
from dispatcher.sandbox.server import Sandbox
from dispatcher.settings import Settings, get_settings
from dispatcher.store import Base, make_engine
from dispatcher.subscribers import records
from dispatcher.web.app import create_app

POSTGRES_URL = os.environ.get(
    "OUTAGE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("OUTAGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# This run's start of every key the product keeps in Redis (OUTAGE_REDIS_PREFIX, set for every
# test): runs sharing REDIS_URL's database neither read nor clear each other's buckets, breakers.
REDIS_PREFIX = f"outage-test-{os.getpid()}-{secrets.token_hex(4)}"


def reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 0), 1):
            return True
    except OSError:
        return False


def need_service(url: str, what: str) -> None:
    """Skip (or, in CI, fail) a test whose server is not running."""
    if reachable(url):
        return
    message = f"{what} not reachable at {urlparse(url).netloc}; start it or set the test URL"
    if os.environ.get("OUTAGE_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message} (OUTAGE_REQUIRE_SERVICES=1 forbids skipping)")
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's OUTAGE_* or provider variables, nor another test's cache."""
    for name in list(os.environ):
        if name.startswith(
            ("OUTAGE_", "TWILIO_", "SENDGRID_", "X_", "PAGERDUTY_")
        ) and name not in (
            "OUTAGE_REQUIRE_SERVICES",
            "OUTAGE_TEST_POSTGRES_URL",
            "OUTAGE_TEST_REDIS_URL",
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OUTAGE_REDIS_PREFIX", REDIS_PREFIX)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def redis_db() -> Iterator[redis.Redis]:
    """A client of the test Redis with none of this run's keys in it when the test starts, and
    none left when it ends; other runs' keys in the same database are never touched."""
    need_service(REDIS_URL, "Redis")
    client = redis.Redis.from_url(REDIS_URL)
    _forget_this_run(client)
    yield client
    _forget_this_run(client)
    client.close()


def _forget_this_run(client: redis.Redis) -> None:
    keys = list(client.scan_iter(match=f"{REDIS_PREFIX}:*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A database of this test run's own on the PostgreSQL server, so that two runs (or a
    developer's data in `test`) never see each other's tables; dropped at the end."""
    need_service(POSTGRES_URL, "PostgreSQL")
    name = f"outage_test_{os.getpid()}"
    admin = make_engine(POSTGRES_URL).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield urlparse(POSTGRES_URL)._replace(path=f"/{name}").geturl()
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that uses the database runs on SQLite and on PostgreSQL, on an empty schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'outage.sqlite3'}"
    url: str = request.getfixturevalue("postgres_database")
    engine = make_engine(url)
    Base.metadata.drop_all(engine)
    engine.dispose()
    return url


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as running:
        yield running


@pytest.fixture
def settings(database_url: str, sandbox: Sandbox) -> Settings:
    """Embedded settings on the test database and sandbox, with no waiting between retries nor
    between messages (tests of pacing set their own window)."""
    return Settings(
        database_url=database_url,
        sandbox_url=sandbox.url,
        send_backoff_s=0,
        delivery_backoff_s=0,
        delivery_backoff_max_s=0,
        coalesce_window_s=0,
        provider_timeout_s=2,
        redis_prefix=REDIS_PREFIX,
        # The sandbox, and the receivers tests start, listen on loopback.
        webhook_allow_networks=["127.0.0.0/8"],
        webhook_timeout_s=2,
    )


API_TOKEN = "test-operator-token"
WEBHOOK_TOKEN = "test-webhook-token"


@pytest.fixture
def web_settings(settings: Settings) -> Settings:
    """The test settings with the operator and webhook tokens set."""
    return settings.model_copy(
        update={"api_token": SecretStr(API_TOKEN), "webhook_token": SecretStr(WEBHOOK_TOKEN)}
    )


@pytest.fixture
def client(web_settings: Settings) -> Iterator[TestClient]:
    """The HTTP API in-process, its lifespan run (pipeline, embedded runner) as `outage serve`
    would. `client.app.state.pipeline` is the app's Pipeline."""
    with TestClient(create_app(web_settings)) as running:
        yield running


@pytest.fixture
def pipeline(settings: Settings) -> Iterator[Pipeline]:
    running = Pipeline(settings)
    yield running
    running.close()


def tell_one_subscriber(pipeline: Pipeline, channels: list[str]) -> int:
    """One subscriber (a phone and an email, `channels` in that order) told of one incident,
    every delivery final; the incident's id."""
    records.add(
        pipeline.store,
        pipeline.registry,
        SubscriberIn(
            name="a",
            phone="+14155550100",
            email="a@example.org",
            channels=channels,
            confirmed=True,
        ),
    )
    posted = lifecycle.open_incident(
        pipeline.store, IncidentIn(title="x", severity=Severity.MAJOR, components=["api"])
    )
    pipeline.fan_out(posted.update_id)
    settle(pipeline, posted.incident_id)
    return posted.incident_id


def settle(pipeline: Pipeline, incident_id: int) -> None:
    """Send what is due and wait until every delivery of the incident is final: the app's
    runner thread may hold some of the sends (a bounded poll)."""
    pipeline.drain(wait_s=5)
    deadline = time.monotonic() + 10
    while not all(x.status.is_final for x in reports.deliveries(pipeline.store, incident_id)):
        assert time.monotonic() < deadline, "the deliveries did not settle"
        time.sleep(0.05)
