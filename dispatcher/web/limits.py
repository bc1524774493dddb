"""What one request may cost us before any route runs: its body's size and its JSON's depth.

Two plain ASGI middlewares, on every route (`outage serve` faces the internet):

- `BodySizeLimit`: a Content-Length over the limit is refused at once, and a body without one
  (chunked) is refused as soon as it crosses the limit, so no client can make the server hold a
  huge body. A route that reads more than that sees `BodyTooLarge`, an HTTPException, so FastAPI's
  own body reading passes it on as the 413 it is (any other exception there becomes a 400) and
  the subscriber pages show it as a page.
- `JsonNestingLimit`: a JSON body nested deeper than `JSON_MAX_DEPTH` is refused with a 422
  before a route parses it. Python's json parser recurses once per level: 1,000 levels raised
  RecursionError (a 500), and a body just under that parsed, but then broke whatever recursed
  over it next (validation, an error answer that echoes the input, storing it as JSON).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Deeper than any payload a monitoring system or an API client sends (Alertmanager's is four).
JSON_MAX_DEPTH = 32
FORM_TYPES = (b"application/x-www-form-urlencoded", b"multipart/form-data")


class BodyTooLarge(HTTPException):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, detail=f"request body larger than {max_bytes} bytes")


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _answer(send, 413, BodyTooLarge(self.max_bytes).detail)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        try:
            await self.app(scope, limited_receive, send)
        except BodyTooLarge as exc:  # raised outside any route (JsonNestingLimit reading)
            await _answer(send, 413, exc.detail)


class JsonNestingLimit:
    """Reads a body that may be JSON (not a form; starting with `{` or `[`), refuses it when
    nested deeper than `max_depth`, and hands the same bytes on to the route. Place it inside
    BodySizeLimit, so that what it reads is already capped."""

    def __init__(self, app: ASGIApp, max_depth: int = JSON_MAX_DEPTH) -> None:
        self.app = app
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        content_type = dict(scope.get("headers", [])).get(b"content-type", b"").lower()
        if scope["type"] != "http" or content_type.startswith(FORM_TYPES):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay(b"", receive, message), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if too_deep(body, self.max_depth):
            await _answer(
                send,
                422,
                [
                    {
                        "type": "json_too_deep",
                        "loc": ["body"],
                        "msg": f"JSON nested deeper than {self.max_depth} levels",
                    }
                ],
            )
            return
        await self.app(scope, _replay(body, receive), send)


def too_deep(body: bytes, max_depth: int) -> bool:
    """Whether `body`, if it is JSON, nests arrays and objects deeper than `max_depth`. Not
    JSON (or not starting like it): False, the route says what is wrong with it."""
    if body.lstrip()[:1] not in (b"{", b"["):
        return False
    try:
        parsed = json.loads(body)
    except RecursionError:
        return True
    except ValueError:  # not JSON, or not UTF-8
        return False
    return _depth_over(parsed, max_depth)


def _depth_over(value: Any, max_depth: int) -> bool:
    """Walks the parsed value without recursing, and stops at the first level too deep."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _replay(body: bytes, receive: Receive, first: Message | None = None) -> Receive:
    """A receive that gives the body already read once, then whatever the client sends next."""
    pending: list[Message] = [first or {"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed


async def _answer(send: Send, status: int, detail: object) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
