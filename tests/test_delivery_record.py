"""Recording a chunk's outcomes (dispatcher/delivery/rows.py `write`): every row gets exactly its
own outcome when one chunk mixes them, and a receipt recorded while the outcome is being written
still wins over "sent"."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from sqlalchemy import Update, event, select

from channels import sms_events
from dispatcher.delivery import messages, receipts
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents import lifecycle
from dispatcher.models import DeliveryStatus, IncidentIn, Severity, SubscriberIn, SuppressionReason
from dispatcher.sandbox.server import Sandbox
from dispatcher.settings import Settings
from dispatcher.store import Delivery, Subscriber
from dispatcher.subscribers import records
from dispatcher.subscribers.suppressions import suppress

DEAD = ("+14155550123", "+14155550124")


def _add(pipeline: Pipeline, name: str, phone: str, channels: list[str]) -> None:
    data = SubscriberIn(
        name=name, phone=phone, email=f"{name}@example.org", channels=channels, confirmed=True
    )
    records.add(pipeline.store, pipeline.registry, data)


def _rows(pipeline: Pipeline) -> dict[tuple[str, str], Delivery]:
    with pipeline.store.session() as session:
        found = session.execute(
            select(Delivery, Subscriber.name).join(
                Subscriber, Delivery.subscriber_id == Subscriber.id
            )
        ).all()
    return {(name, row.channel): row for row, name in found}


@pytest.fixture
def receipt_pipeline(settings: Settings) -> Iterable[Pipeline]:
    running = Pipeline(settings.model_copy(update={"receipt_timeout_s": 60}))
    yield running
    running.close()


def test_one_chunk_of_mixed_outcomes_records_each_its_own(
    receipt_pipeline: Pipeline, sandbox: Sandbox
) -> None:
    pipeline = receipt_pipeline
    for phone in DEAD:
        sandbox.inject_recipient_failure(phone)
    _add(pipeline, "ok", "+14155550100", ["sms"])
    _add(pipeline, "opted", "+14155550101", ["sms"])
    _add(pipeline, "moves", DEAD[0], ["sms", "email"])
    _add(pipeline, "dead", DEAD[1], ["sms"])
    posted = lifecycle.open_incident(
        pipeline.store, IncidentIn(title="x", severity=Severity.MAJOR, components=["api"])
    )
    pipeline.fan_out(posted.update_id)  # one SMS batch, queued
    with pipeline.store.session() as session:  # opted out after the rows were written
        suppress(session, "phone", "+14155550101", SuppressionReason.STOP, actor="test")
    pipeline.drain(wait_s=5)

    rows = _rows(pipeline)
    ok, opted, moves, dead = (rows[(name, "sms")] for name in ("ok", "opted", "moves", "dead"))
    for row in (ok, opted, moves, dead):
        assert (row.lease_until, row.in_flight_since, row.sends) == (None, None, 1)
    assert (ok.status, ok.attempts, ok.last_error, ok.error_reason) == (
        DeliveryStatus.SENT,
        1,
        None,
        None,
    )
    assert ok.provider_id and ok.sent_at and ok.receipt_due_at
    assert (opted.status, opted.attempts, opted.last_error) == (
        DeliveryStatus.SUPPRESSED,
        0,
        messages.OPTED_OUT,
    )
    assert opted.provider_id is opted.sent_at is opted.receipt_due_at is None
    for failed in (moves, dead):
        assert failed.attempts == 1 and "21211" in (failed.last_error or "")
        assert failed.error_reason is not None
        assert failed.provider_id is failed.sent_at is failed.receipt_due_at is None
    assert moves.status is DeliveryStatus.FELL_BACK
    assert dead.status is DeliveryStatus.FAILED
    fallback = rows[("moves", "email")]
    assert (fallback.status, fallback.fallback_of) == (DeliveryStatus.SENT, moves.id)


def test_a_receipt_recorded_while_sent_is_being_written_keeps_delivered(
    receipt_pipeline: Pipeline,
) -> None:
    """The row was read as SENDING; the provider's receipt (naming our delivery id) commits
    before the chunk's UPDATE: the row stays DELIVERED, with no receipt deadline, and still gets
    its provider id and send time.

    The receipt is applied at that instant from SQLAlchemy's own hook on the engine, just before
    the UPDATE that records "sent" is executed: the code under test runs unchanged."""
    pipeline = receipt_pipeline
    early: list[int] = []

    def receipt_first(
        _connection: Any,
        statement: Any,
        multiparams: list[dict[str, Any]],
        params: dict[str, Any],
        _options: Any,
    ) -> None:
        if early or not isinstance(statement, Update) or statement.table is not Delivery.__table__:
            return
        early.extend(  # rows being recorded as sent that will wait for a receipt (not the X post)
            row["row_id"]
            for row in [*multiparams, params]
            if row.get("status") is DeliveryStatus.SENT and "receipt_due_at" in row
        )
        for delivery_id in early:  # as the web process would, on another connection
            form = {"MessageSid": "SMearly", "MessageStatus": "delivered"}
            receipt = sms_events.parse_status_callback(
                form, str(delivery_id), f"early-{delivery_id}"
            )
            assert receipts.apply(pipeline.store, pipeline.registry, [receipt]).applied == 1

    event.listen(pipeline.store.engine, "before_execute", receipt_first)
    _add(pipeline, "quick", "+14155550100", ["sms", "email"])
    posted = lifecycle.open_incident(
        pipeline.store, IncidentIn(title="x", severity=Severity.MAJOR, components=["api"])
    )
    pipeline.fan_out(posted.update_id)
    pipeline.drain(wait_s=5)

    row = _rows(pipeline)[("quick", "sms")]
    assert early == [row.id]
    assert row.status is DeliveryStatus.DELIVERED and row.delivered_at is not None
    assert row.receipt_due_at is None
    assert row.provider_id and row.provider_id != "SMearly" and row.sent_at is not None
    assert row.attempts == 1 and row.in_flight_since is None and row.lease_until is None
