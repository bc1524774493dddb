"""The HTTP app as `outage serve` runs it: lifespan, embedded runner, and liveness."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import API_TOKEN


def test_healthz_answers_and_the_embedded_runner_runs(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert client.app.state.runner.thread.is_alive()  # type: ignore[attr-defined]


def test_openapi_is_served(client: TestClient) -> None:
    operator = {"Authorization": f"Bearer {API_TOKEN}"}
    assert client.get("/openapi.json", headers=operator).json()["info"]["title"] == (
        "outage-dispatcher"
    )
