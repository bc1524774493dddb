"""Signed JSON webhooks to subscribers' own endpoints, with a pooled aiohttp session.

Every delivery is signed (rule of the house: never send unsigned). The scheme is Stripe's:
`X-Outage-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, so a receiver can reject
both forgeries and replays; `sign` and `verify` are public for receivers and tests.

In sandbox mode a URL outside the sandbox is delivered to the sandbox's receiver instead
(`/hooks/<host><path>`), so a demo never calls a real customer endpoint.

Only public addresses are connected to (dispatcher/egress.py, against SSRF): a literal address
in the URL is checked before the request, and a name through `GuardedResolver`, the session's
DNS resolver, which hands the connector only the addresses it checked, so the address checked
is the address connected to. A refusal is a permanent failure that says why. Of a receiver's
answer only the status code and a short excerpt, stripped of markup, control characters and
anything that looks like a secret or an address, are kept: the answer of an internal endpoint
is not the operator's to read, and a receiver's page is not a log line.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import socket
import time
from functools import lru_cache
from typing import Self
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

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
    printable,
)
from channels.transport import sandbox_base
from dispatcher.egress import AddressRefused, EgressPolicy, literal_address
from dispatcher.logs import redact
from dispatcher.models import FailureReason, SuppressionReason
from dispatcher.settings import Settings

USER_AGENT = "outage-dispatcher"
SIGNATURE_HEADER = "X-Outage-Signature"
DELIVERY_HEADER = "X-Outage-Delivery"
ANSWER_BYTES = 2048  # read of a receiver's answer: enough for an excerpt of a refusal
EXCERPT_CHARS = 100  # kept of it
_MARKUP = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.IGNORECASE | re.DOTALL)


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


def answer_excerpt(answer: str) -> str:
    """What is kept of a receiver's answer: its text without markup or control characters,
    with secrets and addresses masked (dispatcher/logs.py `redact`), cut short."""
    text = redact(printable(_MARKUP.sub(" ", answer)))
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, keeping only the addresses `policy` allows: the connector connects
    to what `resolve` returns, so a name cannot be checked at one address and reached at
    another. None allowed: `AddressRefused`, which aiohttp raises as ClientConnectorDNSError."""

    def __init__(self, policy: EgressPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if self._policy.allows_host(host):
            return found
        addresses = [(result, literal_address(result["host"])) for result in found]
        kept = [
            result
            for result, address in addresses
            if address is not None and self._policy.refused_kind(address) is None
        ]
        if not kept:
            why = self._policy.resolved_refusal(host, [a for _, a in addresses if a is not None])
            raise AddressRefused(why or f"{host} resolves to no usable address")
        return kept

    async def close(self) -> None:
        await self._inner.close()


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
        policy: EgressPolicy | None = None,
        patience_s: float | None = PATIENCE_S,
    ) -> None:
        super().__init__(retry, concurrency)
        self._session = session
        self._sandbox_url = sandbox_url
        self._policy = policy or EgressPolicy()
        self._literal_refusal = lru_cache(maxsize=4096)(self._refusal_of_literal)
        self.patience_s = patience_s

    @classmethod
    def from_settings(cls, settings: Settings, retry: RetryPolicy) -> Self:
        """One pooled session per adapter, resolving through the policy's guard (redirects are
        refused per request: a redirect could leak the payload, and lead anywhere). In sandbox
        mode every request goes to the sandbox, whose own host is allowed."""
        sandbox = sandbox_base(settings)
        policy = EgressPolicy.from_settings(settings)
        if sandbox is not None:
            policy = policy.with_host(urlsplit(sandbox).hostname)
        session = aio.LoopSession(
            settings.webhook_concurrency,
            settings.webhook_timeout_s,
            {"User-Agent": USER_AGENT},
            resolver=lambda: GuardedResolver(policy),
        )
        patience = min(PATIENCE_S, settings.webhook_timeout_s / 2)
        return cls(session, retry, settings.webhook_concurrency, sandbox, policy, patience)

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
        target = self._target(message.to)
        self._check_literal(target)
        try:
            async with self._session.get().post(
                target, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                # Bounded: a receiver cannot make us hold a huge answer. A short one is read
                # to its end, which lets the connection be used again.
                answer = await response.content.read(ANSWER_BYTES)
                answer_headers = response.headers
        except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:
            raise PermanentError(self.name, "not an http(s) URL") from exc
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors too
            raise TransientError(
                self.name,
                "the endpoint did not answer in time",
                failure_reason=FailureReason.TIMEOUT,
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, AddressRefused):
                raise PermanentError(self.name, f"not sent: {exc.os_error}") from exc
            raise TransientError(self.name, _unreachable(exc)) from exc
        except aiohttp.ClientError as exc:
            raise TransientError(
                self.name, _unreachable(exc), ambiguous=aio.may_have_arrived(exc)
            ) from exc
        if 200 <= status < 300:
            return answer_headers.get("X-Request-Id") or f"http-{status}"
        excerpt = answer_excerpt(answer.decode("utf-8", errors="replace"))
        if status == 410:
            raise PermanentError(
                self.name,
                "endpoint gone",
                status_code=410,
                response_excerpt=excerpt,
                suppress=SuppressionReason.GONE,
            )
        raise error_for_status(
            self.name,
            status,
            "the endpoint refused the delivery",
            response_excerpt=excerpt,
            retry_after_s=parse_retry_after(answer_headers.get("Retry-After")),
        )

    def _check_literal(self, url: str) -> None:
        """A URL naming an address (aiohttp does not resolve those) is checked here."""
        try:
            host = urlsplit(url).hostname or ""
        except ValueError as exc:  # e.g. an unclosed IPv6 bracket
            raise PermanentError(self.name, "not an http(s) URL") from exc
        why = self._literal_refusal(host)
        if why is not None:
            raise PermanentError(self.name, f"not sent: {why}")

    def _refusal_of_literal(self, host: str) -> str | None:
        """Why a host named by its address may not be called (None: a name, or allowed); the
        same for every message to that host, so it is asked once per host (`_literal_refusal`)."""
        address = literal_address(host)
        if address is None or self._policy.allows_host(host):
            return None
        return self._policy.refusal(address)

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


def _unreachable(exc: aiohttp.ClientError) -> str:
    return f"could not reach the endpoint ({type(exc).__name__})"
