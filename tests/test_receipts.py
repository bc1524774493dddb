"""Delivery receipts: the providers' words mapped to ours, each event applied once, undelivered
messages going to the next channel, and the receipt timeout. Events here are built by the
providers' own parsers (channels/sms_events.py, email_events.py) from provider-shaped input;
tests/test_callbacks.py goes through the signed HTTP routes."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from channels import email_events, sms_events
from channels.base import Outcome
from channels.events import ProviderEvent
from dispatcher.delivery import outcomes, receipts
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents import reports
from dispatcher.models import DeliveryStatus, ReceiptStatus
from dispatcher.sandbox.server import Sandbox
from dispatcher.settings import Settings
from dispatcher.store import Delivery, Receipt, Suppression, utcnow
from tests.conftest import tell_one_subscriber


def test_provider_words_map_to_ours_with_unknown_as_the_fallback() -> None:
    twilio = sms_events.parse_status_callback(
        {"MessageSid": "SM1", "MessageStatus": "undelivered"}, "7", None
    )
    assert (twilio.status, twilio.delivery_id, twilio.event_id) == (
        ReceiptStatus.UNDELIVERED,
        7,
        "SM1:undelivered",
    )
    odd = sms_events.parse_status_callback(
        {"MessageSid": "SM1", "MessageStatus": "teleported"}, None, "t"
    )
    assert odd.status is ReceiptStatus.UNKNOWN and odd.event_id == "t"

    events = email_events.parse_events(
        [
            {"event": "delivered", "sg_event_id": "a", "delivery_id": "3"},
            {"event": "bounce", "type": "bounce", "sg_event_id": "b"},
            {"event": "bounce", "type": "blocked", "sg_event_id": "c"},
            {"event": "spamreport", "sg_event_id": "d"},
            {"event": "group_resubscribe", "sg_event_id": "e"},
        ]
    )
    assert [e.status for e in events] == [
        ReceiptStatus.DELIVERED,
        ReceiptStatus.BOUNCED,
        ReceiptStatus.UNDELIVERED,  # a block is temporary: no suppression
        ReceiptStatus.COMPLAINED,
        ReceiptStatus.UNKNOWN,
    ]
    assert events[0].delivery_id == 3
    with pytest.raises(ValueError, match="JSON array"):
        email_events.parse_events({"event": "delivered"})


def _sent(pipeline: Pipeline, channels: list[str]) -> tuple[int, Delivery]:
    """The incident and the delivery on the first of `channels`."""
    incident_id = tell_one_subscriber(pipeline, channels)
    with pipeline.store.session() as session:
        first = session.scalars(select(Delivery).where(Delivery.channel == channels[0])).one()
    return incident_id, first


def _sent_sms_with_email_next(pipeline: Pipeline) -> tuple[int, Delivery]:
    return _sent(pipeline, ["sms", "email"])


def _twilio(sms: Delivery, status: str, token: str) -> ProviderEvent:
    form = {"MessageSid": str(sms.provider_id), "MessageStatus": status, "To": "+14155550100"}
    return sms_events.parse_status_callback(form, str(sms.id), token)


def test_undelivered_goes_to_the_next_channel_once(pipeline: Pipeline, sandbox: Sandbox) -> None:
    incident_id, sms = _sent_sms_with_email_next(pipeline)
    event = _twilio(sms, "undelivered", "token-1")

    first = receipts.apply(pipeline.store, pipeline.registry, [event])
    again = receipts.apply(pipeline.store, pipeline.registry, [event])  # Twilio sent it twice

    assert (first.applied, len(first.fallbacks), again.duplicates, again.fallbacks) == (1, 1, 1, [])
    pipeline.enqueue(first.fallbacks)
    pipeline.drain()
    lines = {line.channel: line for line in reports.deliveries(pipeline.store, incident_id)}
    assert lines["sms"].status == DeliveryStatus.FELL_BACK
    assert lines["sms"].last_error == "twilio reported it undelivered"
    assert lines["email"].status == DeliveryStatus.SENT
    assert lines["email"].fallback_of == sms.id
    assert [m["to"] for m in sandbox.messages("email")] == ["a@example.org"]


def test_a_confirmed_delivery_stops_the_chain(pipeline: Pipeline) -> None:
    incident_id, sms = _sent_sms_with_email_next(pipeline)
    receipts.apply(pipeline.store, pipeline.registry, [_twilio(sms, "delivered", "t1")])
    late = receipts.apply(pipeline.store, pipeline.registry, [_twilio(sms, "undelivered", "t2")])
    assert late.fallbacks == []
    [line] = [x for x in reports.deliveries(pipeline.store, incident_id) if x.channel != "social"]
    assert line.status == DeliveryStatus.DELIVERED


def test_an_event_for_no_delivery_of_ours_is_kept_and_does_nothing(pipeline: Pipeline) -> None:
    ghost = sms_events.parse_status_callback(
        {"MessageSid": "SMnope", "MessageStatus": "failed"}, None, "g"
    )
    assert receipts.apply(pipeline.store, pipeline.registry, [ghost]).unmatched == 1
    with pipeline.store.session() as session:
        assert session.scalars(select(Receipt.delivery_id)).all() == [None]


def test_a_hard_bounce_suppresses_the_address_and_falls_back(pipeline: Pipeline) -> None:
    _, email = _sent(pipeline, ["email", "sms"])
    [bounce] = email_events.parse_events(
        [
            {
                "event": "bounce",
                "sg_event_id": "x1",
                "email": "a@example.org",
                "delivery_id": email.id,
            }
        ]
    )
    applied = receipts.apply(pipeline.store, pipeline.registry, [bounce])
    assert len(applied.fallbacks) == 1
    with pipeline.store.session() as session:
        suppressed = session.scalars(select(Suppression)).one()
        assert (suppressed.kind, suppressed.address, suppressed.reason) == (
            "email",
            "a@example.org",
            "bounce",
        )


def test_no_receipt_in_time_sends_on_the_next_channel_and_the_last_stays_sent(
    settings: Settings, sandbox: Sandbox
) -> None:
    pipeline = Pipeline(settings.model_copy(update={"receipt_timeout_s": 60}))
    try:
        incident_id, sms = _sent_sms_with_email_next(pipeline)
        assert sms.receipt_due_at is not None
        assert pipeline.sweep(stale_s=30).deliveries == 0  # not yet due: nothing happens
        with pipeline.store.session() as session:  # a minute later, still no word from Twilio
            session.execute(update(Delivery).values(receipt_due_at=utcnow()))
        pipeline.sweep(stale_s=30)
        pipeline.drain()
        lines = {line.channel: line for line in reports.deliveries(pipeline.store, incident_id)}
        assert lines["sms"].status == DeliveryStatus.FELL_BACK
        assert "no delivery receipt" in (lines["sms"].last_error or "")
        assert lines["email"].status == DeliveryStatus.SENT

        with pipeline.store.session() as session:
            session.execute(update(Delivery).values(receipt_due_at=utcnow()))
        assert receipts.expire(pipeline.store, pipeline.registry) == []  # email was the last
        lines = {line.channel: line for line in reports.deliveries(pipeline.store, incident_id)}
        assert lines["email"].status == DeliveryStatus.SENT
    finally:
        pipeline.close()


def test_a_receipt_that_beats_the_send_record_is_not_overwritten(pipeline: Pipeline) -> None:
    """Twilio can call back before the worker has written "sent": the receipt wins."""
    _, sms = _sent_sms_with_email_next(pipeline)
    with pipeline.store.session() as session:  # as it was while the worker was still sending
        session.execute(
            update(Delivery).where(Delivery.id == sms.id).values(status=DeliveryStatus.SENDING)
        )
    receipts.apply(pipeline.store, pipeline.registry, [_twilio(sms, "delivered", "early")])
    with pipeline.store.session() as session:  # and now the worker records its outcome
        row = session.get_one(Delivery, sms.id)
        outcomes._record_sent(row, Outcome(key=sms.id, provider_id="SM2"), pipeline.settings)
    with pipeline.store.session() as session:
        row = session.get_one(Delivery, sms.id)
        assert row.status is DeliveryStatus.DELIVERED and row.delivered_at is not None
        assert row.receipt_due_at is None
