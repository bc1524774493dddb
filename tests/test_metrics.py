"""Metrics as an operator reads them on the day of an outage: the values after a real fan-out
through the sandbox (on SQLite and PostgreSQL), the queue while nothing sends, breaker state,
webhooks counted by outcome, failure reasons from real provider answers, and the live progress
of `outage incident show --follow`."""

from __future__ import annotations

import json
import re
import socket
import time
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from channels.base import Message, reason_for_status
from dispatcher.cli.progress import follow_progress
from dispatcher.delivery.breaker import BreakerState, Circuit, DatabaseCircuits
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.delivery.registry import ChannelRegistry
from dispatcher.incidents import lifecycle, reports
from dispatcher.incidents.lifecycle import Posted
from dispatcher.models import DeliveryStatus, FailureReason, IncidentIn, Severity, SubscriberIn
from dispatcher.ops import metrics
from dispatcher.sandbox.server import Sandbox
from dispatcher.settings import Settings
from dispatcher.store import Delivery, Update, utcnow
from dispatcher.subscribers import records
from tests.conftest import WEBHOOK_TOKEN
from tests.webhooks_support import fixture


def registry_of(pipeline: Pipeline, **kwargs: object) -> CollectorRegistry:
    collector = metrics.DatabaseCollector(
        pipeline.store,
        pipeline.registry.names,
        cache_s=0,
        **kwargs,  # type: ignore[arg-type]
    )
    return metrics.new_registry(collector)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    assert found is not None, f"no sample {name}{labels}"
    return found


def add_subscribers(pipeline: Pipeline, count: int) -> None:
    for n in range(count):
        records.add(
            pipeline.store,
            pipeline.registry,
            SubscriberIn(
                name=f"s{n}",
                email=f"s{n}@example.org",
                phone=f"+1415555{n:04d}",
                channels=["sms", "email"],
                confirmed=True,
            ),
        )


def open_incident(pipeline: Pipeline, accepted_ago_s: float = 0) -> Posted:
    """Open an incident whose update was accepted `accepted_ago_s` seconds ago (so the latency
    histogram's buckets are known without waiting)."""
    posted = lifecycle.open_incident(
        pipeline.store,
        IncidentIn(title="Login failures", severity=Severity.CRITICAL, components=["auth"]),
    )
    if accepted_ago_s:
        with pipeline.store.session() as session:
            session.execute(
                update(Update)
                .where(Update.id == posted.update_id)
                .values(created_at=utcnow() - timedelta(seconds=accepted_ago_s))
            )
    return posted


def test_metric_values_after_a_fan_out_with_a_retry_and_a_fallback(
    pipeline: Pipeline, sandbox: Sandbox
) -> None:
    add_subscribers(pipeline, 4)
    sandbox.inject_recipient_failure("+14155550001")  # s1's SMS fails for good: falls back
    sandbox.inject_failures(2, "503", channel="email")  # the one email needs two retries
    posted = open_incident(pipeline, accepted_ago_s=90)
    pipeline.announce(posted.update_id, wait_s=5)

    registry = registry_of(pipeline)
    assert value(registry, "outage_database_up") == 1
    assert value(registry, "outage_deliveries", channel="sms", status="sent") == 3
    assert value(registry, "outage_deliveries", channel="sms", status="fell_back") == 1
    assert value(registry, "outage_deliveries", channel="email", status="sent") == 1
    assert value(registry, "outage_deliveries", channel="social", status="sent") == 1
    assert value(registry, "outage_deliveries", channel="webhook", status="sent") == 0
    assert value(registry, "outage_delivery_fallbacks_total", channel="sms") == 1
    assert value(registry, "outage_delivery_attempts_total", channel="email") == 3
    assert value(registry, "outage_delivery_retries_total", channel="email") == 2
    assert value(registry, "outage_delivery_attempts_total", channel="sms") == 4
    assert value(registry, "outage_delivery_retries_total", channel="sms") == 0
    assert value(registry, "outage_queue_depth", channel="sms") == 0
    assert value(registry, "outage_queue_oldest_seconds", channel="sms") == 0
    assert value(registry, "outage_updates_pending_fanout") == 0
    # Accepted 90 s before the fan-out: every SMS lands between the 60 s and 120 s bounds.
    histogram = "outage_delivery_latency_seconds"
    assert value(registry, f"{histogram}_bucket", channel="sms", le="60.0") == 0
    assert value(registry, f"{histogram}_bucket", channel="sms", le="120.0") == 3
    assert value(registry, f"{histogram}_bucket", channel="sms", le="+Inf") == 3
    assert value(registry, f"{histogram}_count", channel="sms") == 3
    assert 3 * 90 <= value(registry, f"{histogram}_sum", channel="sms") < 3 * 120
    assert value(registry, f"{histogram}_count", channel="webhook") == 0


