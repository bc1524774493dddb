"""One batch being sent: what its steps work with (`Context`) and what it tells the queue to do
next (`SendResult`).

Both are shared by the steps of dispatcher/delivery/send.py: preparing the messages
(messages.py) and recording the answers (outcomes.py). They live apart from all three so that
the steps never import the module that runs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dispatcher.delivery.guards import Guards
from dispatcher.delivery.leases import Leases
from dispatcher.delivery.registry import ChannelRegistry
from dispatcher.links import Links
from dispatcher.render.shared import Shared
from dispatcher.render.templates import RenderError
from dispatcher.settings import Settings
from dispatcher.store import Store

if TYPE_CHECKING:
    from dispatcher.delivery.late import LateAnswers


@dataclass(frozen=True)
class Context:
    """What every step of one batch reads; `send_batch` builds one per batch."""

    store: Store
    registry: ChannelRegistry
    settings: Settings
    links: Links
    guards: Guards
    leases: Leases
    # The batch's rows as its claim left them (id -> sends): a row whose `sends` differs now was
    # taken back by another worker (this one's lease ran out), and is that worker's to record.
    claims: dict[int, int]
    # Where answers that come after their chunk was recorded go (None: every send waits for
    # all its answers).
    late: LateAnswers | None = None
    # One rendering per (channel, update, language, zone, links) for the whole batch, shared by
    # its recipients (dispatcher/render/shared.py `render_shared`); None: render each on its own.
    renders: dict[tuple[object, ...], Shared | RenderError | None] = field(default_factory=dict)


@dataclass
class SendResult:
    """What the queue must do next: send the fallbacks now, and `retries` after `retry_in_s`."""

    sent: int = 0
    fallbacks: list[int] = field(default_factory=list)
    retries: list[int] = field(default_factory=list)  # transient failures, and rows held back
    retry_in_s: float | None = None  # when every one of `retries` is due (a task sooner
    # than a row's due time would find it not yet due and leave it to the sweep)
    held: int = 0  # put back without counting as a try: paced, or the provider's circuit open

    def later(self, delivery_id: int, delay_s: float) -> None:
        self.retries.append(delivery_id)
        self.retry_in_s = max(delay_s, self.retry_in_s or 0.0)

    def add(self, other: SendResult) -> None:
        """Take in what another part of the batch left to do."""
        self.sent += other.sent
        self.held += other.held
        self.fallbacks.extend(other.fallbacks)
        self.retries.extend(other.retries)
        if other.retry_in_s is not None:
            self.retry_in_s = max(other.retry_in_s, self.retry_in_s or 0.0)
