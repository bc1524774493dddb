"""The sandbox's control API under `/sandbox/`, for tests, the CLI and the bench: read what was
recorded, inject failures and latency, emit signed receipts. Never delayed, never faulted."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from dispatcher.sandbox import receipts
from dispatcher.sandbox.replies import Reply, json_reply
from dispatcher.sandbox.state import CHANNELS, SandboxState


def answer(
    sandbox: SandboxState, method: str, path: str, query: dict[str, list[str]], body: bytes
) -> Reply:
    routes: dict[tuple[str, str], Callable[[], Reply]] = {
        ("GET", "/sandbox/health"): lambda: json_reply(200, {"ok": True, "channels": CHANNELS}),
        ("GET", "/sandbox/stats"): lambda: json_reply(200, sandbox.stats()),
        ("GET", "/sandbox/messages"): lambda: json_reply(
            200, sandbox.messages(query.get("channel", [None])[0])
        ),
        ("DELETE", "/sandbox/messages"): lambda: _then_ok(sandbox.clear),
        ("POST", "/sandbox/faults"): lambda: _post_fault(sandbox, _json_object(body)),
        ("DELETE", "/sandbox/faults"): lambda: _then_ok(sandbox.clear_faults),
        ("POST", "/sandbox/latency"): lambda: _post_latency(sandbox, _json_object(body)),
        ("POST", "/sandbox/receipts"): lambda: _post_receipt(sandbox, _json_object(body)),
    }
    action = routes.get((method, path))
    if action is None:
        known = any(route_path == path for _, route_path in routes)
        status = 405 if known else 404
        return json_reply(status, {"error": f"no route for {method} {path}"})
    try:
        return action()
    except ValueError as exc:
        return json_reply(400, {"error": str(exc)})


def _then_ok(action: Callable[[], None]) -> Reply:
    action()
    return json_reply(200, {"ok": True})


def _post_fault(sandbox: SandboxState, document: dict[str, Any]) -> Reply:
    recipient = document.get("recipient")
    if recipient is not None:
        if not isinstance(recipient, str) or not recipient:
            raise ValueError("recipient must be a non-empty string")
        if "delay_s" in document:  # a slow (or hanging) webhook receiver
            sandbox.inject_recipient_delay(recipient, document["delay_s"])
        else:
            sandbox.inject_recipient_failure(recipient)
        return json_reply(200, {"ok": True})
    if "for_s" in document:
        retry_after = document.get("retry_after_s")
        if retry_after is not None and not isinstance(retry_after, int | float):
            raise ValueError("retry_after_s must be a number")
        kind: Any = str(document.get("kind"))  # checked by inject_outage
        sandbox.inject_outage(kind, document["for_s"], document.get("channel"), retry_after)
        return json_reply(200, {"ok": True})
    if "count" not in document or "kind" not in document:
        raise ValueError(
            'expected {"recipient": ...}, {"recipient": ..., "delay_s": S} '
            'or {"count": N, "kind": ...}'
        )
    retry_after = document.get("retry_after_s")
    if retry_after is not None and not isinstance(retry_after, int | float):
        raise ValueError("retry_after_s must be a number")
    sandbox.inject_failures(
        document["count"],
        str(document["kind"]),  # type: ignore[arg-type]  # checked by inject_failures
        document.get("channel"),
        retry_after,
    )
    return json_reply(200, {"ok": True})


def _post_receipt(sandbox: SandboxState, document: dict[str, Any]) -> Reply:
    channel, to, status = (document.get(name) for name in ("channel", "to", "status"))
    if not (isinstance(channel, str) and isinstance(to, str) and isinstance(status, str)):
        raise ValueError('expected {"channel": "sms"|"email", "to": ..., "status": ...}')
    url, error_code = document.get("url"), document.get("error_code")
    if url is not None and not isinstance(url, str):
        raise ValueError("url must be a string")
    if error_code is not None and not isinstance(error_code, int):
        raise ValueError("error_code must be an integer")
    try:
        answered = receipts.emit(sandbox, channel, to, status, url, error_code)
    except httpx.HTTPError as exc:
        return json_reply(502, {"error": f"the receiver did not answer ({type(exc).__name__})"})
    return json_reply(200, {"ok": True, "receiver_status": answered})


def _post_latency(sandbox: SandboxState, document: dict[str, Any]) -> Reply:
    latency = document.get("latency_ms")
    if isinstance(latency, bool) or not isinstance(latency, int | float):
        raise ValueError("latency_ms must be a number")
    sandbox.set_latency(latency)
    return json_reply(200, {"ok": True})


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body or b"null")
    except ValueError:
        raise ValueError("the body is not valid JSON") from None
    if not isinstance(document, dict):
        raise ValueError("the body must be a JSON object")
    return document