def test_failure_reasons_of_a_fan_out(pipeline: Pipeline, sandbox: Sandbox) -> None:
    add_subscribers(pipeline, 2)
    sandbox.inject_recipient_failure("+14155550001")  # Twilio 400/21211: rejected
    # Three 503s outlast the three tries inside one send: the delivery goes back to the queue,
    # and its next send succeeds; the reason stays on the row.
    sandbox.inject_failures(3, "503", channel="email")
    posted = open_incident(pipeline)
    pipeline.announce(posted.update_id, wait_s=5)

    registry = registry_of(pipeline)
    assert value(registry, "outage_delivery_errors", channel="sms", reason="rejected") == 1
    assert value(registry, "outage_delivery_errors", channel="email", reason="server_error") == 1
    assert value(registry, "outage_deliveries", channel="email", status="sent") == 1


def test_error_reasons_are_counted_per_channel_from_the_rows(pipeline: Pipeline) -> None:
    add_subscribers(pipeline, 3)
    posted = open_incident(pipeline)
    pipeline.fan_out(posted.update_id)  # rows written; nothing sent (the queue is not drained)
    reasons = [FailureReason.RATE_LIMITED, FailureReason.RATE_LIMITED, FailureReason.TIMEOUT]
    with pipeline.store.session() as session:
        ids = session.scalars(
            Delivery.__table__.select()
            .with_only_columns(Delivery.id)
            .where(Delivery.channel == "sms")
            .order_by(Delivery.id)
        ).all()
        for delivery_id, reason in zip(ids, reasons, strict=True):
            session.execute(
                update(Delivery).where(Delivery.id == delivery_id).values(error_reason=reason)
            )

    registry = registry_of(pipeline)
    assert value(registry, "outage_delivery_errors", channel="sms", reason="rate_limited") == 2
    assert value(registry, "outage_delivery_errors", channel="sms", reason="timeout") == 1
    assert value(registry, "outage_delivery_errors", channel="email", reason="rate_limited") == 0


def test_queue_depth_and_oldest_age_while_no_worker_sends(pipeline: Pipeline) -> None:
    add_subscribers(pipeline, 3)
    posted = open_incident(pipeline)
    pipeline.fan_out(posted.update_id)  # queued, and nobody drains the queue
    with pipeline.store.session() as session:
        session.execute(
            update(Delivery)
            .where(Delivery.channel == "sms")
            .values(due_at=utcnow() - timedelta(seconds=300))
        )

    registry = registry_of(pipeline)
    assert value(registry, "outage_queue_depth", channel="sms") == 3
    assert value(registry, "outage_deliveries", channel="sms", status="queued") == 3
    assert 300 <= value(registry, "outage_queue_oldest_seconds", channel="sms") < 400
    assert value(registry, "outage_queue_depth", channel="social") == 1
    assert value(registry, "outage_updates_pending_fanout") == 0


def test_breaker_state_is_exposed_per_channel(pipeline: Pipeline) -> None:
    circuits = DatabaseCircuits(pipeline.store)
    circuits.update("sms:+15005550006", lambda _: Circuit(BreakerState.OPEN, 5, time.time() + 30))
    states = metrics.circuit_reader(
        circuits, {"sms": "sms:+15005550006", "email": "email:status@example.com"}
    )

    registry = registry_of(pipeline, breaker_states=states)
    assert value(registry, "outage_circuit_breaker_state", channel="sms", state="open") == 1
    assert value(registry, "outage_circuit_breaker_state", channel="sms", state="closed") == 0
    assert value(registry, "outage_circuit_breaker_state", channel="email", state="closed") == 1


def test_metrics_endpoint_serves_the_deployment_and_counts_webhooks(client: TestClient) -> None:
    def received() -> dict[str, float]:
        page = client.get("/metrics")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/plain")
        counts: dict[str, float] = {}
        for family in text_string_to_metric_families(page.text):
            for sample in family.samples:
                if (
                    sample.name == "outage_webhooks_received_total"
                    and sample.labels["source"] == "alertmanager"
                ):
                    counts[sample.labels["outcome"]] = sample.value
        return counts

    before = received()
    assert client.post("/webhooks/alertmanager", json={}).status_code == 401
    auth = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
    assert client.post("/webhooks/alertmanager", content=b"{", headers=auth).status_code == 422
    alert = json.dumps(fixture("alertmanager_firing")).encode()
    response = client.post("/webhooks/alertmanager", content=alert, headers=auth)
    assert response.status_code == 202, response.text

    after = received()
    for outcome in ("accepted", "unauthorized", "invalid"):
        assert after[outcome] == before.get(outcome, 0) + 1, outcome
    page = client.get("/metrics").text
    assert "outage_database_up 1.0" in page
    assert 'outage_deliveries{channel="sms",status="queued"}' in page


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (429, FailureReason.RATE_LIMITED),
        (408, FailureReason.TIMEOUT),
        (500, FailureReason.SERVER_ERROR),
        (503, FailureReason.SERVER_ERROR),
        (400, FailureReason.REJECTED),
        (401, FailureReason.REJECTED),
        (404, FailureReason.REJECTED),
    ],
)
def test_status_codes_map_to_one_reason(status: int, reason: FailureReason) -> None:
    assert reason_for_status(status) is reason


