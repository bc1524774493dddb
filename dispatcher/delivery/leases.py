"""Keeping the leases of claimed rows alive while their worker is working on them.

A claim (dispatcher/delivery/rows.py `claim`) takes rows for `lease_s` seconds, and a row whose
lease ran out is taken back by the sweep and sent again. So the lease must be short, for a dead
worker's rows to come back within seconds, and yet never run out under a worker that is alive
but slow (paced, waiting for a provider, a batch of a thousand emails). The keeper does both:
one thread per process pushes `lease_until` forward, every third of the lease, for every row
the process still holds. A worker killed with SIGKILL renews nothing more, and its rows are back
within one lease (15 s by default) instead of the two minutes a lease had to last before.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta

from more_itertools import chunked
from sqlalchemy import update

from dispatcher.logs import RepeatedFailures
from dispatcher.models import DeliveryStatus
from dispatcher.store import Delivery, Store, utcnow

log = logging.getLogger(__name__)

RENEW_CHUNK = 1000  # ids per UPDATE


class Leases:
    """The rows this process holds, and the thread that renews their leases (started on the
    first hold, again after a fork: a thread does not survive one)."""

    def __init__(self, store: Store, lease_s: float) -> None:
        self.store = store
        self.lease_s = lease_s
        self._lock = threading.Lock()
        # Row id -> holds on it: a batch holds its rows, and a request still out after its
        # batch ended holds its row until its answer is recorded (dispatcher/delivery/late.py).
        self._held: Counter[int] = Counter()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = RepeatedFailures(
            log, "lease keeper: a renewal failed", "lease keeper: renewals succeed again"
        )

    @property
    def every_s(self) -> float:
        """How often leases are renewed: a renewal may fail twice and the lease still hold."""
        return self.lease_s / 3

    @contextmanager
    def holding(self, delivery_ids: Iterable[int]) -> Iterator[None]:
        """Keep these rows' leases alive for the block."""
        ids = list(delivery_ids)
        self.hold(ids)
        try:
            yield
        finally:
            self.release(ids)

    def hold(self, delivery_ids: Iterable[int]) -> None:
        with self._lock:
            self._held.update(delivery_ids)  # one more hold each
            if self._thread is None or not self._thread.is_alive():
                self._stopping.clear()
                self._thread = threading.Thread(target=self._run, name="leases", daemon=True)
                self._thread.start()

    def release(self, delivery_ids: Iterable[int]) -> None:
        ids = list(delivery_ids)
        with self._lock:
            self._held.subtract(ids)
            for delivery_id in ids:
                if self._held[delivery_id] <= 0:
                    del self._held[delivery_id]

    @property
    def held(self) -> set[int]:
        """The rows whose leases are being renewed now."""
        with self._lock:
            return set(self._held)

    def renew(self) -> int:
        """Push the lease of every held row still being sent one `lease_s` ahead; how many
        were. A row recorded meanwhile (sent, queued again) is left alone."""
        with self._lock:
            ids = sorted(self._held)
        if not ids:
            return 0
        until = utcnow() + timedelta(seconds=self.lease_s)
        renewed = 0
        with self.store.session() as session:
            for chunk in chunked(ids, RENEW_CHUNK):
                result = session.connection().execute(  # as Core: no objects to update
                    update(Delivery)
                    .where(Delivery.id.in_(chunk), Delivery.status == DeliveryStatus.SENDING)
                    .values(lease_until=until)
                )
                renewed += result.rowcount
        return renewed

    def _run(self) -> None:
        while not self._stopping.wait(self.every_s):
            try:
                self.renew()
            except Exception as exc:  # the database may be away a moment: the next try renews
                self._failures.failed(exc, self.every_s)
                continue
            self._failures.succeeded()

    def close(self) -> None:
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
