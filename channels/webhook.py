"""Signed JSON webhooks to subscribers' own endpoints, with a pooled aiohttp session.

Every delivery is signed (rule of the house: never send unsigned). The scheme is Stripe's:
`X-Outage-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, so a receiver can reject
both forgeries and replays; `sign` and `verify` are public for receivers and tests.

In sandbox mode a URL outside the sandbox is delivered to the sandbox's receiver instead
(`/hooks/<host><path>`), so a demo never calls a real customer endpoint.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Self
from urllib.parse import urlsplit

import aiohttp

from channels import aio
from channels.base import (
    Channel,
    Limits,
    Message,
    PermanentError,
    RetryPolicy,
    TransientError,
    error_for_status,
    parse_retry_after,
)
from channels.transport import sandbox_base
from dispatcher.models import FailureReason, SuppressionReason
from dispatcher.settings import Settings

USER_AGENT = "outage-dispatcher"
SIGNATURE_HEADER = "X-Outage-Signature"
DELIVERY_HEADER = "X-Outage-Delivery"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value for `body` sent at `timestamp`: "t=<ts>,v1=<hex>"."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify(
    secret: str,
    header_value: str,
    body: bytes,
    tolerance_s: float = 300,
    now: float | None = None,
) -> bool:
    """Whether `header_value` signs `body` with `secret` within `tolerance_s` of `now`.

    Any of several v1 values may match (a sender rotating secrets sends one per secret).
    Comparison is constant-time.
    """
    timestamp: int | None = None
    candidates: list[str] = []
    for item in header_value.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).partition(",v1=")[2]
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


PATIENCE_S = 1.0  # a send waits this long for its slowest receivers, then goes on without them


class WebhookChannel(Channel):
    """POSTs a message's payload (or {"text": ...}) as compact JSON to its URL.

    Every receiver is a server of its own, and one of them hanging must cost only its own
    delivery: requests time out after `webhook_timeout_s` (5 s; retried through the queue, not
    inside the send), many are in flight at once (`webhook_concurrency`, 64), and a batch does
    not wait for its slowest answers beyond `patience_s` (the core records them as they come)."""

    name = "webhook"
    address_field = "webhook"
    limits = Limits()
    max_batch = 100

    def __init__(
        self,
        session: aio.LoopSession,
        retry: RetryPolicy,
        concurrency: int = 8,
        sandbox_url: str | None = None,
        patience_s: float | None = PATIENCE_S,
    ) -> None:
        super().__init__(retry, concurrency)
        self._session = session
        self._sandbox_url = sandbox_url
        self.patience_s = patience_s

    @classmethod
    def from_settings(cls, settings: Settings, retry: RetryPolicy) -> Self:
        """One pooled session per adapter (redirects are refused per request: a redirect could
        leak the payload)."""
        session = aio.LoopSession(
            settings.webhook_concurrency, settings.webhook_timeout_s, {"User-Agent": USER_AGENT}
        )
        patience = min(PATIENCE_S, settings.webhook_timeout_s / 2)
        return cls(session, retry, settings.webhook_concurrency, sandbox_base(settings), patience)

    async def send_one_async(self, message: Message) -> str:
        """Deliver one signed POST; the id is the receiver's X-Request-Id, if it gives one."""
        if not message.secret:
            raise PermanentError(self.name, "no signing secret: refusing to send unsigned")
        payload = message.payload if message.payload is not None else {"text": message.text}
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(message.secret, int(time.time()), body),
            DELIVERY_HEADER: str(message.key),
        }
        try:
            async with self._session.get().post(
                self._target(message.to), data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                text = await response.text(errors="replace")
                answer_headers = response.headers
        except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:
            raise PermanentError(self.name, "not an http(s) URL") from exc
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors too
            raise TransientError(
                self.name,
                "the endpoint did not answer in time",
                failure_reason=FailureReason.TIMEOUT,
            ) from exc
        except aiohttp.ClientError as exc:
            reason = f"could not reach the endpoint ({type(exc).__name__})"
            raise TransientError(self.name, reason, ambiguous=aio.may_have_arrived(exc)) from exc
        if 200 <= status < 300:
            return answer_headers.get("X-Request-Id") or f"http-{status}"
        if status == 410:
            raise PermanentError(
                self.name,
                "endpoint gone",
                status_code=410,
                response_excerpt=text,
                suppress=SuppressionReason.GONE,
            )
        raise error_for_status(
            self.name,
            status,
            "the endpoint refused the delivery",
            response_excerpt=text,
            retry_after_s=parse_retry_after(answer_headers.get("Retry-After")),
        )

    def _target(self, url: str) -> str:
        """The URL to call: unchanged in live mode; the sandbox's receiver in sandbox mode."""
        if self._sandbox_url is None or url.startswith(self._sandbox_url + "/"):
            return url
        parts = urlsplit(url)
        host = parts.hostname or "unknown"
        if parts.port:
            host = f"{host}:{parts.port}"
        query = f"?{parts.query}" if parts.query else ""
        return f"{self._sandbox_url}/hooks/{host}{parts.path or '/'}{query}"

    def close(self) -> None:
        self._session.close()
