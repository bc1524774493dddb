"""One process's view of the dispatcher: settings, database, adapters and queue, and the three
things every worker does (fan out, send, sweep). Celery tasks and the embedded loop both call
these methods, so the embedded default and a scaled deployment run the same code.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

from more_itertools import chunked
from pydantic import SecretStr
from sqlalchemy import and_, func, or_, select

from dispatcher.delivery import fanout, receipts, send
from dispatcher.delivery.batch import SendResult
from dispatcher.delivery.exclusive import exclusive
from dispatcher.delivery.guards import Guards
from dispatcher.delivery.late import LateAnswers
from dispatcher.delivery.leases import Leases
from dispatcher.delivery.queue import EmbeddedQueue, Queue
from dispatcher.delivery.registry import ChannelRegistry
from dispatcher.incidents import correlate
from dispatcher.links import Links
from dispatcher.models import DeliveryStatus
from dispatcher.policy import promises
from dispatcher.render.templates import compile_templates
from dispatcher.settings import Settings
from dispatcher.store import Delivery, Store, Update, utcnow

log = logging.getLogger(__name__)

# Batches in progress at once in the embedded loop: while one waits for its provider's answers,
# the next claims, renders and records in the database (one process, so they take turns on the
# CPU; what overlaps is the providers' round trip).
SEND_LANES = 2
LATE_MARGIN_S = 2.0  # an answer left out by its batch comes within the webhook timeout, and this


@dataclass(frozen=True)
class SweepReport:
    updates: int
    deliveries: int


class Pipeline:
    """Built once per process (`dispatcher.delivery.bootstrap.connect`); `close()` releases
    connections and runs what the bootstrap asked to run at the end (stopping its sandbox)."""

    def __init__(
        self,
        settings: Settings,
        queue: Queue | None = None,
        *,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.store = Store(settings.database_url)
        secret_key = settings.secret_key or SecretStr(self.store.instance_secret("links"))
        self.settings = settings.model_copy(update={"secret_key": secret_key})
        self.links = Links(settings.public_url, secret_key.get_secret_value())
        self.registry = ChannelRegistry(self.settings)
        # Rate buckets and circuit breakers per provider account (shared in Redis when it is the
        # broker): built once per process, like the adapters.
        self.guards = Guards.from_settings(self.settings, self.store)
        # Keeps the leases of the rows this process is sending alive (short leases, renewed).
        self.leases = Leases(self.store, self.settings.lease_s)
        # Records the answers a batch did not wait for (a slow webhook receiver).
        self.late = LateAnswers(self._follow_up)
        self.queue: Queue = queue if queue is not None else EmbeddedQueue()
        self._on_close = on_close

    def warm(self) -> None:
        """Build every adapter and compile every template now, before the first incident: cold,
        a worker's first message waited ~0.5 s for them (the Twilio SDK alone imports its REST
        API in 70 ms). A template that does not compile or an adapter that cannot be built (a
        live credential missing) is reported here, and fails its sends as before."""
        for name, error in compile_templates().items():
            log.error("template %s does not compile: %s", name, error)
        for name in self.registry.names:
            try:
                self.registry.get(name)
            except ValueError as exc:
                log.warning("channel %s not ready: %s", name, exc)

    def announce(self, *update_ids: int, wait_s: float | None = None) -> None:
        """What every entry point does once it has committed updates (the CLI, the incidents
        API, monitoring webhooks, the demo, the sweep's own updates): hand their fan-outs to
        the queue, which wakes whoever sends (a Celery worker, or the embedded runner).

        `wait_s`: in a process that runs no runner (a CLI command on the embedded default),
        send them here and now, waiting up to this long for retries that come due."""
        for update_id in update_ids:
            self.queue.fan_out(update_id)
        if wait_s is not None:
            self.drain(wait_s=wait_s)

    def enqueue(self, delivery_ids: Sequence[int], *, wait_s: float | None = None) -> None:
        """Hand existing delivery rows to the queue in batches (an operator's retry, a receipt's
        fallback); `wait_s` as for `announce`."""
        for chunk in chunked(delivery_ids, self.settings.batch_size):
            self.queue.send(list(chunk))
        if wait_s is not None:
            self.drain(wait_s=wait_s)

    def deliver(self, delivery_ids: Sequence[int]) -> None:
        """Rows a person is waiting for (a confirmation): sent here and now when the queue is
        in-process, so they never wait behind an outage's fan-out, else by the workers. Either
        way through `send`: the same claim, guards and record as every message."""
        if not delivery_ids:
            return
        if isinstance(self.queue, EmbeddedQueue):
            self.send(list(delivery_ids))
        else:
            self.enqueue(delivery_ids)

    def fan_out(self, update_id: int, *, send_first: bool = False) -> None:
        """Write the update's deliveries, handing their batches to the queue as they fill.

        `send_first` (the worker's fan-out task): the first batch (the public post, else the
        first key accounts) is sent by this process, on a thread of its own while the fan-out
        goes on. Left to the queue, with one worker process it waited for the whole fan-out
        (5 s for 20,000 subscribers), and with more it waits for a free one; sent before going
        on, a slow receiver in it held every other batch back (35 s for 299 receivers)."""
        batches = fanout.fan_out(self.store, self.registry, update_id, self.settings.batch_size)
        first = next(batches, None) if send_first else None
        if first is None:
            for batch in batches:
                self.queue.send(batch)
            return
        with ThreadPoolExecutor(1, thread_name_prefix="first-batch") as one:
            sending = one.submit(self.send, first)
            for batch in batches:
                self.queue.send(batch)
            sending.result()  # the task ends with its work, as late acknowledgement expects

    def send(self, delivery_ids: list[int]) -> send.SendResult:
        result = send.send_batch(
            self.store,
            self.registry,
            self.settings,
            self.links,
            delivery_ids,
            guards=self.guards,
            leases=self.leases,
            late=self.late,
        )
        self._follow_up(result)
        return result

    def _follow_up(self, result: SendResult) -> None:
        """Queue what a batch (or a late answer) left to do: fallbacks now, retries when due."""
        if result.fallbacks:
            self.queue.send(result.fallbacks)
        if result.retries:
            self.queue.send(result.retries, delay_s=result.retry_in_s or 0.0)

    def sweep(self, stale_s: float) -> SweepReport:
        """Announce held resolves and promised updates that are due, and re-enqueue what the
        queue should have carried by now: updates never fanned out, deliveries due for longer
        than `stale_s`, and deliveries whose worker's lease expired. Deliveries whose receipt
        is overdue go to the subscriber's next channel.

        Every worker sweeps (dispatcher/delivery/sweeper.py); what posts updates or moves
        deliveries runs in one process at a time, the re-enqueueing in any (the claim decides)."""
        with exclusive(self.store, "sweep") as ours:
            if ours:
                self.announce(
                    *correlate.settle(self.store, self.settings),
                    *promises.due_updates(self.store, self.settings),
                )
                overdue = receipts.expire(self.store, self.registry, self.guards.usable)
                if overdue:  # no delivery receipt in time: the next channel
                    self.queue.send(overdue)
        now = utcnow()
        cutoff = now - timedelta(seconds=stale_s)
        with self.store.session() as session:
            update_ids = session.scalars(
                select(Update.id).where(Update.fanned_out_at.is_(None), Update.created_at <= cutoff)
            ).all()
            rows = session.execute(
                select(Delivery.id, Delivery.channel)
                .where(
                    or_(
                        and_(Delivery.status == DeliveryStatus.QUEUED, Delivery.due_at <= cutoff),
                        and_(Delivery.status == DeliveryStatus.SENDING, Delivery.lease_until < now),
                    )
                )
                .order_by(Delivery.priority.desc(), Delivery.id)
            ).all()
        self.announce(*update_ids)
        by_channel: dict[str, list[int]] = {}
        for delivery_id, channel in rows:
            by_channel.setdefault(channel, []).append(delivery_id)
        for ids in by_channel.values():
            self.enqueue(ids)
        if update_ids or rows:
            log.info("sweep re-enqueued %d updates, %d deliveries", len(update_ids), len(rows))
        return SweepReport(updates=len(update_ids), deliveries=len(rows))

    def drain(self, wait_s: float = 0.0, *, settle: bool = True) -> None:
        """Embedded mode: run queued jobs until none is left, waiting up to `wait_s` seconds for
        retries that come due. What is still waiting after that stays queued in the database.

        `settle`: also wait for the answers the batches did not wait for (a slow receiver's),
        which may lead to more jobs; the embedded runner does not, they wake it when recorded."""
        if not isinstance(self.queue, EmbeddedQueue):
            return
        deadline = time.monotonic() + wait_s
        with ThreadPoolExecutor(SEND_LANES, thread_name_prefix="send-batch") as lanes:
            while True:
                self._run_jobs(self.queue, lanes)
                late_s = self.settings.webhook_timeout_s + LATE_MARGIN_S
                if settle and self.late.pending and self.late.wait(late_s):
                    continue  # recorded: their fallbacks may be new jobs
                next_due = self.next_due_in_s()
                if next_due is None or time.monotonic() + next_due > deadline:
                    return
                time.sleep(max(0.0, next_due))
                self.sweep(stale_s=0)

    def _run_jobs(self, queue: EmbeddedQueue, lanes: ThreadPoolExecutor) -> None:
        """Send every queued batch, SEND_LANES at a time, until no job is left (a batch's
        fallbacks and retries are queued by it as it ends)."""
        sending: deque[Future[send.SendResult]] = deque()
        while queue.jobs or sending:
            if not queue.jobs:
                sending.popleft().result()  # its fallbacks may be new jobs
                continue
            kind, arg = queue.jobs.popleft()
            # In-process, each batch is sent as soon as its rows are written (through a broker,
            # workers take them as they come): the first message does not wait for the last row
            # of a large audience.
            batches = (
                fanout.fan_out(self.store, self.registry, arg, self.settings.batch_size)  # type: ignore[arg-type]
                if kind == "fan_out"
                else [arg]
            )
            for batch in batches:
                if len(sending) >= SEND_LANES:
                    sending.popleft().result()
                sending.append(lanes.submit(self.send, batch))  # type: ignore[arg-type]

    def next_due_in_s(self) -> float | None:
        """Seconds until the earliest queued delivery is due; None when nothing is queued."""
        with self.store.session() as session:
            due = session.scalar(
                select(func.min(Delivery.due_at)).where(Delivery.status == DeliveryStatus.QUEUED)
            )
        if due is None:
            return None
        if due.tzinfo is None:  # min() over SQLite bypasses the column type
            due = due.replace(tzinfo=utcnow().tzinfo)
        return max(0.0, (due - utcnow()).total_seconds())

    def close(self) -> None:
        self.late.close(self.settings.webhook_timeout_s + LATE_MARGIN_S)
        self.leases.close()
        self.registry.close()
        self.guards.close()
        self.store.close()
        if self._on_close is not None:
            self._on_close()
