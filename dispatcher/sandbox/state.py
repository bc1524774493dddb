"""What the sandbox remembers between requests: the messages it accepted, its request counters,
and the failures a test or an operator injected; one lock guards it all.

The fake providers read and write it while answering; `Sandbox` (server.py) extends it with the
HTTP server, so its public methods here are the sandbox's Python API for tests and the bench.
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message as HeaderMap
from http import HTTPStatus
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from dispatcher.sandbox.replies import ErrorShape, Reply, retry_after

FaultKind = Literal["429", "500", "503", "timeout"]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
CHANNELS = ("sms", "email", "social", "webhook")
REDACTED_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


@dataclass
class _Fault:
    kind: str
    remaining: int
    channel: str | None
    retry_after_s: float | None
    until: float | None = None  # an outage: every request fails until then (time.monotonic)


def _recipient_key(to: str) -> str:
    """How a recipient is known to the fake providers: a webhook by the path it is received
    at, `/hooks/…` (a customer's URL is received at `/hooks/<host><path>`, as the webhook
    channel sends it in sandbox mode)."""
    if to.startswith(("http://", "https://")):
        parts = urlsplit(to)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        host = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
        to = path if path.startswith("/hooks/") else f"/hooks/{host}{path or '/'}"
    return to.lower()


def check_channel(channel: object) -> None:
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {', '.join(CHANNELS)}")


def new_record(
    channel: str,
    to: str | None,
    headers: HeaderMap,
    provider_id: str,
    *,
    subject: str | None = None,
    body: str | None = None,
    html: str | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A recorded message, its request headers kept but credentials redacted."""
    safe_headers = {
        name: "[redacted]" if name.lower() in REDACTED_HEADERS else value
        for name, value in headers.items()
    }
    return {
        "id": uuid.uuid4().hex,
        "channel": channel,
        "to": to,
        "subject": subject,
        "body": body,
        "html": html,
        "headers": safe_headers,
        "at": datetime.now(UTC).isoformat(),
        "provider_id": provider_id,
        "meta": meta or {},
    }


