"""What one request may cost: every route stops reading a body at the size limit, and JSON
nested too deep is a 4xx on every JSON route, never a 500 (dispatcher/web/limits.py).

The streamed bodies are driven through the app's own ASGI interface, as a server hands a chunked
upload over: the test client would read a whole body into memory before the app saw any of it,
and the point is how much of it the app reads."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dispatcher.web.limits import JSON_MAX_DEPTH
from tests.conftest import API_TOKEN, WEBHOOK_TOKEN

CHUNK = 64 * 1024
HUGE = 300 * 1024 * 1024  # the 300 MB that made the server grow by 270 MB


def stream(client: TestClient, path: str, content_type: str) -> tuple[int, int]:
    """POST an endless-looking chunked body (300 MB if read to the end, no Content-Length) to
    the app; the answer's status and how many bytes the app read before answering."""
    read = 0
    answered: dict[str, Any] = {}

    async def receive() -> dict[str, Any]:
        nonlocal read
        if read >= HUGE or "status" in answered:
            return {"type": "http.disconnect"}
        read += CHUNK
        return {"type": "http.request", "body": b"a" * CHUNK, "more_body": read < HUGE}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answered["status"] = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", content_type.encode()), (b"transfer-encoding", b"chunked")],
        "client": ("203.0.113.9", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
    assert client.portal is not None
    client.portal.call(client.app, scope, receive, send)
    return answered["status"], read


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/subscribe", "application/x-www-form-urlencoded"),
        ("/api/subscribers", "application/json"),
        ("/webhooks/generic", "application/json"),
        ("/preferences/not-a-token", "application/x-www-form-urlencoded"),
    ],
)
def test_a_streamed_body_is_refused_once_it_passes_the_limit_not_read_to_its_end(
    client: TestClient, path: str, content_type: str
) -> None:
    status, read = stream(client, path, content_type)
    assert status == 413
    limit = client.app.state.pipeline.settings.webhook_max_bytes  # type: ignore[attr-defined]
    assert read <= limit + CHUNK, f"read {read} bytes of a body refused at {limit}"


def test_the_sign_up_form_keeps_its_own_smaller_limit(client: TestClient) -> None:
    status, read = stream(client, "/subscribe", "application/x-www-form-urlencoded")
    assert status == 413
    assert read <= 2 * CHUNK, "a sign-up form is refused past 16 KB, not 1 MB"


def test_a_declared_oversized_body_is_refused_before_it_is_read(client: TestClient) -> None:
    answer = client.post(
        "/subscribe",
        content=b"name=x",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Content-Length": "999999999",
        },
    )
    assert answer.status_code == 413


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


DEEP_BODIES = {
    "arrays 1,000 deep": "[" * 1000 + "]" * 1000,
    "objects 1,000 deep": nested(1000),
    "a field 900 deep": json.dumps({"name": "x", "channels": ["email"]})[:-1]
    + ', "email": '
    + "[" * 900
    + "]" * 900
    + "}",
}
OPERATOR = {"Authorization": f"Bearer {API_TOKEN}"}
MONITORING = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}


@pytest.mark.parametrize("body", DEEP_BODIES.values(), ids=DEEP_BODIES.keys())
@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("POST", "/webhooks/generic", MONITORING),
        ("POST", "/webhooks/alertmanager", MONITORING),
        ("POST", "/webhooks/grafana", MONITORING),
        ("POST", "/webhooks/uptime-kuma", MONITORING),
        ("POST", "/api/subscribers", {}),
        ("POST", "/api/subscribers", OPERATOR),
        ("PATCH", "/api/subscribers/1", OPERATOR),
        ("POST", "/api/incidents", OPERATOR),
    ],
)
def test_json_nested_too_deep_is_a_422_on_every_json_route(
    client: TestClient, method: str, path: str, headers: dict[str, str], body: str
) -> None:
    answer = client.request(
        method, path, content=body, headers={**headers, "Content-Type": "application/json"}
    )
    assert answer.status_code == 422, answer.text[:200]
    assert answer.json()["detail"][0]["type"] == "json_too_deep"


def test_json_as_deep_as_allowed_reaches_the_route(client: TestClient) -> None:
    """The limit refuses only what is deeper than it: at the limit, the route's own checks
    answer (here: the payload is not an alert)."""
    answer = client.post(
        "/webhooks/generic",
        content=nested(JSON_MAX_DEPTH - 1),
        headers={**MONITORING, "Content-Type": "application/json"},
    )
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["type"] != "json_too_deep"


def test_a_deep_body_without_a_json_content_type_is_refused_too(client: TestClient) -> None:
    """The webhook routes parse what they are sent whatever it is labelled."""
    answer = client.post(
        "/webhooks/generic",
        content=nested(1000),
        headers={**MONITORING, "Content-Type": "text/plain"},
    )
    assert answer.status_code == 422
