"""Answers that come after their batch moved on: one slow receiver never holds up the others.

A webhook receiver that hangs used to hold its whole batch for the timeout and every retry of
it, and with it every batch behind it in the worker: 299 receivers waited 35 s for one. Now a
send waits for its slowest answers only so long (`Channel.patience_s`, webhooks), the batch is
recorded and goes on, and the answers still out are recorded here, by a thread of the process,
as they come (a timeout comes back as transient: tried again later through the queue). Until
then their rows stay claimed, their leases renewed (dispatcher/delivery/leases.py); a process
that dies first leaves them to the sweep, counted as possibly sent twice like any row in flight.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from channels.base import Outcome
from dispatcher.delivery.batch import Context, SendResult
from dispatcher.delivery.rows import Loaded
from dispatcher.delivery.send import record_answers

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.5  # how often the recorder looks whether it is asked to stop


@dataclass(frozen=True)
class _Answer:
    context: Context
    channel: str
    item: Loaded
    outcome: Outcome


class LateAnswers:
    """Records late answers on a thread of its own (started on first use, again after a fork)
    and hands what they lead to (retries, fallbacks) to `follow_up`, the queue."""

    def __init__(self, follow_up: Callable[[SendResult], None]) -> None:
        self.follow_up = follow_up
        self._answers: queue.SimpleQueue[_Answer] = queue.SimpleQueue()
        self._lock = threading.Condition()
        self._pending = 0  # answers expected and not yet recorded
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def awaiter(
        self, context: Context, channel: str, chunk: list[Loaded]
    ) -> Callable[[Outcome], None]:
        """What the adapter calls with each late answer of `chunk` (on the sending loop: it
        only queues the answer)."""
        items = {item.delivery.id: item for item in chunk}
        self._start()
        return lambda outcome: self._answers.put(
            _Answer(context, channel, items[outcome.key], outcome)
        )

    def expect(self, count: int) -> None:
        """`count` answers of a send are still out."""
        with self._lock:
            self._pending += count
            self._lock.notify_all()

    @property
    def pending(self) -> int:
        with self._lock:
            return max(0, self._pending)

    def wait(self, timeout_s: float) -> bool:
        """Wait until every expected answer is recorded; False if some still are not."""
        with self._lock:
            return self._lock.wait_for(lambda: self._pending <= 0, timeout=timeout_s)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stopping.clear()
                self._thread = threading.Thread(target=self._run, name="late", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                first = self._answers.get(timeout=IDLE_POLL_S)
            except queue.Empty:
                continue
            answers = [first]
            while not self._answers.empty():  # all that came meanwhile: one transaction each
                answers.append(self._answers.get_nowait())
            for answer in answers:
                try:
                    self._record(answer)
                except Exception:  # the database still away, the broker refusing a retry
                    log.exception(
                        "delivery %s: its late answer could not be recorded or followed up; "
                        "the sweep sends it again",
                        answer.item.delivery.id,
                    )
            with self._lock:
                self._pending -= len(answers)
                self._lock.notify_all()

    def _record(self, answer: _Answer) -> None:
        """Record one answer (tried again while the database is away, as every chunk's); if it
        still cannot be, its row's lease is let go, and the sweep sends it again."""
        context, key = answer.context, answer.item.delivery.id
        result = SendResult()
        try:
            record_answers(context, answer.channel, [answer.item], {key: answer.outcome}, result)
            self.follow_up(result)
        finally:
            context.leases.release([key])

    def close(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for the answers still out, then stop."""
        if self._thread is None:
            return
        if not self.wait(timeout_s):
            log.warning("%d late answers were not recorded before closing", self.pending)
        self._stopping.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=IDLE_POLL_S * 4)
