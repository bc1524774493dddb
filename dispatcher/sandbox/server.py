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

Each provider answers in a module of its own (twilio, sendgrid, x, webhooks); what they record
and the failures they inject are in `state`, the control API in `control`, the signed receipts
in `receipts`. This module serves them all. Every request body is read before it is answered,
and every answer has a Content-Length, so keep-alive connections stay in step however a request
ends.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message as HeaderMap
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from channels.transport import SENT_AT_HEADER
from dispatcher.sandbox import control, sendgrid, twilio, webhooks, x
from dispatcher.sandbox.replies import ErrorShape, Reply, json_reply
from dispatcher.sandbox.state import SandboxState

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 10 * 1024 * 1024

Send = Callable[[SandboxState, str, HeaderMap, bytes], Reply]
WhoAmI = Callable[[SandboxState, str, HeaderMap], Reply | None]


@dataclass(frozen=True)
class _Provider:
    """Where a fake provider takes its sends, and how it says no."""

    channel: str
    path: re.Pattern[str]
    send: Send
    error: ErrorShape


_PROVIDERS = (
    _Provider(twilio.CHANNEL, twilio.SEND_PATH, twilio.send, twilio.error),
    _Provider(sendgrid.CHANNEL, sendgrid.SEND_PATH, sendgrid.send, sendgrid.error),
    _Provider(x.CHANNEL, x.SEND_PATH, x.send, x.error),
    _Provider(webhooks.CHANNEL, webhooks.SEND_PATH, webhooks.send, webhooks.error),
)
# The providers' harmless authenticated GETs (`outage doctor`); injected faults apply to them too.
_WHOAMI: tuple[WhoAmI, ...] = (twilio.whoami, sendgrid.whoami, x.whoami)


class Sandbox(SandboxState):
    """The provider sandbox: start it in-process (tests) or serve it in the foreground (the CLI).

    What it records and the failures it injects are asked and told through the methods it
    inherits from `SandboxState`; this class adds the HTTP server and its routing.
    """

    def __init__(self, latency_ms: float = 0, timeout_hold_s: float = 5.0) -> None:
        super().__init__(latency_ms, timeout_hold_s)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None

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

    # -- dispatch (called by the request handler) ---------------------------------------------

    def _dispatch(self, method: str, raw_path: str, headers: HeaderMap, body: bytes) -> Reply:
        parts = urlsplit(raw_path)
        path = parts.path
        if path.startswith("/sandbox/"):
            return control.answer(self, method, path, parse_qs(parts.query), body)
        if method == "GET":
            for whoami in _WHOAMI:
                if (reply := whoami(self, path, headers)) is not None:
                    return reply
        provider = next((p for p in _PROVIDERS if p.path.match(path)), None)
        if provider is None:
            return json_reply(404, {"error": f"no route for {method} {path}"})
        if method != "POST":
            return provider.error(405, f"{method} is not allowed on {path}")
        latency_s = self._arrive(provider.channel)
        arrived = time.monotonic()
        try:
            if latency_s:
                self.hold(latency_s)
            full_path = path + (f"?{parts.query}" if parts.query else "")
            reply = provider.send(self, full_path, headers, body)
        finally:
            self._depart()
        self._log_request(arrived, provider.channel, reply.status, _sent_at(headers))
        return reply


def _sent_at(headers: HeaderMap) -> float | None:
    """When the sender says the request left it (channels/transport.py `sandbox_stamp`)."""
    try:
        return float(headers.get(SENT_AT_HEADER) or "")
    except ValueError:
        return None


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
            self._write(json_reply(400, {"error": str(exc)}))
            return
        try:
            reply = self.server.sandbox._dispatch(self.command, self.path, self.headers, body)
        except Exception:  # a sandbox bug must still answer JSON, not drop the connection
            log.exception("sandbox failed on %s %s", self.command, self.path)
            reply = json_reply(500, {"error": "sandbox internal error"})
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

    def _write(self, reply: Reply) -> None:
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
        self._write(json_reply(code, {"error": message or HTTPStatus(code).phrase}))

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
