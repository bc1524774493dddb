"""A local stand-in for Twilio, SendGrid, X and webhook receivers, on one port.

Why it exists: the demo, the tests and the benchmarks must exercise the *real* provider SDKs (their
URL building, auth, error parsing) without an account or the network. The adapters point the SDKs
here (see `channels/transport.py`); the sandbox answers in each provider's own shapes, records
every accepted message, and lets a test or an operator inject the failures that matter to us:
rate limits, server errors, timeouts and recipients that fail for good.

Routes (all on one port)::

    POST /2010-04-01/Accounts/{sid}/Messages.json   Twilio: form fields, basic auth
    POST /v3/mail/send                              SendGrid: v3 JSON, Bearer auth
    POST /2/tweets                                  X: JSON {"text"}, any Authorization
    POST /hooks/{name...}                           a webhook receiver: any JSON body
    GET|DELETE /sandbox/messages   POST|DELETE /sandbox/faults   POST /sandbox/latency
    GET /sandbox/stats   GET /sandbox/health        control, for tests and the CLI
    POST /sandbox/receipts                          a signed Twilio status callback or SendGrid
                                                    event about a message, POSTed to the app
    GET /2010-04-01/Accounts/{sid}.json  GET /v3/scopes  GET /2/users/me
                                                    credential checks (`outage doctor`)

Every request body is read before it is answered, and every answer has a Content-Length, so
keep-alive connections stay in step however a request ends.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import json
import logging
import math
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message as HeaderMap
from email.utils import format_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self, get_args
from urllib.parse import parse_qs, urlsplit

import httpx

log = logging.getLogger(__name__)

FaultKind = Literal["429", "500", "503", "timeout"]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
CHANNELS = ("sms", "email", "social", "webhook")
MAX_BODY_BYTES = 10 * 1024 * 1024
REDACTED_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})

_TWILIO_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<sid>[^/]+)/Messages\.json$")
_TWILIO_ACCOUNT = re.compile(r"^/2010-04-01/Accounts/(?P<sid>[^/]+)\.json$")
_HOOK_PATH = re.compile(r"^/hooks/.+")
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_URL = re.compile(r"https?://\S+")

# GSM 03.38: the basic set counts 1 septet, the extension set 2; anything else forces UCS-2.
_GSM_BASIC = frozenset(
    "@\u00a3$\u00a5\u00e8\u00e9\u00f9\u00ec\u00f2\u00c7\n\u00d8\u00f8\r\u00c5\u00e5"
    "\u0394_\u03a6\u0393\u039b\u03a9\u03a0\u03a8\u03a3\u0398\u039e\u00c6\u00e6\u00df\u00c9"
    " !\"#\u00a4%&'()*+,-./0123456789:;<=>?\u00a1ABCDEFGHIJKLMNOPQRSTUVWXYZ\u00c4\u00d6\u00d1"
    "\u00dc\u00a7\u00bfabcdefghijklmnopqrstuvwxyz\u00e4\u00f6\u00f1\u00fc\u00e0"
)
_GSM_EXTENDED = frozenset("^{}\\[~]|\u20ac\f")

# Twilio's error code for each status we produce ourselves.
_TWILIO_CODES = {401: 20003, 404: 20404, 405: 20004, 429: 20429, 500: 20500, 503: 20503, 504: 20504}


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Fault:
    kind: str
    remaining: int
    channel: str | None
    retry_after_s: float | None
    until: float | None = None  # an outage: every request fails until then (time.monotonic)


def _json(status: int, document: object, headers: dict[str, str] | None = None) -> _Reply:
    body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return _Reply(status, body, {"Content-Type": "application/json", **(headers or {})})


def _twilio_error(status: int, message: str, code: int | None = None) -> _Reply:
    code = code or _TWILIO_CODES.get(status, 20001)
    return _json(
        status,
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
    )


def _sendgrid_error(status: int, errors: Iterable[tuple[str, str | None]]) -> _Reply:
    document = [{"message": message, "field": field, "help": None} for message, field in errors]
    return _json(status, {"errors": document})


def _x_error(status: int, detail: str, **extra: object) -> _Reply:
    title = HTTPStatus(status).phrase
    return _json(
        status, {"detail": detail, "type": "about:blank", "title": title, "status": status, **extra}
    )


def _hook_error(status: int, message: str) -> _Reply:
    return _json(status, {"ok": False, "error": message})


def _error(channel: str | None, status: int, message: str) -> _Reply:
    """An error in the shape the caller's SDK expects, so it parses it like the real thing."""
    if channel == "sms":
        return _twilio_error(status, message)
    if channel == "email":
        return _sendgrid_error(status, [(message, None)])
    if channel == "social":
        return _x_error(status, message)
    return _hook_error(status, message)


