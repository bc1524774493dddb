"""The sweep on a timer, inside every `outage worker` process that has a broker.

Why not Celery beat alone: a deployment that runs only workers (the common mistake, and what
the Procfile used to invite) recovered nothing a dead worker held: its rows stayed in `sending`
for good. Why not a beat-like task per worker: a sweep task waits in the queue behind the very
backlog it is meant to rescue. So each worker's main process sweeps from a thread of its own,
every `sweep_every_s`, and at once when it starts. Running it in every worker is safe:
re-enqueueing is idempotent (the claim decides who sends) and the part that posts updates runs
in one process at a time (dispatcher/delivery/exclusive.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from dispatcher.logs import RepeatedFailures

log = logging.getLogger(__name__)


class Sweeper:
    """Calls `sweep` now and then every `every_s` seconds until stopped; a failing sweep (the
    database restarting) is logged once and tried again at the next tick."""

    def __init__(self, sweep: Callable[[], object], every_s: float) -> None:
        self.sweep = sweep
        self.every_s = every_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sweeper", daemon=True)
        self._failures = RepeatedFailures(
            log, "worker sweep: a sweep failed", "worker sweep: sweeps succeed again"
        )

    def start(self) -> None:
        self._thread.start()

    def run_once(self) -> bool:
        """One sweep; False when it failed."""
        try:
            self.sweep()
        except Exception as exc:  # the thread must outlive one bad sweep
            self._failures.failed(exc, self.every_s)
            return False
        self._failures.succeeded()
        return True

    def _run(self) -> None:
        self.run_once()
        while not self._stopping.wait(self.every_s):
            self.run_once()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
