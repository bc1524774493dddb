"""Webhooks cannot be turned against the network the dispatcher runs in (SSRF).

A webhook URL naming a loopback, private, link-local, multicast, reserved or unspecified
address, in any spelling, or an internal name, is refused when it is added (422 naming
`webhook`, exit 2 at the CLI); when it is sent, the name is resolved and only a checked address
is connected to, so a name that has come to point inside since it was added is refused too, as a
permanent failure that says why. OUTAGE_WEBHOOK_ALLOW_NETWORKS lets an internal receiver in.
Only the status code and a short, clean excerpt of a receiver's answer are kept.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_network
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from typer.testing import CliRunner

from channels.base import Channel, Message, RetryPolicy
from channels.webhook import WebhookChannel
from dispatcher.cli import app as cli
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.egress import EgressPolicy, literal_address
from dispatcher.incidents import lifecycle, reports
from dispatcher.models import DeliveryStatus, FailureKind, IncidentIn, Severity, SubscriberIn
from dispatcher.sandbox.server import Sandbox
from dispatcher.settings import Settings
from dispatcher.store import Subscriber
from dispatcher.subscribers import imports, records
from dispatcher.web.app import create_app
from tests.conftest import API_TOKEN

OPERATOR = {"Authorization": f"Bearer {API_TOKEN}"}
SECRET = "whsec_test_only"

INTERNAL_URLS = [
    "http://127.0.0.1/hook",
    "http://localhost/hook",
    "http://LOCALHOST./hook",
    "http://[::1]/hook",
    "http://0.0.0.0/hook",
    "http://0/hook",
    "http://2130706433/hook",
    "http://0x7f000001/hook",
    "http://0177.0.0.1/hook",
    "http://127.1/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::]/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://10.0.0.1/hook",
    "http://192.168.1.20:8080/hook",
    "http://172.16.5.4/hook",
    "http://100.64.0.1/hook",
    "http://[fe80::1]/hook",
    "http://[fc00::1]/hook",
    "http://224.0.0.1/hook",
    "http://240.0.0.1/hook",
    "http://[2002:7f00:1::]/hook",
    "http://printer.local/hook",
    "http://chat.corp/hook",
    "http://intranet/hook",
]


@pytest.fixture
def strict(web_settings: Settings) -> Iterator[TestClient]:
    """The app with the default policy: no internal network allowed."""
    settings = web_settings.model_copy(update={"webhook_allow_networks": []})
    with TestClient(create_app(settings)) as running:
        yield running


def webhook_subscriber(url: str) -> dict[str, object]:
    return {"name": "Ops", "webhook": url, "channels": ["webhook"]}


@pytest.mark.parametrize("url", INTERNAL_URLS)
def test_an_internal_webhook_url_is_refused_when_added(strict: TestClient, url: str) -> None:
    response = strict.post("/api/subscribers", json=webhook_subscriber(url), headers=OPERATOR)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "webhook"]
    assert "not a public one" in error["msg"], error["msg"]
    assert "OUTAGE_WEBHOOK_ALLOW_NETWORKS" in error["msg"]
    assert strict.get("/api/subscribers", headers=OPERATOR).json() == []


def test_a_change_to_an_internal_url_is_refused_and_changes_nothing(strict: TestClient) -> None:
    added = strict.post(
        "/api/subscribers",
        json=webhook_subscriber("https://hooks.example.org/x"),
        headers=OPERATOR,
    )
    assert added.status_code == 201, "a name that does not resolve (yet) is accepted"
    subscriber_id = added.json()["id"]
    response = strict.patch(
        f"/api/subscribers/{subscriber_id}",
        json={"webhook": "http://169.254.169.254/latest/"},
        headers=OPERATOR,
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "webhook"]
    kept = strict.get(f"/api/subscribers/{subscriber_id}", headers=OPERATOR).json()
    assert kept["webhook"] == "https://hooks.example.org/x"


def test_the_cli_refuses_an_internal_url_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox
) -> None:
    monkeypatch.setenv("OUTAGE_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.sqlite3'}")
    monkeypatch.setenv("OUTAGE_SANDBOX_URL", sandbox.url)
    added = CliRunner().invoke(
        cli,
        [
            *("subscriber", "add", "--name", "Ops", "--channels", "webhook"),
            *("--webhook", "http://0x7f000001:8080/admin"),
        ],
    )
    assert added.exit_code == 2, added.output
    assert added.stderr.startswith("error: --webhook: 127.0.0.1 is a loopback address")
    assert "Traceback" not in added.output


def test_an_allowed_network_is_accepted_and_nothing_else(web_settings: Settings) -> None:
    allowed = [ip_network("10.20.0.0/16")]
    settings = web_settings.model_copy(update={"webhook_allow_networks": allowed})
    with TestClient(create_app(settings)) as client:
        inside = client.post(
            "/api/subscribers", json=webhook_subscriber("http://10.20.3.4/chat"), headers=OPERATOR
        )
        outside = client.post(
            "/api/subscribers", json=webhook_subscriber("http://10.21.0.1/chat"), headers=OPERATOR
        )
    assert inside.status_code == 201
    assert outside.status_code == 422


def test_an_import_reports_an_internal_url_as_that_rows_problem(
    settings: Settings, tmp_path: Path
) -> None:
    pipeline = Pipeline(settings.model_copy(update={"webhook_allow_networks": []}))
    csv_file = tmp_path / "hooks.csv"
    csv_file.write_text(
        "name,webhook,channels\nOps,http://[::ffff:10.0.0.1]/x,webhook\n"
        "Chat,https://hooks.example.org/x,webhook\n"
    )
    try:
        report = imports.import_file(pipeline.store, pipeline.registry, csv_file)
    finally:
        pipeline.close()
    assert report.imported == 1
    ((line, problem),) = report.errors
    assert line == 2 and problem.startswith(
        "webhook: ::ffff:a00:1 (10.0.0.1) is a private address"
    ), problem


def test_every_spelling_of_an_address_is_read_as_the_address() -> None:
    for spelling in ("2130706433", "0x7f000001", "0177.0.0.1", "127.1", "127.0.0.1.", "[::1]"):
        address = literal_address(spelling)
        assert address is not None and address.is_loopback, spelling
    assert literal_address("hooks.example.org") is None
    assert literal_address("cafe.example") is None
    policy = EgressPolicy()
    assert policy.refusal(literal_address("93.184.215.14")) is None  # type: ignore[arg-type]
    assert policy.url_refusal("https://93.184.215.14/x") is None


# -- when it is sent ----------------------------------------------------------------------------

RETRY = RetryPolicy(attempts=1, backoff_s=0)


def live_webhook(**overrides: object) -> Channel:
    """The webhook adapter as a live deployment builds it: it connects to the URL itself."""
    settings = Settings(providers="live", provider_timeout_s=2, **overrides)  # type: ignore[arg-type]
    return WebhookChannel.from_settings(settings, RETRY)


def post_one(channel: Channel, url: str) -> tuple[FailureKind | None, str]:
    try:
        (outcome,) = channel.send([Message(1, url, "API down", secret=SECRET)])
    finally:
        channel.close()
    return outcome.failure, outcome.error or ""


def hooks_received(sandbox: Sandbox) -> int:
    return int(sandbox.stats()["requests"]["webhook"])


def test_a_send_to_a_loopback_address_is_refused_for_good(sandbox: Sandbox) -> None:
    failure, error = post_one(live_webhook(), f"{sandbox.url}/hooks/admin")
    assert failure is FailureKind.PERMANENT
    assert "127.0.0.1 is a loopback address, not a public one" in error
    assert hooks_received(sandbox) == 0, "nothing reached the internal service"


def test_a_name_that_resolves_inside_is_refused_after_resolution(sandbox: Sandbox) -> None:
    """What a rebinding name does: it passed when added, and resolves to loopback when sent."""
    port = urlsplit(sandbox.url).port
    failure, error = post_one(live_webhook(), f"http://localhost:{port}/hooks/admin")
    assert failure is FailureKind.PERMANENT
    assert "localhost resolves to 127.0.0.1, a loopback address, not a public one" in error
    assert hooks_received(sandbox) == 0


def test_an_allowed_network_is_delivered_to(sandbox: Sandbox) -> None:
    port = urlsplit(sandbox.url).port
    allowed = live_webhook(webhook_allow_networks=["127.0.0.0/8"])
    assert post_one(allowed, f"http://localhost:{port}/hooks/chat") == (None, "")
    assert hooks_received(sandbox) == 1


def test_a_refused_send_fails_the_delivery_with_the_reason(
    settings: Settings, sandbox: Sandbox
) -> None:
    """End to end, live mode: the URL was a public name when it was added, and now points at
    an internal service."""
    live = settings.model_copy(
        update={"providers": "live", "broadcast": [], "webhook_allow_networks": []}
    )
    pipeline = Pipeline(live)
    try:
        hook = records.add(
            pipeline.store,
            pipeline.registry,
            SubscriberIn(name="Ops", webhook="https://hooks.example.org/x", channels=["webhook"]),
        )
        with pipeline.store.session() as session:
            session.execute(
                update(Subscriber)
                .where(Subscriber.id == hook.id)
                .values(webhook_url=f"{sandbox.url}/hooks/admin")
            )
        posted = lifecycle.open_incident(
            pipeline.store,
            IncidentIn(title="API down", severity=Severity.MAJOR, components=["api"]),
        )
        pipeline.announce(posted.update_id, wait_s=5)
        (line,) = reports.deliveries(pipeline.store, posted.incident_id)
    finally:
        pipeline.close()
    assert line.status == DeliveryStatus.FAILED
    assert "127.0.0.1 is a loopback address, not a public one" in (line.last_error or "")
    assert hooks_received(sandbox) == 0


# -- what is kept of a receiver's answer ----------------------------------------------------------

NOISY_ANSWER = (
    "<html><head><title>500 Internal Server Error</title></head><body>\x1b[31m"
    "<h1>Traceback</h1><pre>File app.py line 3: DATABASE_URL=postgres://admin:hunter2@db/prod "
    "api_key=sk_live_123456 user ada@example.org</pre>" + "x" * 5000 + "</body></html>"
)


class _Noisy(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = NOISY_ANSWER.encode()
        self.send_response(500)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def noisy_receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Noisy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def test_only_the_status_and_a_short_clean_excerpt_of_an_answer_are_kept(
    noisy_receiver: str,
) -> None:
    channel = live_webhook(webhook_allow_networks=["127.0.0.0/8"])
    failure, error = post_one(channel, noisy_receiver)
    assert failure is FailureKind.TRANSIENT
    assert "(HTTP 500)" in error
    assert len(error) <= 200, error
    for leaked in ("<", "\x1b", "hunter2", "sk_live_123456", "ada@example.org", "xxxxxxxxxx" * 20):
        assert leaked not in error, leaked