class SandboxState:
    """Recorded messages, statistics and injected failures, safe to use from any thread.

    `clear()` forgets recorded messages, statistics and posted tweets; `clear_faults()` forgets
    injected failures and failing recipients. Both are safe to call while requests are in flight.
    """

    def __init__(self, latency_ms: float = 0, timeout_hold_s: float = 5.0) -> None:
        self.timeout_hold_s = timeout_hold_s
        self._latency_ms = float(latency_ms)
        self._lock = threading.Lock()
        self._messages: list[dict[str, Any]] = []
        self._faults: list[_Fault] = []
        self._failing: set[str] = set()
        self._delays: dict[str, float] = {}  # recipient -> seconds it takes to answer
        self._posted_texts: set[str] = set()
        self._requests = dict.fromkeys(CHANNELS, 0)
        self._injected = dict.fromkeys(FAULT_KINDS, 0)
        # (monotonic time on arrival, channel, status, the sender's time of departure if said)
        self._request_log: list[tuple[float, str, int, float | None]] = []
        self._in_flight = 0  # provider requests being answered now, and the most at once
        self._max_in_flight = 0
        self._twilio_tokens: dict[str, str] = {}  # account SID -> the token it sent with
        self._tweet_seq = 0
        self._stopping = threading.Event()  # set on stop: wakes requests held by latency or faults

    # -- Python API --------------------------------------------------------------------------

    def messages(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Recorded messages (copies), oldest first, optionally of one channel."""
        if channel is not None:
            check_channel(channel)
        with self._lock:
            return [copy.deepcopy(m) for m in self._messages if channel in (None, m["channel"])]

    def clear(self) -> None:
        """Forget recorded messages, request statistics and the posted-tweet history."""
        with self._lock:
            self._messages.clear()
            self._posted_texts.clear()
            self._requests = dict.fromkeys(CHANNELS, 0)
            self._injected = dict.fromkeys(FAULT_KINDS, 0)
            self._request_log.clear()
            self._max_in_flight = self._in_flight

    def inject_recipient_failure(self, to: str) -> None:
        """From now on, `to` (a phone, an email, or a webhook URL or path) fails permanently."""
        with self._lock:
            self._failing.add(_recipient_key(to))

    def inject_recipient_delay(self, to: str, seconds: float) -> None:
        """From now on, a webhook receiver (its URL or path) takes `seconds` to answer: a slow
        one, or with a long delay one that hangs. 0 makes it answer at once again."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise ValueError("delay_s must be a number of seconds, not negative")
        with self._lock:
            self._delays[_recipient_key(to)] = float(seconds)

    def inject_failures(
        self,
        count: int,
        kind: FaultKind,
        channel: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        """The next `count` provider requests (of `channel`, or any) fail this way, then recover.

        "timeout" holds the request `timeout_hold_s` seconds and then answers 504, so a client
        with a shorter timeout sees a timeout. `retry_after_s` adds a Retry-After header (and,
        for X, x-rate-limit-reset).
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError("count must be a positive integer")
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FAULT_KINDS)}")
        if channel is not None:
            check_channel(channel)
        if retry_after_s is not None and retry_after_s < 0:
            raise ValueError("retry_after_s must not be negative")
        with self._lock:
            self._faults.append(_Fault(kind, count, channel, retry_after_s))

    def clear_faults(self) -> None:
        """Forget pending injected failures, failing and slow recipients."""
        with self._lock:
            self._faults.clear()
            self._failing.clear()
            self._delays.clear()

    def inject_outage(
        self,
        kind: FaultKind,
        for_s: float,
        channel: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        """Every provider request (of `channel`, or any) fails this way for `for_s` seconds: a
        provider that is down for a while, however often it is asked."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FAULT_KINDS)}")
        if isinstance(for_s, bool) or not isinstance(for_s, int | float) or for_s <= 0:
            raise ValueError("for_s must be a positive number of seconds")
        if channel is not None:
            check_channel(channel)
        with self._lock:
            until = time.monotonic() + for_s
            self._faults.append(_Fault(kind, 0, channel, retry_after_s, until))

    def request_log(self, channel: str | None = None) -> list[tuple[float, int]]:
        """(time.monotonic() on arrival, HTTP status answered) of every provider request."""
        with self._lock:
            log = self._request_log
            return [(at, status) for at, ch, status, _ in log if channel in (None, ch)]

    def departures(self, channel: str | None = None) -> list[float]:
        """When each provider request left its sender (Unix time, as the sender stamped it in
        sandbox mode: the SMS adapter does), oldest first: the rate as the sender sent it."""
        with self._lock:
            stamps = [
                sent for _, ch, _, sent in self._request_log if sent and channel in (None, ch)
            ]
        return sorted(stamps)

    def twilio_auth_token(self, account_sid: str) -> str | None:
        """The token an account last sent with: Twilio signs status callbacks with it."""
        with self._lock:
            return self._twilio_tokens.get(account_sid)

    def set_latency(self, ms: float) -> None:
        """Delay every provider answer by `ms` milliseconds (the control API is never delayed)."""
        if ms < 0:
            raise ValueError("latency must not be negative")
        with self._lock:
            self._latency_ms = float(ms)

    def stats(self) -> dict[str, Any]:
        """Requests per channel, failures injected per kind, messages recorded per channel, and
        the provider requests it is answering now and the most at once (a sender's concurrency
        cap)."""
        with self._lock:
            recorded = dict.fromkeys(CHANNELS, 0)
            for message in self._messages:
                recorded[message["channel"]] += 1
            return {
                "requests": dict(self._requests),
                "failures_injected": dict(self._injected),
                "recorded": recorded,
                "pending_faults": sum(max(f.remaining, 0) for f in self._faults),
                "failing_recipients": len(self._failing),
                "latency_ms": self._latency_ms,
                "in_flight": self._in_flight,
                "max_in_flight": self._max_in_flight,
            }

    # -- for the fake providers --------------------------------------------------------------

    def take_fault(
        self,
        channel: str,
        error: ErrorShape,
        retry_headers: Callable[[float], dict[str, str]] = retry_after,
    ) -> Reply | None:
        """Consume the first pending fault that applies to `channel`, and answer as it says, in
        the provider's `error` shape with its `retry_headers` when the fault has a Retry-After."""
        with self._lock:
            now = time.monotonic()
            self._faults = [f for f in self._faults if f.until is None or f.until > now]
            fault = next((f for f in self._faults if f.channel in (None, channel)), None)
            if fault is None:
                return None
            fault.remaining -= 1
            if fault.remaining == 0 and fault.until is None:
                self._faults.remove(fault)
            self._injected[fault.kind] += 1
            kind, retry_after_s = fault.kind, fault.retry_after_s
        if kind == "timeout":
            self.hold(self.timeout_hold_s)
            return error(504, "Gateway timeout (injected)")
        reply = error(int(kind), f"{HTTPStatus(int(kind)).phrase} (injected)")
        if retry_after_s is not None:
            reply.headers.update(retry_headers(retry_after_s))
        return reply

    def hold(self, seconds: float) -> None:
        """Wait `seconds`, or less if the sandbox stops meanwhile."""
        self._stopping.wait(seconds)

    def fails(self, recipient: str) -> bool:
        """Whether `recipient` was made to fail for good (`inject_recipient_failure`)."""
        with self._lock:
            return recipient.lower() in self._failing

    def delay_of(self, recipient: str) -> float:
        """How long `recipient` was made to take to answer (`inject_recipient_delay`)."""
        with self._lock:
            return self._delays.get(recipient.lower(), 0.0)

    def record(self, records: list[dict[str, Any]]) -> None:
        with self._lock:
            self._messages.extend(records)

    def remember_twilio_token(self, account_sid: str, token: str) -> None:
        """Kept in memory only (never recorded), to sign this account's status callbacks."""
        with self._lock:
            self._twilio_tokens[account_sid] = token

    def claim_tweet(self, text: str) -> str | None:
        """A new tweet id for `text`, or None if it was posted before (X refuses duplicates)."""
        with self._lock:
            if text in self._posted_texts:
                return None
            self._posted_texts.add(text)
            self._tweet_seq += 1
            return str(1_800_000_000_000_000_000 + self._tweet_seq)

    # -- for the server ----------------------------------------------------------------------

    def _arrive(self, channel: str) -> float:
        """Count a provider request now being answered; the latency to add to it, in seconds."""
        with self._lock:
            self._requests[channel] += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            return self._latency_ms / 1000

    def _depart(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _log_request(
        self, arrived: float, channel: str, status: int, sent_at: float | None = None
    ) -> None:
        with self._lock:
            self._request_log.append((arrived, channel, status, sent_at))
