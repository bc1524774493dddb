"""Every outgoing message is a delivery row sent by one engine: confirmations are paced by the
provider's rate bucket, retried, listed and counted like incident updates; and a channel whose
adapter cannot be built fails its own deliveries (naming what is missing) without stopping the
others. Through the real adapters and the sandbox."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents import lifecycle, reports
from dispatcher.models import (
    DeliveryStatus,
    IncidentIn,
    MessageKind,
    Severity,
    SubscriberIn,
    WaitReason,
)
from dispatcher.sandbox.server import Sandbox
from dispatcher.settings import RateLimit, Settings
from dispatcher.store import Delivery
from dispatcher.subscribers import confirmations, records


def sign_up(pipeline: Pipeline, n: int) -> list[confirmations.Requested]:
    subscriber = records.add(
        pipeline.store,
        pipeline.registry,
        SubscriberIn(name=f"p{n}", phone=f"+1415555{n:04d}", channels=["sms"]),
    )
    return confirmations.request(pipeline, subscriber.id)


@pytest.fixture
def paced(settings: Settings) -> Iterator[Pipeline]:
    """SMS limited to 3 at once and 1 a second, as a small Twilio number is."""
    limits = {**settings.rate_limits, "sms": RateLimit(per_s=1, burst=3)}
    running = Pipeline(settings.model_copy(update={"rate_limits": limits, "pace_max_wait_s": 0}))
    yield running
    running.close()


def test_a_confirmation_flood_is_paced_by_the_providers_rate_bucket(
    paced: Pipeline, sandbox: Sandbox
) -> None:
    asked = [item for n in range(6) for item in sign_up(paced, n)]
    assert [item.sent for item in asked] == [True] * 3 + [False] * 3
    assert len(sandbox.messages("sms")) == 3, "the burst, not six at once"
    with paced.store.session() as session:
        held = session.query(Delivery).filter(Delivery.status == DeliveryStatus.QUEUED).all()
    assert {(row.kind, row.wait_reason) for row in held} == {
        (MessageKind.CONFIRMATION, WaitReason.RATE_LIMIT)
    }


def test_a_confirmation_is_a_delivery_row_an_operator_can_list(
    pipeline: Pipeline, sandbox: Sandbox
) -> None:
    [asked] = sign_up(pipeline, 1)
    assert asked.sent
    [line] = reports.deliveries(pipeline.store, None)
    assert (line.id, line.update_state, line.channel, line.status) == (
        asked.delivery_id,
        "confirmation",
        "sms",
        DeliveryStatus.SENT,
    )
    [message] = sandbox.messages("sms")
    assert "/confirm/" in message["body"]


def test_a_confirmation_that_fails_for_now_is_retried_and_never_falls_back(
    pipeline: Pipeline, sandbox: Sandbox
) -> None:
    subscriber = records.add(
        pipeline.store,
        pipeline.registry,
        SubscriberIn(name="a", phone="+14155550100", email="a@example.org", channels=["sms"]),
    )
    sandbox.inject_failures(3, "503", channel="sms")  # every try inside the first send
    asked = {item.field: item for item in confirmations.request(pipeline, subscriber.id)}
    assert asked["phone"].status is DeliveryStatus.QUEUED, "waits for its retry"
    assert asked["email"].sent
    pipeline.drain(wait_s=5)
    lines = {line.channel: line for line in reports.deliveries(pipeline.store, None)}
    assert lines["sms"].status is DeliveryStatus.SENT
    assert lines["sms"].sends == 2
    assert len(lines) == 2, "no fallback row: a confirmation asks about this very address"


def test_a_channel_that_cannot_be_built_fails_alone_naming_the_missing_setting(
    settings: Settings, sandbox: Sandbox
) -> None:
    """Live providers without X credentials: the post fails naming X_API_KEY, and the webhook
    (which needs no credentials) is sent as usual."""
    live = settings.model_copy(update={"providers": "live", "sandbox_url": None})
    pipeline = Pipeline(live)
    try:
        records.add(
            pipeline.store,
            pipeline.registry,
            SubscriberIn(name="hook", webhook=f"{sandbox.url}/hooks/a", channels=["webhook"]),
        )
        posted = lifecycle.open_incident(
            pipeline.store, IncidentIn(title="Down", severity=Severity.MAJOR, components=["api"])
        )
        pipeline.announce(posted.update_id, wait_s=0)
        lines = {line.channel: line for line in reports.deliveries(pipeline.store, None)}
    finally:
        pipeline.close()
    assert lines["social"].status is DeliveryStatus.FAILED
    assert "X_API_KEY" in (lines["social"].last_error or "")
    assert lines["webhook"].status is DeliveryStatus.SENT
    assert len(sandbox.messages("webhook")) == 1
