"""What a stranger on the internet sees of the operator's surfaces, over HTTP.

`/metrics` needs OUTAGE_METRICS_TOKEN when it is set; the API documentation (`/docs`, `/redoc`,
`/openapi.json`) is the operator's (their token as Bearer, or as the password a browser asks
for) unless OUTAGE_API_DOCS=public; `/readyz` tells anyone ready or not, and only the operator
what is wrong (which would say how the dispatcher is set up: its providers, broker, database).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from dispatcher.settings import Settings
from dispatcher.web.app import create_app
from tests.conftest import API_TOKEN

OPERATOR = {"Authorization": f"Bearer {API_TOKEN}"}
METRICS_TOKEN = "test-metrics-token"
DOCS = ("/docs", "/redoc", "/openapi.json")


def basic(password: str) -> dict[str, str]:
    credentials = base64.b64encode(f"operator:{password}".encode()).decode()
    return {"Authorization": f"Basic {credentials}"}


@pytest.fixture
def scraped(web_settings: Settings) -> Iterator[TestClient]:
    settings = web_settings.model_copy(update={"metrics_token": SecretStr(METRICS_TOKEN)})
    with TestClient(create_app(settings)) as running:
        yield running


def test_metrics_need_the_metrics_token_when_one_is_set(scraped: TestClient) -> None:
    refused = scraped.get("/metrics")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert "outage_" not in refused.text
    wrong = scraped.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    page = scraped.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert page.status_code == 200 and "outage_database_up" in page.text
    assert scraped.get("/metrics", headers=OPERATOR).status_code == 200, "the operator may too"


def test_metrics_stay_open_without_a_metrics_token(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 200


@pytest.mark.parametrize("url", DOCS)
def test_the_api_docs_are_the_operators(client: TestClient, url: str) -> None:
    refused = client.get(url)
    assert refused.status_code == 401
    assert 'Basic realm="outage-dispatcher API docs"' in refused.headers["www-authenticate"]
    assert "openapi" not in refused.text.lower()
    assert client.get(url, headers=basic("wrong")).status_code == 401
    assert client.get(url, headers=OPERATOR).status_code == 200
    assert client.get(url, headers=basic(API_TOKEN)).status_code == 200, "as a browser asks"


def test_the_openapi_schema_is_the_apps(client: TestClient) -> None:
    schema = client.get("/openapi.json", headers=OPERATOR).json()
    assert schema["info"]["title"] == "outage-dispatcher"
    assert "/api/incidents" in schema["paths"]
    docs = client.get("/docs", headers=OPERATOR).text
    assert "/openapi.json" in docs


@pytest.mark.parametrize("url", DOCS)
def test_the_api_docs_can_be_made_public(web_settings: Settings, url: str) -> None:
    public = web_settings.model_copy(update={"api_docs": "public"})
    with TestClient(create_app(public)) as client:
        assert client.get(url).status_code == 200


def test_readiness_says_only_ready_or_not_to_strangers(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "sandbox" not in response.text
    detailed = client.get("/readyz", headers=OPERATOR)
    assert detailed.status_code == 200
    assert {check["check"] for check in detailed.json()["checks"]} >= {"database", "providers"}
    assert client.get("/readyz", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_a_stranger_learns_not_ready_and_nothing_more(web_settings: Settings) -> None:
    live = web_settings.model_copy(update={"providers": "live"})
    with TestClient(create_app(live)) as client:
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json() == {"status": "fail"}
        assert "TWILIO" not in response.text
        assert "TWILIO_ACCOUNT_SID" in client.get("/readyz", headers=OPERATOR).text