@pytest.mark.parametrize(
    ("channel", "to", "fault", "reason"),
    [
        ("sms", "+14155550100", "429", FailureReason.RATE_LIMITED),
        ("email", "ada@example.org", "503", FailureReason.SERVER_ERROR),
        ("social", "social", "500", FailureReason.SERVER_ERROR),
        ("webhook", "https://hooks.example.org/x", "timeout", FailureReason.TIMEOUT),
        ("sms", "+14155550199", None, FailureReason.REJECTED),
    ],
)
def test_adapters_report_why_a_send_failed(
    settings: Settings, sandbox: Sandbox, channel: str, to: str, fault: str | None, reason: str
) -> None:
    quick = settings.model_copy(
        update={"send_attempts": 1, "provider_timeout_s": 0.3, "webhook_timeout_s": 0.3}
    )
    registry = ChannelRegistry(quick)
    if fault is None:
        sandbox.inject_recipient_failure(to)
    else:
        sandbox.inject_failures(1, fault, channel=channel)  # type: ignore[arg-type]
    try:
        message = Message(key=1, to=to, text="Login failures", subject="Down", secret="s3cret")
        (outcome,) = registry.get(channel).send([message])
    finally:
        registry.close()
    assert outcome.reason is reason


def test_a_provider_nobody_listens_on_is_unreachable(settings: Settings) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    registry = ChannelRegistry(settings.model_copy(update={"sandbox_url": closed}))
    try:
        (outcome,) = registry.get("sms").send([Message(key=1, to="+14155550100", text="x")])
    finally:
        registry.close()
    assert outcome.reason is FailureReason.UNREACHABLE


def test_follow_redraws_until_the_fan_out_is_done(pipeline: Pipeline) -> None:
    add_subscribers(pipeline, 2)
    posted = open_incident(pipeline)
    pipeline.fan_out(posted.update_id)
    polls: list[dict[str, int]] = []

    def a_worker_sends_meanwhile(_: float) -> None:
        summary = reports.delivery_summary(pipeline.store, posted.incident_id)
        polls.append({c: counts[DeliveryStatus.QUEUED] for c, counts in summary.items()})
        pipeline.drain()

    follow_progress(pipeline, posted.incident_id, pause=a_worker_sends_meanwhile)

    assert polls == [{"sms": 2, "social": 1}], "one redraw while queued, then done"
    final = reports.delivery_summary(pipeline.store, posted.incident_id)
    assert final["sms"][DeliveryStatus.SENT] == 2


def test_follow_stops_cleanly_on_ctrl_c(pipeline: Pipeline) -> None:
    add_subscribers(pipeline, 1)
    posted = open_incident(pipeline)
    pipeline.fan_out(posted.update_id)

    def interrupted(_: float) -> None:
        raise KeyboardInterrupt

    follow_progress(pipeline, posted.incident_id, pause=interrupted)  # returns, raises nothing
    summary = reports.delivery_summary(pipeline.store, posted.incident_id)
    assert summary["sms"][DeliveryStatus.QUEUED] == 1, "following never sends or cancels"


def test_dashboard_and_alert_rules_use_only_metrics_we_expose(
    pipeline: Pipeline, sandbox: Sandbox
) -> None:
    """A renamed metric must not leave a silent alert or an empty panel behind."""
    circuits = metrics.circuit_reader(DatabaseCircuits(pipeline.store), {"sms": "sms:x"})
    registry = registry_of(pipeline, breaker_states=circuits)
    metrics.WEBHOOKS_RECEIVED.labels("generic", "accepted")  # a child, so the family has samples
    exposed = {sample.name for family in registry.collect() for sample in family.samples}
    config = Path(__file__).parent.parent / "config"
    used: set[str] = set()
    for name in ("prometheus-rules.yml", "grafana-dashboard.json"):
        used |= set(re.findall(r"\boutage_[a-z_]+", (config / name).read_text()))
    assert used, "the files mention our metrics"
    assert used <= exposed, sorted(used - exposed)
