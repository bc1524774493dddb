"""The core pipeline end to end: incident update -> audience -> deliveries -> real SDKs -> sandbox.

Runs on SQLite and PostgreSQL (the `database_url` fixture). Failures are injected in the sandbox,
never by patching our own code.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents import lifecycle, reports
from dispatcher.models import DeliveryStatus, IncidentIn, IncidentState, Severity, SubscriberIn
from dispatcher.sandbox.server import Sandbox
from dispatcher.store import Delivery, Subscriber, utcnow
from dispatcher.subscribers import records

DEAD_PHONE = "+14155550123"


def add(pipeline: Pipeline, **fields: object) -> int:
    data = SubscriberIn.model_validate({"confirmed": True, **fields})
    return records.add(pipeline.store, pipeline.registry, data).id


def open_incident(
    pipeline: Pipeline, severity: Severity = Severity.MAJOR, components: tuple[str, ...] = ("api",)
) -> lifecycle.Posted:
    posted = lifecycle.open_incident(
        pipeline.store,
        IncidentIn(title="API errors", severity=severity, components=list(components)),
    )
    pipeline.announce(posted.update_id, wait_s=5)
    return posted


def statuses(pipeline: Pipeline, incident_id: int) -> dict[tuple[str, str], str]:
    return {
        (line.subscriber, line.channel): line.status
        for line in reports.deliveries(pipeline.store, incident_id)
    }


def test_each_concerned_subscriber_hears_once_on_their_first_channel(
    pipeline: Pipeline, sandbox: Sandbox
) -> None:
    add(
        pipeline,
        name="sms first",
        phone="+14155550100",
        email="a@example.org",
        channels=["sms", "email"],
    )
    add(pipeline, name="email only", email="b@example.org", channels=["email"])
    add(pipeline, name="hook", webhook=f"{sandbox.url}/hooks/h", channels=["webhook"])
    add(
        pipeline,
        name="other component",
        email="c@example.org",
        channels=["email"],
        components=["search"],
    )
    add(
        pipeline,
        name="critical only",
        email="d@example.org",
        channels=["email"],
        min_severity="critical",
    )
    add(pipeline, name="unconfirmed", email="e@example.org", channels=["email"], confirmed=False)

    posted = open_incident(pipeline)

    assert statuses(pipeline, posted.incident_id) == {
        ("sms first", "sms"): "sent",
        ("email only", "email"): "sent",
        ("hook", "webhook"): "sent",
        ("(public)", "social"): "sent",
    }
    assert [m["to"] for m in sandbox.messages("sms")] == ["+14155550100"]
    assert [m["to"] for m in sandbox.messages("email")] == ["b@example.org"]
    assert len(sandbox.messages("social")) == 1
    assert len(sandbox.messages("webhook")) == 1


def test_critical_incident_reaches_a_critical_only_subscriber(pipeline: Pipeline) -> None:
    add(
        pipeline,
        name="critical only",
        email="d@example.org",
        channels=["email"],
        min_severity="critical",
    )
    posted = open_incident(pipeline, severity=Severity.CRITICAL)
    assert statuses(pipeline, posted.incident_id)[("critical only", "email")] == "sent"


def test_permanent_failure_falls_back_to_the_next_channel(
    pipeline: Pipeline, sandbox: Sandbox
) -> None:
    sandbox.inject_recipient_failure(DEAD_PHONE)
    add(
        pipeline,
        name="dead phone",
        phone=DEAD_PHONE,
        email="dana@example.org",
        channels=["sms", "email"],
    )

    posted = open_incident(pipeline)

    lines = [
        line
        for line in reports.deliveries(pipeline.store, posted.incident_id)
        if line.subscriber == "dead phone"
    ]
    by_channel = {line.channel: line for line in lines}
    assert by_channel["sms"].status == DeliveryStatus.FELL_BACK
    assert by_channel["sms"].attempts == 1, "a permanent failure is not retried"
    assert "21211" in (by_channel["sms"].last_error or "")
    assert by_channel["email"].status == DeliveryStatus.SENT
    assert by_channel["email"].fallback_of == by_channel["sms"].id
    assert [m["to"] for m in sandbox.messages("email")] == ["dana@example.org"]


def test_permanent_failure_on_the_last_channel_is_failed(
    pipeline: Pipeline, sandbox: Sandbox
) -> None:
    sandbox.inject_recipient_failure(DEAD_PHONE)
    add(pipeline, name="sms only", phone=DEAD_PHONE, channels=["sms"])
    posted = open_incident(pipeline)
    assert statuses(pipeline, posted.incident_id)[("sms only", "sms")] == "failed"


def test_transient_failures_are_retried_inside_the_send_then_by_the_queue(
    pipeline: Pipeline, sandbox: Sandbox
) -> None:
    # 3 tries inside a send (send_attempts) all fail, the queue's second send succeeds.
    sandbox.inject_failures(4, "503", channel="sms")
    add(pipeline, name="sms", phone="+14155550100", channels=["sms"])

    posted = open_incident(pipeline)

    [line] = [
        x for x in reports.deliveries(pipeline.store, posted.incident_id) if x.channel == "sms"
    ]
    assert line.status == DeliveryStatus.SENT
    assert line.attempts == 5
    assert line.provider_id and line.provider_id.startswith("SM")
    assert len(sandbox.messages("sms")) == 1


NOON = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.mark.time_machine(NOON, tick=False)
def test_a_long_retry_after_is_waited_out_in_the_queue_not_in_the_send(
    pipeline: Pipeline, sandbox: Sandbox
) -> None:
    """The provider asks for a minute, more than a send waits (send_backoff_max_s): the delivery
    goes back to the queue due a minute later, the provider asked no sooner."""
    sandbox.inject_failures(1, "429", channel="sms", retry_after_s=60)
    add(pipeline, name="a", phone="+14155550100", channels=["sms"])

    posted = open_incident(pipeline)

    [line] = [
        x for x in reports.deliveries(pipeline.store, posted.incident_id) if x.subscriber == "a"
    ]
    assert (line.channel, line.status) == ("sms", DeliveryStatus.QUEUED)
    assert [status for _, status in sandbox.request_log("sms")] == [429]
    with pipeline.store.session() as session:
        due = session.get_one(Delivery, line.id).due_at
    assert due - NOON == timedelta(seconds=60)


def test_transient_failures_beyond_the_limit_fall_back(
    pipeline: Pipeline, sandbox: Sandbox
) -> None:
    limit = pipeline.settings.delivery_attempts * pipeline.settings.send_attempts
    sandbox.inject_failures(limit, "429", channel="sms")
    add(
        pipeline,
        name="both",
        phone="+14155550100",
        email="a@example.org",
        channels=["sms", "email"],
    )

    posted = open_incident(pipeline)

    lines = {
        x.channel: x
        for x in reports.deliveries(pipeline.store, posted.incident_id)
        if x.subscriber == "both"
    }
    assert lines["sms"].status == DeliveryStatus.FELL_BACK
    assert lines["sms"].attempts == limit
    assert lines["email"].status == DeliveryStatus.SENT


def test_a_duplicated_task_sends_nothing_twice(pipeline: Pipeline, sandbox: Sandbox) -> None:
    add(pipeline, name="a", email="a@example.org", channels=["email"])
    posted = open_incident(pipeline)
    ids = [line.id for line in reports.deliveries(pipeline.store, posted.incident_id)]

    pipeline.fan_out(posted.update_id)  # the fan-out task delivered again
    pipeline.send(ids)  # and a send task

    assert len(reports.deliveries(pipeline.store, posted.incident_id)) == len(ids)
    assert len(sandbox.messages("email")) == 1


def test_an_update_never_enqueued_is_found_by_the_sweep(
    pipeline: Pipeline, sandbox: Sandbox
) -> None:
    add(pipeline, name="a", email="a@example.org", channels=["email"])
    # The process "died" after the commit and before the enqueue.
    posted = lifecycle.open_incident(
        pipeline.store, IncidentIn(title="x", severity=Severity.MINOR, components=["api"])
    )
    assert pipeline.sweep(stale_s=0).updates == 1
    pipeline.drain()
    assert statuses(pipeline, posted.incident_id)[("a", "email")] == "sent"
    assert pipeline.sweep(stale_s=0).updates == 0


def test_an_expired_lease_is_sent_again_by_the_sweep(pipeline: Pipeline, sandbox: Sandbox) -> None:
    add(pipeline, name="a", email="a@example.org", channels=["email"])
    posted = lifecycle.open_incident(
        pipeline.store, IncidentIn(title="x", severity=Severity.MINOR, components=["api"])
    )
    pipeline.fan_out(posted.update_id)
    pipeline.queue.jobs.clear()  # type: ignore[attr-defined]  # the worker holding them died
    with pipeline.store.session() as session:
        session.execute(
            update(Delivery).values(status=DeliveryStatus.SENDING, lease_until=utcnow())
        )
    assert pipeline.sweep(stale_s=60).deliveries == 2  # the email and the public post
    pipeline.drain()
    assert statuses(pipeline, posted.incident_id)[("a", "email")] == "sent"


def test_an_opt_out_after_queueing_is_honoured_at_send_time(
    pipeline: Pipeline, sandbox: Sandbox
) -> None:
    subscriber_id = add(pipeline, name="a", email="a@example.org", channels=["email"])
    posted = lifecycle.open_incident(
        pipeline.store, IncidentIn(title="x", severity=Severity.MINOR, components=["api"])
    )
    pipeline.fan_out(posted.update_id)
    with pipeline.store.session() as session:
        session.get_one(Subscriber, subscriber_id).unsubscribed_at = utcnow()
    pipeline.drain()
    assert statuses(pipeline, posted.incident_id)[("a", "email")] == "suppressed"
    assert sandbox.messages("email") == []


def test_webhook_carries_the_incident_and_a_verifiable_signature(
    pipeline: Pipeline, sandbox: Sandbox
) -> None:
    from channels.webhook import verify

    add(pipeline, name="hook", webhook=f"{sandbox.url}/hooks/h", channels=["webhook"])
    posted = open_incident(pipeline)
    [message] = sandbox.messages("webhook")
    with pipeline.store.session() as session:
        secret = session.scalars(select(Subscriber.webhook_secret)).one()
    assert secret is not None
    headers = {k.lower(): v for k, v in message["headers"].items()}
    assert verify(secret, headers["x-outage-signature"], message["body"].encode())
    body = json.loads(message["body"])
    assert body["incident"]["id"] == posted.incident_id
    assert body["incident"]["state"] == "investigating"
    assert "API errors" in body["text"]


def test_resolve_tells_everyone_and_closes(pipeline: Pipeline, sandbox: Sandbox) -> None:
    add(pipeline, name="a", email="a@example.org", channels=["email"])
    posted = open_incident(pipeline)
    resolved = lifecycle.resolve(pipeline.store, posted.incident_id, "Fixed.")
    pipeline.announce(resolved.update_id, wait_s=0)
    found, updates = reports.incident(pipeline.store, posted.incident_id)
    assert found.state == IncidentState.RESOLVED and found.resolved_at is not None
    assert [u.state for u in updates] == ["investigating", "resolved"]
    subjects = [m["subject"] for m in sandbox.messages("email")]
    assert len(subjects) == 2 and "resolved" in subjects[1].lower()
    with pytest.raises(lifecycle.IncidentError, match="resolved"):
        lifecycle.post_update(pipeline.store, posted.incident_id, IncidentState.MONITORING, "x")


def test_unknown_incident_is_a_clear_error(pipeline: Pipeline) -> None:
    with pytest.raises(lifecycle.IncidentNotFound, match="no incident with id 42"):
        lifecycle.resolve(pipeline.store, 42, None)


def test_a_webhook_answering_410_is_suppressed_and_not_tried_again(
    pipeline: Pipeline, sandbox: Sandbox
) -> None:
    hook = f"{sandbox.url}/hooks/gone"
    sandbox.inject_recipient_failure(hook)
    add(pipeline, name="h", webhook=hook, email="h@example.org", channels=["webhook", "email"])

    first = open_incident(pipeline)
    assert statuses(pipeline, first.incident_id)[("h", "webhook")] == "fell_back"
    assert statuses(pipeline, first.incident_id)[("h", "email")] == "sent"

    second = open_incident(pipeline)
    assert ("h", "webhook") not in statuses(pipeline, second.incident_id)
    assert statuses(pipeline, second.incident_id)[("h", "email")] == "sent"
    assert len(sandbox.messages("webhook")) == 0
