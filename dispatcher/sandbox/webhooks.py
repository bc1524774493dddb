"""A subscriber's webhook receiver: `POST /hooks/{name...}` accepts any JSON body and records it
with its headers, so a test can check the signature the dispatcher sent; one can be made slow,
or to hang (`inject_recipient_delay`)."""

from __future__ import annotations

import json
import re
from email.message import Message as HeaderMap

from dispatcher.sandbox.replies import Reply, json_reply
from dispatcher.sandbox.state import SandboxState, new_record

CHANNEL = "webhook"
SEND_PATH = re.compile(r"^/hooks/.+")


def error(status: int, message: str) -> Reply:
    return json_reply(status, {"ok": False, "error": message})


def send(state: SandboxState, path: str, headers: HeaderMap, body: bytes) -> Reply:
    """Accept a JSON POST, unless `path` was made to fail for good (then 410 Gone); after the
    delay `path` was given, if any (a slow or hanging receiver)."""
    if delay := state.delay_of(path):
        state.hold(delay)
    if (fault := state.take_fault(CHANNEL, error)) is not None:
        return fault
    try:
        text = body.decode("utf-8")
        json.loads(text)
    except ValueError:
        return error(400, "the body is not valid JSON")
    if state.fails(path):
        return error(410, "gone")
    record = new_record(CHANNEL, path, headers, "", body=text)
    record["provider_id"] = record["id"]
    state.record([record])
    return json_reply(200, {"ok": True}, {"X-Request-Id": record["id"]})
