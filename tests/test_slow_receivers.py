"""One slow receiver never holds up the others: a webhook endpoint that hangs costs only its own
delivery (the batch records the others and goes on; its answer, a timeout, is recorded when it
comes and tried again through the queue), and the fan-out does not wait for its first batch.
The same with real workers and 400 receivers: bench/faults.py."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents import lifecycle
from dispatcher.models import DeliveryStatus, FailureReason, IncidentIn, Severity, SubscriberIn
from dispatcher.sandbox.server import Sandbox
from dispatcher.settings import Settings
from dispatcher.store import Delivery, Subscriber
from dispatcher.subscribers import records


def receivers(pipeline: Pipeline, sandbox: Sandbox, count: int) -> list[str]:
    urls = [f"{sandbox.url}/hooks/r{n}" for n in range(count)]
    for n, url in enumerate(urls):
        records.add(
            pipeline.store,
            pipeline.registry,
            SubscriberIn(name=f"r{n}", webhook=url, channels=["webhook"], confirmed=True),
        )
    return urls


def open_incident(pipeline: Pipeline) -> int:
    posted = lifecycle.open_incident(
        pipeline.store, IncidentIn(title="x", severity=Severity.MAJOR, components=["api"])
    )
    return posted.update_id


def webhook_rows(pipeline: Pipeline) -> dict[str, Delivery]:
    with pipeline.store.session() as session:
        found = session.execute(
            select(Delivery, Subscriber.name)
            .join(Subscriber, Delivery.subscriber_id == Subscriber.id)
            .where(Delivery.channel == "webhook")
        ).all()
    return {name: row for row, name in found}


def test_a_hanging_receiver_costs_only_its_own_delivery(
    pipeline: Pipeline, sandbox: Sandbox
) -> None:
    urls = receivers(pipeline, sandbox, 6)
    sandbox.inject_recipient_delay(urls[2], 30)  # never answers within the 2 s timeout
    pipeline.fan_out(open_incident(pipeline))
    pipeline.queue.jobs.clear()  # type: ignore[attr-defined]  # sent here instead

    pipeline.send([row.id for row in webhook_rows(pipeline).values()])

    rows = webhook_rows(pipeline)
    assert sandbox.stats()["in_flight"] == 1, "the hanging request is still out"
    assert Counter(row.status for row in rows.values()) == {
        DeliveryStatus.SENT: 5,
        DeliveryStatus.SENDING: 1,
    }, "the batch recorded the others and did not wait for it"
    assert rows["r2"].lease_until is not None and rows["r2"].id in pipeline.leases.held

    assert pipeline.late.wait(10), "its answer (a timeout) is recorded when it comes"
    late = webhook_rows(pipeline)["r2"]
    assert (late.status, late.wait_reason, late.error_reason) == (
        DeliveryStatus.QUEUED,
        "retry",
        FailureReason.TIMEOUT,
    ), "tried again later through the queue"
    assert late.attempts == 1, "not again inside the send"
    assert late.id not in pipeline.leases.held
    assert late.in_flight_since is not None, "it may have arrived: its retry will count"


def test_the_fan_out_does_not_wait_for_its_first_batch(
    settings: Settings, sandbox: Sandbox
) -> None:
    """The worker's fan-out sends the first batch itself, but hands the others to the queue
    while that batch is still with its receivers."""

    class Watching:
        """A queue that notes how far the first batch had got when each batch was queued."""

        def __init__(self) -> None:
            self.seen: list[int] = []

        def fan_out(self, update_id: int) -> None:
            raise AssertionError("not asked here")

        def send(self, delivery_ids: list[int], delay_s: float = 0.0) -> None:
            self.seen.append(len(sandbox.messages("webhook")))

    queue = Watching()
    pipeline = Pipeline(settings.model_copy(update={"broadcast": [], "batch_size": 3}), queue)
    try:
        receivers(pipeline, sandbox, 6)
        sandbox.set_latency(300)
        pipeline.fan_out(open_incident(pipeline), send_first=True)
        assert queue.seen == [0], "the second batch was queued before the first was answered"
        assert len(sandbox.messages("webhook")) == 3, "and the first was sent here"
    finally:
        pipeline.close()
