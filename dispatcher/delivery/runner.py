"""The embedded runner: the one loop that sends on the embedded default, in `outage serve` (a
thread of the web process) and in `outage worker` without a broker (the foreground).

A pass sweeps (what came due, what a lost job left behind) and then drains the in-process queue.
The loop outlives a failing pass (the database restarting, a provider's adapter that cannot be
built): its rows stay queued and the next pass tries again. It logs a failure once per distinct
error, with its traceback, and once when passes succeed again, not a traceback per second.
Between passes it waits for the queue to say it has work (`EmbeddedQueue.ready`, set by
`Pipeline.announce` and every enqueue) or for `poll_s`, whichever comes first.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from sqlalchemy import delete

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.delivery.queue import EmbeddedQueue
from dispatcher.logs import RepeatedFailures
from dispatcher.store import Heartbeat, utcnow

log = logging.getLogger(__name__)

POLL_S = 1.0  # the longest a due delivery waits for a pass when nothing wakes the runner


class Runner:
    """Runs passes until stopped; `start()` runs them in a thread, `run()` in the caller."""

    def __init__(self, pipeline: Pipeline, poll_s: float = POLL_S) -> None:
        if not isinstance(pipeline.queue, EmbeddedQueue):
            raise TypeError("the embedded runner drains an in-process queue; a broker has workers")
        self.pipeline = pipeline
        self.queue: EmbeddedQueue = pipeline.queue
        self.poll_s = poll_s
        self.stopping = threading.Event()
        self._failures = RepeatedFailures(
            log, "embedded runner: a pass failed", "embedded runner: passes succeed again"
        )
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.thread: threading.Thread | None = None

    def run_pass(self) -> bool:
        """One sweep and drain; False when it failed (logged once per distinct error)."""
        try:
            self.pipeline.sweep(stale_s=0)
            self.pipeline.drain(settle=False)  # late answers wake the next pass themselves
            self._beat()
        except Exception as exc:  # the loop must outlive one bad pass; the rows stay queued
            self._failures.failed(exc, self.poll_s)
            return False
        self._failures.succeeded()
        return True

    @property
    def failures(self) -> int:
        """Passes failed in a row."""
        return self._failures.count

    def _beat(self) -> None:
        """Say this runner is alive (`outage doctor`, and commands that leave messages waiting,
        read it): one row per runner, rewritten each pass."""
        with self.pipeline.store.session() as session:
            session.merge(Heartbeat(name=self.name, at=utcnow(), kind="embedded"))

    def run(self) -> None:
        """Warm up, then run passes until `stop()` (or KeyboardInterrupt in the caller)."""
        try:
            self.pipeline.warm()
        except Exception:  # readiness is an optimisation: sending works without it
            log.exception("embedded runner: warming up failed")
        try:
            while not self.stopping.is_set():
                self.queue.ready.clear()  # before the pass: work queued during it wakes the next
                self.run_pass()
                self.queue.ready.wait(self.poll_s)
        finally:
            self._forget()

    def _forget(self) -> None:
        """No longer running: say so at once rather than when the heartbeat grows old."""
        try:
            with self.pipeline.store.session() as session:
                session.execute(delete(Heartbeat).where(Heartbeat.name == self.name))
        except Exception:  # the database may be what stopped us; the heartbeat ages out
            log.warning("embedded runner: could not clear its heartbeat", exc_info=True)

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name="embedded-runner", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.queue.ready.set()
        if self.thread is not None:
            self.thread.join(timeout=10)
