"""One process at a time across the deployment, for work that must not run twice at once.

Every worker runs the sweep (dispatcher/delivery/sweeper.py), and most of it may well run in
several at once: re-enqueueing is idempotent, the claim decides who sends. What the sweep posts
is not: two sweeps deciding at the same moment that a promised update is overdue would each post
a holding update, and every subscriber would be told twice. That part runs under `exclusive`.

The lock belongs to the holder's connection or file, never to a row with an expiry: a holder
killed with SIGKILL releases it at once (PostgreSQL ends the session, the kernel drops the file
lock), so the next sweep does not wait for a timeout to pass.

    PostgreSQL   a session advisory lock (`pg_try_advisory_lock`) on a connection of its own
    SQLite       `flock` on a file beside the database (every process of an SQLite deployment
                 is on the database's host)
"""

from __future__ import annotations

import fcntl
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from dispatcher.store import Store


@contextmanager
def exclusive(store: Store, name: str) -> Iterator[bool]:
    """Whether this process, alone in the deployment, holds the lock `name` for the block.
    Never waits: when another holds it, the block runs with False (and should skip its work).
    Two threads of one process exclude each other too (two sessions, two open files)."""
    lock = _advisory if store.dialect == "postgresql" else _file_lock
    with lock(store, name) as held:
        yield held


@contextmanager
def _advisory(store: Store, name: str) -> Iterator[bool]:
    key = zlib.crc32(f"outage:{name}".encode())
    with store.engine.connect() as connection:
        held = bool(connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}))
        connection.commit()
        try:
            yield held
        finally:
            if held:
                # If the connection was lost meanwhile, the server dropped the lock with it.
                with suppress(DBAPIError):
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                    connection.commit()


@contextmanager
def _file_lock(store: Store, name: str) -> Iterator[bool]:
    database = store.engine.url.database
    if not database or database == ":memory:":  # one process sees this database: no one else
        yield True
        return
    path = Path(f"{database}.{name}.lock")
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
