"""The transport between pipeline steps: in-process (embedded default) or Celery (at scale).

A queue only carries "fan out update N" and "send deliveries [ids]"; the rows say what is left to
do. Losing a message here delays work until the sweep finds it; doubling one is harmless.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Literal, Protocol

Job = tuple[Literal["fan_out"], int] | tuple[Literal["send"], list[int]]


class Queue(Protocol):
    def fan_out(self, update_id: int) -> None:
        """Ask for the deliveries of an update to be written and sent."""

    def send(self, delivery_ids: list[int], delay_s: float = 0.0) -> None:
        """Ask for these deliveries to be sent, not before `delay_s` seconds from now."""


class EmbeddedQueue:
    """Jobs held in memory and run by the same process (see Pipeline.drain).

    Delayed sends are not held here: their rows carry `due_at`, and the sweep that `drain` and
    the embedded runner run picks them up when due, so a retry survives the process exiting.
    `ready` is set by every job put here: the embedded runner (dispatcher/delivery/runner.py)
    waits on it between passes, so a request's job is sent at once, not at the next poll.
    """

    def __init__(self) -> None:
        self.jobs: deque[Job] = deque()
        self.ready = threading.Event()

    def fan_out(self, update_id: int) -> None:
        self.jobs.append(("fan_out", update_id))
        self.ready.set()

    def send(self, delivery_ids: list[int], delay_s: float = 0.0) -> None:
        if delay_s <= 0:
            self.jobs.append(("send", delivery_ids))
            self.ready.set()
