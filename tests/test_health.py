"""Liveness and readiness as an orchestrator asks them: /healthz always, /readyz naming what is
wrong, in well under a second, with the database or the broker really down (a port where
nothing listens, a directory that does not exist, a server that accepts but never answers)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dispatcher.ops.findings import Context
from dispatcher.settings import Settings
from dispatcher.store import make_engine
from dispatcher.web.app import create_app
from dispatcher.web.health import readiness_context
from tests.conftest import API_TOKEN

BOUND_S = 1.0  # what an orchestrator's probe timeout usually is; /readyz must answer inside it
OPERATOR = {"Authorization": f"Bearer {API_TOKEN}"}  # who is told what is wrong


def closed_port() -> int:
    """A port that was free a moment ago: connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections (the kernel completes them) and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield int(server.getsockname()[1])


def checks_of(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["check"]: check for check in body["checks"]}


def timed_get(client: TestClient, path: str) -> tuple[Any, float]:
    started = time.perf_counter()
    response = client.get(path, headers=OPERATOR)
    return response, time.perf_counter() - started


def test_healthz_says_alive(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_ok_when_everything_answers(client: TestClient) -> None:
    response, took = timed_get(client, "/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    assert set(checks_of(body)) == {"database", "broker", "templates", "providers"}
    assert all(check["status"] == "ok" for check in body["checks"])
    assert took < BOUND_S


def _with_database(client: TestClient, url: str) -> None:
    """Point the readiness checks of the running app at another database."""
    pipeline = client.app.state.pipeline  # type: ignore[attr-defined]

    def context() -> Context:
        return Context(pipeline.settings, make_engine(url), registry=pipeline.registry)

    client.app.dependency_overrides[readiness_context] = context  # type: ignore[attr-defined]


def test_readyz_names_a_postgresql_that_refuses_connections(client: TestClient) -> None:
    _with_database(client, f"postgresql://postgres@127.0.0.1:{closed_port()}/outage")
    response, took = timed_get(client, "/readyz")
    assert response.status_code == 503
    database = checks_of(response.json())["database"]
    assert database["status"] == "fail"
    assert database["detail"].startswith("postgresql did not answer")
    assert "OUTAGE_DATABASE_URL" in database["fix"]
    assert checks_of(response.json())["templates"]["status"] == "ok", "only the database is down"
    assert took < BOUND_S


def test_readyz_names_a_sqlite_file_in_a_missing_directory(
    client: TestClient, tmp_path: Path
) -> None:
    _with_database(client, f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'outage.sqlite3'}")
    response, took = timed_get(client, "/readyz")
    assert response.status_code == 503
    database = checks_of(response.json())["database"]
    assert database["status"] == "fail"
    assert "unable to open database file" in database["detail"]
    assert took < BOUND_S


def test_readyz_names_a_redis_broker_that_refuses_connections(web_settings: Settings) -> None:
    port = closed_port()
    down = web_settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{port}/0"})
    with TestClient(create_app(down)) as client:
        response, took = timed_get(client, "/readyz")
    assert response.status_code == 503
    broker = checks_of(response.json())["broker"]
    assert broker["status"] == "fail"
    assert broker["detail"].startswith(f"127.0.0.1:{port}/0 did not answer")
    assert checks_of(response.json())["database"]["status"] == "ok"
    assert took < BOUND_S


def test_readyz_does_not_wait_for_a_broker_that_hangs(
    web_settings: Settings, silent_server: int
) -> None:
    hung = web_settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{silent_server}/0"})
    with TestClient(create_app(hung)) as client:
        response, took = timed_get(client, "/readyz")
    assert response.status_code == 503
    broker = checks_of(response.json())["broker"]
    assert broker["detail"].startswith("no answer within")
    assert took < BOUND_S


def test_readyz_names_missing_live_credentials(web_settings: Settings) -> None:
    live = web_settings.model_copy(update={"providers": "live"})
    with TestClient(create_app(live)) as client:
        response = client.get("/readyz", headers=OPERATOR)
    assert response.status_code == 503
    checks = checks_of(response.json())
    assert checks["provider:sms"]["detail"] == "TWILIO_ACCOUNT_SID is not set"
    assert checks["provider:email"]["detail"] == "SENDGRID_API_KEY is not set"
    assert checks["provider:social"]["detail"] == "X_API_KEY is not set"
