"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis).

Whatever a client sends, within the schema or not, the answer is never a server error: bad
input is a 4xx that names the field. Each generated request is sent with and without
credentials, since this must hold before authentication as well as after.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from schemathesis.checks import not_a_server_error

from dispatcher.settings import Settings
from dispatcher.web.app import create_app
from tests.conftest import API_TOKEN, WEBHOOK_TOKEN

# schemathesis reads the schema when this module is collected, so the app exists by then; its
# lifespan (Pipeline, in-process sandbox, embedded runner) runs only while the tests do.
_app = create_app(
    Settings(
        database_url=f"sqlite:///{Path(tempfile.mkdtemp()) / 'fuzz.sqlite3'}",
        api_token=SecretStr(API_TOKEN),
        webhook_token=SecretStr(WEBHOOK_TOKEN),
        send_backoff_s=0,
        delivery_backoff_s=0,
        api_docs="public",  # schemathesis reads the schema without credentials
    )
)
schema = schemathesis.openapi.from_asgi("/openapi.json", _app)


@pytest.fixture(scope="module", autouse=True)
def _running_app() -> Iterator[None]:
    with TestClient(_app):
        yield


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_input_produces_a_server_error(case: Any) -> None:
    token = WEBHOOK_TOKEN if case.path.startswith("/webhooks") else API_TOKEN
    for headers in ({"Authorization": f"Bearer {token}"}, {}):
        case.call_and_validate(headers=headers, checks=[not_a_server_error])
