"""`outage doctor` on the set-ups new operators get wrong most often: each finding names what is
wrong and how to fix it, and the exit code is 0 only when all is well."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import update
from typer.testing import CliRunner

from dispatcher.cli import app
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.delivery.runner import Runner
from dispatcher.incidents import lifecycle
from dispatcher.models import DeliveryStatus, IncidentIn, Severity, SubscriberIn
from dispatcher.ops import doctor
from dispatcher.ops.findings import Context, Finding, Status
from dispatcher.sandbox.server import Sandbox
from dispatcher.settings import Settings, get_settings
from dispatcher.store import Delivery, Store, utcnow
from dispatcher.subscribers import records
from tests.conftest import REDIS_URL, WEBHOOK_TOKEN, need_service


class _Healthz(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"status":"ok"}' if self.path == "/healthz" else b"{}"
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def public_url() -> Iterator[str]:
    """Something answering /healthz as `outage serve` does, where OUTAGE_PUBLIC_URL points."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Healthz)
    thread = Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def healthy(settings: Settings, public_url: str) -> Settings:
    """A set-up with nothing wrong: schema created, token set, public URL answering."""
    Store(settings.database_url).close()
    return settings.model_copy(
        update={
            "webhook_token": SecretStr(WEBHOOK_TOKEN + "-long-enough"),
            "public_url": public_url,
        }
    )


def run(settings: Settings) -> dict[str, Finding]:
    context = Context.for_doctor(settings)
    try:
        return {finding.check: finding for finding in doctor.doctor(context)}
    finally:
        context.close()


def problems(findings: dict[str, Finding]) -> dict[str, Status]:
    return {name: f.status for name, f in findings.items() if f.status is not Status.OK}


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_healthy_set_up_has_nothing_to_fix(healthy: Settings) -> None:
    findings = run(healthy)
    assert problems(findings) == {}
    assert findings["provider:sms"].detail == "Twilio account Sandbox is active"
    assert findings["provider:email"].detail == "SendGrid API key accepted, with mail.send"
    assert findings["provider:social"].detail == "X account @sandbox"
    assert findings["schema"].detail.startswith("all ")


def test_cli_exit_code_is_0_only_when_all_is_well(
    healthy: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTAGE_DATABASE_URL", healthy.database_url)
    monkeypatch.setenv("OUTAGE_SANDBOX_URL", str(healthy.sandbox_url))
    monkeypatch.setenv("OUTAGE_PUBLIC_URL", healthy.public_url)
    monkeypatch.setenv("OUTAGE_WEBHOOK_TOKEN", WEBHOOK_TOKEN + "-long-enough")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.stdout
    assert json.loads(result.stdout)["status"] == "ok"

    monkeypatch.delenv("OUTAGE_WEBHOOK_TOKEN")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 1
    assert "OUTAGE_WEBHOOK_TOKEN" in result.stdout
    assert "1 to fix" in result.stdout


def test_an_empty_database(healthy: Settings, tmp_path: Path) -> None:
    empty = healthy.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'new.sqlite3'}"})
    schema = run(empty)["schema"]
    assert (schema.status, schema.detail) == (Status.FAIL, "the database is empty")
    assert "created on first use" in str(schema.fix)


def test_a_database_nobody_listens_on(healthy: Settings) -> None:
    down = healthy.model_copy(
        update={"database_url": f"postgresql://postgres@127.0.0.1:{closed_port()}/outage"}
    )
    findings = run(down)
    assert findings["database"].status is Status.FAIL
    assert "OUTAGE_DATABASE_URL" in str(findings["database"].fix)
    assert "schema" not in findings, "not checked without a database"


def test_live_mode_left_at_the_example_values(healthy: Settings) -> None:
    live = healthy.model_copy(update={"providers": "live", "public_url": "http://127.0.0.1:8000"})
    findings = run(live)
    assert findings["provider:sms"].detail == "TWILIO_ACCOUNT_SID is not set"
    assert findings["provider:email"].detail == "SENDGRID_API_KEY is not set"
    assert findings["provider:social"].detail == "X_API_KEY is not set"
    assert "Twilio's test number" in findings["sender:sms"].detail
    assert findings["sender:email"].detail == "OUTAGE_EMAIL_FROM is still at example.com"
    assert "customers' links fail" in findings["public_url"].detail
    assert all(findings[name].fix for name in problems(findings))


