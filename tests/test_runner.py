"""The one embedded runner loop (`outage serve` and `outage worker` without a broker): it
survives a failing pass and logs each distinct failure once, not a traceback per pass."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import text

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.delivery.runner import Runner
from dispatcher.incidents import lifecycle, reports
from dispatcher.models import DeliveryStatus, IncidentIn, Severity, SubscriberIn
from dispatcher.store import Base
from dispatcher.subscribers import records

RUNNER_LOGGER = "dispatcher.delivery.runner"


def _failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == RUNNER_LOGGER and r.levelno >= logging.ERROR]


def test_a_failing_pass_is_survived_and_logged_once(
    pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    """A table gone (as a database restored from an old dump would leave it) fails every pass
    the same way: one error with its traceback, then silence, then one line when it recovers,
    and what was queued meanwhile is sent by the next good pass."""
    runner = Runner(pipeline)
    with pipeline.store.engine.begin() as connection:
        connection.execute(text("DROP TABLE deliveries"))
    with caplog.at_level(logging.INFO, logger=RUNNER_LOGGER):
        assert [runner.run_pass() for _ in range(5)] == [False] * 5
        assert len(_failures(caplog)) == 1, "one traceback for five identical failures"
        assert "no such table" in caplog.text or "does not exist" in caplog.text, "says why"
        Base.metadata.create_all(pipeline.store.engine)
        records.add(
            pipeline.store,
            pipeline.registry,
            SubscriberIn(name="a", phone="+14155550100", channels=["sms"], confirmed=True),
        )
        posted = lifecycle.open_incident(
            pipeline.store, IncidentIn(title="x", severity=Severity.MAJOR, components=["api"])
        )
        pipeline.announce(posted.update_id)
        assert runner.queue.ready.is_set(), "an announcement wakes the runner"
        assert runner.run_pass()
    recovered = [r for r in caplog.records if "succeed again" in r.getMessage()]
    assert len(recovered) == 1
    assert runner.failures == 0
    lines = reports.deliveries(pipeline.store, posted.incident_id)
    assert {line.channel for line in lines} >= {"sms"}
    assert {line.status for line in lines} == {DeliveryStatus.SENT}


def test_a_different_failure_is_logged_again(
    pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    runner = Runner(pipeline)
    with caplog.at_level(logging.INFO, logger=RUNNER_LOGGER):
        with pipeline.store.engine.begin() as connection:
            connection.execute(text("DROP TABLE deliveries"))
        assert not runner.run_pass()
        assert not runner.run_pass()
        with pipeline.store.engine.begin() as connection:
            connection.execute(text("DROP TABLE updates"))
        assert not runner.run_pass()
    assert len(_failures(caplog)) == 2


def test_the_runner_refuses_a_broker_queue(settings: object) -> None:
    from dispatcher.delivery.tasks import CeleryQueue, make_celery
    from dispatcher.settings import Settings

    assert isinstance(settings, Settings)
    queued = Pipeline(settings, CeleryQueue(make_celery(settings)))
    try:
        with pytest.raises(TypeError, match="in-process queue"):
            Runner(queued)
    finally:
        queued.close()