def sms_segments(text: str) -> int:
    """How many SMS parts Twilio would bill: GSM-7 fits 160 (153 when split), UCS-2 70 (67)."""
    if all(char in _GSM_BASIC or char in _GSM_EXTENDED for char in text):
        units = sum(2 if char in _GSM_EXTENDED else 1 for char in text)
        single, part = 160, 153
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, part = 70, 67
    return 1 if units <= single else math.ceil(units / part)


def weighted_length(text: str) -> int:
    """X's weighted length (twitter-text v3): a link counts 23, CJK and emoji count 2."""
    without_links = _URL.sub("", text)
    links = len(_URL.findall(text))
    light = (range(0, 4352), range(8192, 8206), range(8208, 8224), range(8242, 8248))
    weight = sum(1 if any(ord(char) in span for span in light) else 2 for char in without_links)
    return weight + 23 * links


def _now() -> datetime:
    return datetime.now(UTC)


class Sandbox:
    """The provider sandbox: start it in-process (tests) or serve it in the foreground (the CLI).

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
        self._posted_texts: set[str] = set()
        self._requests = dict.fromkeys(CHANNELS, 0)
        self._injected = dict.fromkeys(FAULT_KINDS, 0)
        self._request_log: list[tuple[float, str, int]] = []  # (monotonic time, channel, status)
        self._in_flight = 0  # provider requests being answered now, and the most at once
        self._max_in_flight = 0
        self._twilio_tokens: dict[str, str] = {}  # account SID -> the token it sent with
        self._tweet_seq = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None
        self._stopping = threading.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in a background daemon thread; returns the base URL (port 0 picks a free one)."""
        server = self._bind(host, port)
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="sandbox", daemon=True
        )
        self._thread.start()
        return self.url

    def serve_forever(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve in the calling thread until Ctrl-C or `stop()` from another thread."""
        server = self._bind(host, port)
        try:
            server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop serving, wake requests held by a latency or timeout fault, close connections."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server, self._thread, self._url = None, None, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:8025 (no trailing slash)."""
        if self._url is None:
            raise RuntimeError("the sandbox is not running; call start() first")
        return self._url

    def __enter__(self) -> Self:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _bind(self, host: str, port: int) -> _Server:
        with self._lock:
            if self._server is not None:
                raise RuntimeError("the sandbox is already running")
            self._stopping = threading.Event()
            server = _Server((host, port), self)
            public_host = "127.0.0.1" if host in ("", "0.0.0.0") else host
            self._server = server
            self._url = f"http://{public_host}:{server.server_address[1]}"
            return server

    # -- Python API --------------------------------------------------------------------------

    def messages(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Recorded messages (copies), oldest first, optionally of one channel."""
        if channel is not None:
            _check_channel(channel)
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
        if to.startswith(("http://", "https://")):
            parts = urlsplit(to)
            to = parts.path + (f"?{parts.query}" if parts.query else "")
        with self._lock:
            self._failing.add(to.lower())

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
            _check_channel(channel)
        if retry_after_s is not None and retry_after_s < 0:
            raise ValueError("retry_after_s must not be negative")
        with self._lock:
            self._faults.append(_Fault(kind, count, channel, retry_after_s))

    def clear_faults(self) -> None:
        """Forget pending injected failures and failing recipients."""
        with self._lock:
            self._faults.clear()
            self._failing.clear()

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
            _check_channel(channel)
        with self._lock:
            until = time.monotonic() + for_s
            self._faults.append(_Fault(kind, 0, channel, retry_after_s, until))

    def request_log(self, channel: str | None = None) -> list[tuple[float, int]]:
        """(time.monotonic() on arrival, HTTP status answered) of every provider request."""
        with self._lock:
            return [(at, status) for at, ch, status in self._request_log if channel in (None, ch)]

    def twilio_auth_token(self, account_sid: str) -> str | None:
        """The token an account last sent with: Twilio signs status callbacks with it."""
        with self._lock:
            return self._twilio_tokens.get(account_sid)

    def emit_receipt(
        self,
        channel: str,
        to: str,
        status: str,
        url: str | None = None,
        error_code: int | None = None,
    ) -> int:
        """POST a signed delivery receipt for the latest message to `to`, as the provider would:
        for "sms" a Twilio status callback to the message's StatusCallback, for "email" a
        SendGrid event (`status` is its event name) to `url`. The receiver's HTTP status."""
        from dispatcher.sandbox import receipts

        if channel == "sms":
            return receipts.twilio_status(self, to, status, error_code=error_code).post()
        if channel == "email" and url:
            return receipts.sendgrid_event(self, url, to, status).post()
        raise ValueError('receipts are for channel "sms", or "email" with a "url"')

    def set_latency(self, ms: float) -> None:
        """Delay every provider answer by `ms` milliseconds (the control API is never delayed)."""
        if ms < 0:
            raise ValueError("latency must not be negative")
        with self._lock:
            self._latency_ms = float(ms)

    def stats(self) -> dict[str, Any]:
        """Requests per channel, failures injected per kind, messages recorded per channel, and
        the most provider requests it was answering at once (a sender's concurrency cap)."""
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
                "max_in_flight": self._max_in_flight,
            }

    # -- dispatch (called by the request handler) ---------------------------------------------

    def _dispatch(self, method: str, raw_path: str, headers: HeaderMap, body: bytes) -> _Reply:
        parts = urlsplit(raw_path)
        path = parts.path
        if path.startswith("/sandbox/"):
            return self._control(method, path, parse_qs(parts.query), body)
        if method == "GET" and (whoami := self._whoami(path, headers)) is not None:
            return whoami
        route = self._route(path)
        if route is None:
            return _json(404, {"error": f"no route for {method} {path}"})
        channel, handler = route
        if method != "POST":
            return _error(channel, 405, f"{method} is not allowed on {path}")
        with self._lock:
            self._requests[channel] += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            latency_s = self._latency_ms / 1000
        arrived = time.monotonic()
        try:
            if latency_s:
                self._stopping.wait(latency_s)
            full_path = path + (f"?{parts.query}" if parts.query else "")
            reply = handler(full_path, headers, body)
        finally:
            with self._lock:
                self._in_flight -= 1
        with self._lock:
            self._request_log.append((arrived, channel, reply.status))
        return reply

    def _route(self, path: str) -> tuple[str, Callable[[str, HeaderMap, bytes], _Reply]] | None:
        if _TWILIO_PATH.match(path):
            return "sms", self._twilio
        if path == "/v3/mail/send":
            return "email", self._sendgrid
        if path == "/2/tweets":
            return "social", self._tweet
        if _HOOK_PATH.match(path):
            return "webhook", self._hook
        return None

    def _whoami(self, path: str, headers: HeaderMap) -> _Reply | None:
        """The providers' harmless authenticated GETs; injected faults apply to them too."""
        auth = (headers.get("Authorization") or "").strip()
        if match := _TWILIO_ACCOUNT.match(path):
            if not _has_basic_auth(auth):
                return _twilio_error(401, "Authenticate")
            account = {"sid": match["sid"], "friendly_name": "Sandbox", "status": "active"}
            return self._take_fault("sms") or _json(200, account)
        if path == "/v3/scopes":
            if not auth.startswith("Bearer "):
                return _sendgrid_error(401, [("authorization required", None)])
            return self._take_fault("email") or _json(200, {"scopes": ["mail.send"]})
        if path == "/2/users/me":
            if not auth:
                return _x_error(401, "Unauthorized")
            user = {"data": {"id": "1", "name": "Sandbox", "username": "sandbox"}}
            return self._take_fault("social") or _json(200, user)
        return None

    def _take_fault(self, channel: str) -> _Reply | None:
        """Consume the first pending fault that applies to `channel`, and answer as it says."""
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
            self._stopping.wait(self.timeout_hold_s)
            return _error(channel, 504, "Gateway timeout (injected)")
        reply = _error(channel, int(kind), f"{HTTPStatus(int(kind)).phrase} (injected)")
        if retry_after_s is not None:
            reply.headers["Retry-After"] = f"{retry_after_s:g}"
            if channel == "social":
                reply.headers["x-rate-limit-reset"] = str(math.ceil(time.time() + retry_after_s))
                reply.headers["x-rate-limit-remaining"] = "0"
        return reply

    def _remember_twilio_token(self, account_sid: str, authorization: str) -> None:
        """Kept in memory only (never recorded), to sign this account's status callbacks."""
        try:
            _, _, token = base64.b64decode(authorization[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return
        with self._lock:
            self._twilio_tokens[account_sid] = token

    def _fails(self, recipient: str) -> bool:
        with self._lock:
            return recipient.lower() in self._failing

    def _record(self, records: list[dict[str, Any]]) -> None:
        with self._lock:
            self._messages.extend(records)

    @staticmethod
    def _new_record(
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
            "at": _now().isoformat(),
            "provider_id": provider_id,
            "meta": meta or {},
        }

    # -- Twilio ------------------------------------------------------------------------------

    def _twilio(self, path: str, headers: HeaderMap, body: bytes) -> _Reply:
        if not _has_basic_auth(headers.get("Authorization")):
            return _twilio_error(401, "Authenticate")
        if (fault := self._take_fault("sms")) is not None:
            return fault
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)

        def field(name: str) -> str:
            return form.get(name, [""])[0]

        to, sender, service = field("To"), field("From"), field("MessagingServiceSid")
        text, callback = field("Body"), field("StatusCallback")
        if not to:
            return _twilio_error(400, "A 'To' phone number is required.", 21604)
        if not _E164.match(to):
            return _twilio_error(400, f"The 'To' number {to} is not a valid phone number.", 21211)
        if not (sender or service):
            return _twilio_error(400, "A 'From' phone number is required.", 21603)
        if not text:
            return _twilio_error(400, "Message body is required.", 21602)
        if len(text) > 1600:
            return _twilio_error(
                400, "The concatenated message body exceeds the 1600 character limit.", 21617
            )
        if self._fails(to):  # as Twilio answers for a number that cannot receive SMS
            return _twilio_error(400, f"The 'To' number {to} is not a valid phone number.", 21211)
        match = _TWILIO_PATH.match(urlsplit(path).path)
        account_sid = match["sid"] if match else ""
        self._remember_twilio_token(account_sid, headers.get("Authorization") or "")
        sid = "SM" + uuid.uuid4().hex
        segments = sms_segments(text)
        now = format_datetime(_now())
        meta: dict[str, Any] = {
            "from": sender or None,
            "messaging_service_sid": service or None,
            "status_callback": callback or None,
            "num_segments": segments,
            "account_sid": account_sid,
        }
        self._record([self._new_record("sms", to, headers, sid, body=text, meta=meta)])
        base = f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}"
        return _json(
            201,
            {
                "account_sid": account_sid,
                "api_version": "2010-04-01",
                "body": text,
                "date_created": now,
                "date_sent": None,
                "date_updated": now,
                "direction": "outbound-api",
                "error_code": None,
                "error_message": None,
                "from": sender or None,
                "messaging_service_sid": service or None,
                "num_media": "0",
                "num_segments": str(segments),
                "price": None,
                "price_unit": "USD",
                "sid": sid,
                "status": "queued",
                "subresource_uris": {"media": f"{base}/Media.json"},
                "to": to,
                "uri": f"{base}.json",
            },
        )

    # -- SendGrid ----------------------------------------------------------------------------

    def _sendgrid(self, path: str, headers: HeaderMap, body: bytes) -> _Reply:
        auth = headers.get("Authorization") or ""
        if not auth.startswith("Bearer ") or not auth[len("Bearer ") :].strip():
            message = "The provided authorization grant is invalid, expired, or revoked"
            return _sendgrid_error(401, [(message, None)])
        if (fault := self._take_fault("email")) is not None:
            return fault
        try:
            document = json.loads(body)
        except ValueError:
            return _sendgrid_error(400, [("Bad Request", None)])
        problems = _mail_problems(document)
        if problems:
            return _sendgrid_error(400, problems)
        recipients = list(_mail_recipients(document))
        bad = [(f"{field}.email", email) for field, email, _ in recipients if self._fails(email)]
        if bad:
            return _sendgrid_error(400, [("Does not contain a valid address.", f) for f, _ in bad])
        message_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        content = {part["type"]: part["value"] for part in document.get("content") or []}
        top_headers = document.get("headers") or {}
        top_args = document.get("custom_args") or {}
        records = []
        for _, email, personalization in recipients:
            # SendGrid fills each personalization's placeholders into subject and content.
            fill = _substituter(personalization.get("substitutions") or {})
            meta = {
                "from": document["from"]["email"],
                "custom_args": {**top_args, **(personalization.get("custom_args") or {})},
                "mail_headers": {**top_headers, **(personalization.get("headers") or {})},
            }
            records.append(
                self._new_record(
                    "email",
                    email,
                    headers,
                    message_id,
                    subject=fill(personalization.get("subject") or document.get("subject")),
                    body=fill(content.get("text/plain")),
                    html=fill(content.get("text/html")),
                    meta=meta,
                )
            )
        self._record(records)
        return _Reply(202, b"", {"X-Message-Id": message_id})

    # -- X -----------------------------------------------------------------------------------

    def _tweet(self, path: str, headers: HeaderMap, body: bytes) -> _Reply:
        if not (headers.get("Authorization") or "").strip():
            return _x_error(401, "Unauthorized")
        if (fault := self._take_fault("social")) is not None:
            return fault
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        text = document.get("text") if isinstance(document, dict) else None
        if not isinstance(text, str) or not text.strip():
            return _invalid_tweet("The `text` field is required and must be a non-empty string.")
        if weighted_length(text) > 280:
            return _invalid_tweet("The text of your Tweet is too long (over 280 characters).")
        with self._lock:
            duplicate = text in self._posted_texts
            if not duplicate:
                self._posted_texts.add(text)
                self._tweet_seq += 1
                tweet_id = str(1_800_000_000_000_000_000 + self._tweet_seq)
        if duplicate:
            return _x_error(403, "You are not allowed to create a Tweet with duplicate content.")
        self._record([self._new_record("social", None, headers, tweet_id, body=text)])
        return _json(
            201, {"data": {"id": tweet_id, "text": text, "edit_history_tweet_ids": [tweet_id]}}
        )

    # -- webhook receiver --------------------------------------------------------------------

    def _hook(self, path: str, headers: HeaderMap, body: bytes) -> _Reply:
        if (fault := self._take_fault("webhook")) is not None:
            return fault
        try:
            text = body.decode("utf-8")
            json.loads(text)
        except ValueError:
            return _hook_error(400, "the body is not valid JSON")
        if self._fails(path):
            return _hook_error(410, "gone")
        record = self._new_record("webhook", path, headers, "", body=text)
        record["provider_id"] = record["id"]
        self._record([record])
        return _json(200, {"ok": True}, {"X-Request-Id": record["id"]})

    # -- control -----------------------------------------------------------------------------

    def _control(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> _Reply:
        routes: dict[tuple[str, str], Callable[[], _Reply]] = {
            ("GET", "/sandbox/health"): lambda: _json(200, {"ok": True, "channels": CHANNELS}),
            ("GET", "/sandbox/stats"): lambda: _json(200, self.stats()),
            ("GET", "/sandbox/messages"): lambda: _json(
                200, self.messages(query.get("channel", [None])[0])
            ),
            ("DELETE", "/sandbox/messages"): lambda: self._then_ok(self.clear),
            ("POST", "/sandbox/faults"): lambda: self._post_fault(_json_object(body)),
            ("DELETE", "/sandbox/faults"): lambda: self._then_ok(self.clear_faults),
            ("POST", "/sandbox/latency"): lambda: self._post_latency(_json_object(body)),
            ("POST", "/sandbox/receipts"): lambda: self._post_receipt(_json_object(body)),
        }
        action = routes.get((method, path))
        if action is None:
            known = any(route_path == path for _, route_path in routes)
            status = 405 if known else 404
            return _json(status, {"error": f"no route for {method} {path}"})
        try:
            return action()
        except ValueError as exc:
            return _json(400, {"error": str(exc)})

    @staticmethod
    def _then_ok(action: Callable[[], None]) -> _Reply:
        action()
        return _json(200, {"ok": True})

    def _post_fault(self, document: dict[str, Any]) -> _Reply:
        recipient = document.get("recipient")
        if recipient is not None:
            if not isinstance(recipient, str) or not recipient:
                raise ValueError("recipient must be a non-empty string")
            self.inject_recipient_failure(recipient)
            return _json(200, {"ok": True})
        if "for_s" in document:
            retry_after = document.get("retry_after_s")
            if retry_after is not None and not isinstance(retry_after, int | float):
                raise ValueError("retry_after_s must be a number")
            kind: Any = str(document.get("kind"))  # checked by inject_outage
            self.inject_outage(kind, document["for_s"], document.get("channel"), retry_after)
            return _json(200, {"ok": True})
        if "count" not in document or "kind" not in document:
            raise ValueError('expected {"recipient": ...} or {"count": N, "kind": ...}')
        retry_after = document.get("retry_after_s")
        if retry_after is not None and not isinstance(retry_after, int | float):
            raise ValueError("retry_after_s must be a number")
        self.inject_failures(
            document["count"],
            str(document["kind"]),  # type: ignore[arg-type]  # checked by inject_failures
            document.get("channel"),
            retry_after,
        )
        return _json(200, {"ok": True})

    def _post_receipt(self, document: dict[str, Any]) -> _Reply:
        channel, to, status = (document.get(name) for name in ("channel", "to", "status"))
        if not (isinstance(channel, str) and isinstance(to, str) and isinstance(status, str)):
            raise ValueError('expected {"channel": "sms"|"email", "to": ..., "status": ...}')
        url, error_code = document.get("url"), document.get("error_code")
        if url is not None and not isinstance(url, str):
            raise ValueError("url must be a string")
        if error_code is not None and not isinstance(error_code, int):
            raise ValueError("error_code must be an integer")
        try:
            answered = self.emit_receipt(channel, to, status, url, error_code)
        except httpx.HTTPError as exc:
            return _json(502, {"error": f"the receiver did not answer ({type(exc).__name__})"})
        return _json(200, {"ok": True, "receiver_status": answered})

    def _post_latency(self, document: dict[str, Any]) -> _Reply:
        latency = document.get("latency_ms")
        if isinstance(latency, bool) or not isinstance(latency, int | float):
            raise ValueError("latency_ms must be a number")
        self.set_latency(latency)
        return _json(200, {"ok": True})


def _check_channel(channel: object) -> None:
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {', '.join(CHANNELS)}")


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body or b"null")
    except ValueError:
        raise ValueError("the body is not valid JSON") from None
    if not isinstance(document, dict):
        raise ValueError("the body must be a JSON object")
    return document


def _has_basic_auth(header: str | None) -> bool:
    if not header or not header.startswith("Basic "):
        return False
    try:
        user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return bool(user and password)


def _invalid_tweet(message: str) -> _Reply:
    return _json(
        400,
        {
            "errors": [{"parameters": {"text": []}, "message": message}],
            "title": "Invalid Request",
            "detail": "One or more parameters to your request was invalid.",
            "type": "https://api.twitter.com/2/problems/invalid-request",
        },
    )


def _mail_recipients(document: dict[str, Any]) -> Iterable[tuple[str, str, dict[str, Any]]]:
    """(field path, address, personalization) for every to/cc/bcc of a validated request."""
    for index, personalization in enumerate(document["personalizations"]):
        for kind in ("to", "cc", "bcc"):
            for position, recipient in enumerate(personalization.get(kind) or []):
                field = f"personalizations.{index}.{kind}.{position}"
                yield field, recipient["email"], personalization


def _substituter(substitutions: dict[str, Any]) -> Callable[[str | None], str | None]:
    """SendGrid's legacy substitutions: every key found in subject or content is replaced."""

    def fill(text: str | None) -> str | None:
        if text is None:
            return None
        for key, value in substitutions.items():
            text = text.replace(str(key), str(value))
        return text

    return fill


def _mail_problems(document: object) -> list[tuple[str, str | None]]:
    """SendGrid's v3 validation, the parts that catch adapter bugs: (message, field) pairs."""
    if not isinstance(document, dict):
        return [("The request body must be a JSON object.", None)]
    problems: list[tuple[str, str | None]] = []
    personalizations = document.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        message = (
            "The personalizations field is required and must have at least one personalization."
        )
        problems.append((message, "personalizations"))
        personalizations = []
    elif len(personalizations) > 1000:
        message = "The personalizations field cannot have more than 1000 personalizations."
        problems.append((message, "personalizations"))
    seen: set[str] = set()
    has_subject = bool(document.get("subject"))
    for index, personalization in enumerate(personalizations):
        field = f"personalizations.{index}"
        if not isinstance(personalization, dict):
            problems.append(("Each personalization must be an object.", field))
            continue
        if not isinstance(personalization.get("to"), list) or not personalization["to"]:
            message = (
                "The to array is required for all personalization objects, and must have at "
                "least one email object with a valid email address."
            )
            problems.append((message, f"{field}.to"))
        for kind in ("to", "cc", "bcc"):
            recipients = personalization.get(kind) or []
            if not isinstance(recipients, list):
                problems.append((f"The {kind} field must be an array.", f"{field}.{kind}"))
                continue
            for position, recipient in enumerate(recipients):
                email = recipient.get("email") if isinstance(recipient, dict) else None
                where = f"{field}.{kind}.{position}.email"
                if not isinstance(email, str) or not _EMAIL.match(email):
                    problems.append(("Does not contain a valid address.", where))
                elif email.lower() in seen:
                    problems.append((f"Each email address should be unique: {email}.", where))
                else:
                    seen.add(email.lower())
        if not (has_subject or personalization.get("subject")):
            message = (
                "The subject is required. You can get around this requirement if you use a "
                "template with a subject defined or if every personalization has a subject defined."
            )
            problems.append((message, "subject"))
    if len(seen) > 1000:
        problems.append(("The total number of recipients must be no more than 1000.", None))
    sender = document.get("from")
    if not isinstance(sender, dict):
        message = (
            "The from object must be provided for every email send. It is an object that "
            "requires the email parameter, but may also contain a name parameter."
        )
        problems.append((message, "from"))
    elif not isinstance(sender.get("email"), str) or not _EMAIL.match(sender["email"]):
        problems.append(("The from email does not contain a valid address.", "from.email"))
    problems.extend(_content_problems(document))
    return problems


def _content_problems(document: dict[str, Any]) -> list[tuple[str, str | None]]:
    if document.get("template_id"):
        return []
    content = document.get("content")
    valid = isinstance(content, list) and bool(content)
    valid = valid and all(
        isinstance(part, dict)
        and isinstance(part.get("type"), str)
        and isinstance(part.get("value"), str)
        and bool(part["value"])
        for part in content  # type: ignore[union-attr]  # a non-empty list, checked above
    )
    if not valid:
        message = (
            "Unless a valid template_id is provided, the content parameter is required. There "
            "must be at least one defined content block."
        )
        return [(message, "content")]
    types = [part["type"] for part in content]  # type: ignore[union-attr]
    if "text/plain" in types and types[0] != "text/plain":
        message = (
            "If present, text/plain content must be first, followed by text/html, followed by "
            "any other content."
        )
        return [(message, "content")]
    return []


class _Handler(BaseHTTPRequestHandler):
    """Reads the whole request, asks the Sandbox for a reply, writes it; never a traceback."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall
    server: _Server
    timeout = 60  # an idle keep-alive connection is closed after this many seconds

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def _handle(self) -> None:
        try:
            body = self._read_body()
        except ValueError as exc:
            self.close_connection = True
            self._write(_json(400, {"error": str(exc)}))
            return
        try:
            reply = self.server.sandbox._dispatch(self.command, self.path, self.headers, body)
        except Exception:  # a sandbox bug must still answer JSON, not drop the connection
            log.exception("sandbox failed on %s %s", self.command, self.path)
            reply = _json(500, {"error": "sandbox internal error"})
        self._write(reply)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length_header = self.headers.get("Content-Length") or "0"
        if not length_header.isdigit():
            raise ValueError("invalid Content-Length")
        length = int(length_header)
        if length > MAX_BODY_BYTES:
            raise ValueError("request body too large")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(1024).split(b";")[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise ValueError("invalid chunked body") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise ValueError("request body too large")
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _write(self, reply: _Reply) -> None:
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply.body)
        except OSError:  # the client gave up (e.g. timed out during an injected hold)
            self.close_connection = True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed requests and unknown methods get a JSON error too, then the socket closes."""
        self.close_connection = True
        self.request_version = self.protocol_version  # not the HTTP/0.9 guess: send headers
        self._write(_json(code, {"error": message or HTTPStatus(code).phrase}))

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: a sandbox under a benchmark must not write a line per request to stderr."""


class _Server(ThreadingHTTPServer):
    """Threaded server that remembers its open connections so `stop()` can close them."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        if isinstance(request, socket.socket):
            with self._connections_lock:
                self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket | tuple[bytes, socket.socket]) -> None:
        if isinstance(request, socket.socket):
            with self._connections_lock:
                self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the peer
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("sandbox connection error from %s", client_address, exc_info=True)