def test_a_provider_that_does_not_answer_properly(healthy: Settings, sandbox: Sandbox) -> None:
    sandbox.inject_failures(1, "503", channel="email")
    email = run(healthy)["provider:email"]
    assert email.status is Status.FAIL
    assert "HTTP 503" in email.detail
    assert "status page" in str(email.fix)


def test_webhook_token_missing_or_short(healthy: Settings) -> None:
    missing = run(healthy.model_copy(update={"webhook_token": None}))["webhook_token"]
    assert missing.status is Status.FAIL
    assert "OUTAGE_WEBHOOK_TOKEN" in str(missing.fix)
    short = run(healthy.model_copy(update={"webhook_token": SecretStr("abc")}))["webhook_token"]
    assert short.status is Status.WARN


def test_a_broker_nobody_listens_on(healthy: Settings) -> None:
    port = closed_port()
    findings = run(healthy.model_copy(update={"broker_url": f"redis://127.0.0.1:{port}/0"}))
    assert findings["broker"].status is Status.FAIL
    assert findings["broker"].detail.startswith(f"127.0.0.1:{port}/0 did not answer")
    assert "workers" not in findings, "no worker ping through a broker that is down"


def queue_one_incident(pipeline: Pipeline) -> None:
    """One subscriber and one incident, its two deliveries written and left queued."""
    records.add(
        pipeline.store,
        pipeline.registry,
        SubscriberIn(name="Ada", email="ada@example.org", channels=["email"], confirmed=True),
    )
    posted = lifecycle.open_incident(
        pipeline.store,
        IncidentIn(title="Down", severity=Severity.MAJOR, components=["api"]),
    )
    pipeline.fan_out(posted.update_id)  # queued; no worker takes it


def test_a_queue_that_is_not_draining(healthy: Settings) -> None:
    pipeline = Pipeline(healthy)
    try:
        queue_one_incident(pipeline)
        with pipeline.store.session() as session:
            session.execute(update(Delivery).values(due_at=utcnow() - timedelta(minutes=10)))
    finally:
        pipeline.close()
    findings = run(healthy)
    queue = findings["queue"]
    assert queue.status is Status.FAIL
    assert queue.detail.startswith("2 deliveries due for more than 60 s are still queued")
    assert "nothing is running to send them: run `outage worker`" in str(queue.fix)
    assert findings["workers"].status is Status.WARN
    assert "no embedded runner is running and 2 deliveries are queued" in findings["workers"].detail


def test_a_running_runner_and_a_row_stuck_past_its_lease(healthy: Settings) -> None:
    """A runner's pass leaves a heartbeat the doctor reads; a row claimed by a worker that
    vanished (still `sending`, its lease over) is named, not hidden behind "queued 0"."""
    pipeline = Pipeline(healthy)
    try:
        Runner(pipeline).run_pass()
        queue_one_incident(pipeline)
        with pipeline.store.session() as session:
            session.execute(
                update(Delivery).values(
                    status=DeliveryStatus.SENDING, lease_until=utcnow() - timedelta(seconds=1)
                )
            )
        findings = run(healthy)
    finally:
        pipeline.close()
    assert findings["workers"].status is Status.OK
    assert findings["workers"].detail.startswith("embedded runner running: ")
    assert findings["queue"].status is Status.FAIL
    assert "2 left in sending past their lease" in findings["queue"].detail
    assert "every worker sweeps" in str(findings["queue"].fix)


@pytest.mark.redis
def test_no_worker_consuming(healthy: Settings) -> None:
    need_service(REDIS_URL, "Redis")
    lonely = REDIS_URL.rsplit("/", 1)[0] + "/13"  # a database no test worker listens on
    workers = run(healthy.model_copy(update={"broker_url": lonely}))["workers"]
    assert workers.status is Status.FAIL
    assert workers.detail == "no worker answered a ping within 1 s"
    assert "outage worker" in str(workers.fix)
