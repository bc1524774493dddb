"""The sandbox's HTTP answers, apart from the server that writes them, so each fake provider
builds its replies (and its own error shape) without knowing how they reach the socket."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Reply:
    """One HTTP answer; the server adds Content-Length when it writes it."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


# A provider's error answer for (status, message), in the shape its SDK parses.
ErrorShape = Callable[[int, str], Reply]


def json_reply(status: int, document: object, headers: dict[str, str] | None = None) -> Reply:
    body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return Reply(status, body, {"Content-Type": "application/json", **(headers or {})})


def retry_after(seconds: float) -> dict[str, str]:
    """The header a rate-limited or unavailable provider answers with."""
    return {"Retry-After": f"{seconds:g}"}
