"""The sending loop (channels/aio.py): requests in flight are capped per adapter, whatever the
number of batches sending at once, and a forked worker process sends on a loop of its own."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from channels import aio
from channels.base import Channel, Message
from dispatcher.delivery.registry import ChannelRegistry
from dispatcher.sandbox.server import Sandbox
from dispatcher.settings import Settings

CAP = 4


@pytest.fixture
def registry(sandbox: Sandbox) -> Iterator[ChannelRegistry]:
    settings = Settings(
        sandbox_url=sandbox.url,
        database_url="sqlite://",
        send_concurrency=CAP,
        webhook_concurrency=CAP,
    )
    built = ChannelRegistry(settings)
    yield built
    built.close()


def hooks(first: int, count: int) -> list[Message]:
    return [
        Message(key=k, to=f"https://hooks.example.com/outage/{k}", text="API errors", secret="s")
        for k in range(first, first + count)
    ]


def texts(first: int, count: int) -> list[Message]:
    keys = range(first, first + count)
    return [Message(key=k, to="+14155550100", text="API errors") for k in keys]


def test_two_batches_at_once_share_the_adapters_cap(
    registry: ChannelRegistry, sandbox: Sandbox
) -> None:
    sandbox.set_latency(50)  # long enough for every slot to fill
    webhook = registry.get("webhook")
    with ThreadPoolExecutor(2) as lanes:
        answered = list(lanes.map(webhook.send, [hooks(0, 3 * CAP), hooks(100, 3 * CAP)]))
    assert all(outcome.ok for batch in answered for outcome in batch)
    assert sandbox.stats()["max_in_flight"] == CAP


def test_each_adapter_has_its_own_cap(registry: ChannelRegistry, sandbox: Sandbox) -> None:
    sandbox.set_latency(50)
    jobs: list[tuple[Channel, list[Message]]] = [
        (registry.get("webhook"), hooks(0, 3 * CAP)),
        (registry.get("sms"), texts(100, 3 * CAP)),
    ]
    with ThreadPoolExecutor(2) as lanes:
        answered = list(lanes.map(lambda job: job[0].send(job[1]), jobs))
    assert all(outcome.ok for batch in answered for outcome in batch)
    assert sandbox.stats()["max_in_flight"] == 2 * CAP


_inherited: Channel | None = None


def _send_in_child() -> bool:
    assert _inherited is not None
    return all(outcome.ok for outcome in _inherited.send(hooks(200, 3)))


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_worker_sends_on_a_loop_of_its_own(
    registry: ChannelRegistry, sandbox: Sandbox
) -> None:
    """What a Celery prefork child does: the adapter (and its session) were used by the parent
    before the fork; the parent's loop thread did not survive it."""
    global _inherited
    _inherited = registry.get("webhook")
    assert all(outcome.ok for outcome in _inherited.send(hooks(0, 3)))
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply(_send_in_child, ()) is True
    assert sandbox.stats()["requests"]["webhook"] == 6
    assert all(outcome.ok for outcome in _inherited.send(hooks(300, 3)))  # the parent's still works


def test_waiting_on_the_loop_from_the_loop_is_an_error_not_a_hang() -> None:
    async def nested() -> None:
        async def inner() -> None:
            return None

        aio.run(inner())

    with pytest.raises(RuntimeError, match="sending loop itself"):
        aio.run(nested())


def test_first_uses_from_several_threads_build_one_adapter(sandbox: Sandbox) -> None:
    """Two lanes starting at once used to build two webhook adapters, one never closed."""
    settings = Settings(sandbox_url=sandbox.url, database_url="sqlite://")
    for _ in range(5):
        registry = ChannelRegistry(settings)
        start = threading.Barrier(8)

        def first_use(
            _: int, registry: ChannelRegistry = registry, start: threading.Barrier = start
        ) -> Channel:
            start.wait()
            return registry.get("sms")

        with ThreadPoolExecutor(8) as threads:
            built = set(threads.map(first_use, range(8)))
        registry.close()
        assert len(built) == 1
