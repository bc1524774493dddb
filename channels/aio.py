"""The process's sending loop: one asyncio event loop, in a thread of its own, for every adapter.

Why: a request through a blocking SDK (requests, httpx) cost 1 to 2 ms of CPU here, and sixteen
sender threads contending for the GIL cost more again; the same request on aiohttp in an event
loop costs about 0.4 ms (measured side by side: `bench/request_cpu.py`). The dispatcher's own
code stays synchronous (SQLAlchemy sessions, Celery tasks): it hands a batch to `run` and blocks
until every message of it has an outcome, while other threads (another batch's database work)
carry on.

The loop is per process and made on first use, so a Celery prefork child that inherited a
parent's (dead) loop thread across `fork` starts its own. `LoopSession` gives an adapter one
pooled aiohttp session bound to the current loop, made lazily for the same reason.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar
from urllib.request import getproxies

import aiohttp
from aiohttp.abc import AbstractResolver

_T = TypeVar("_T")
_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _forget_parent_loop() -> None:
    """In a forked child: the parent's loop thread did not come along (and the lock may have
    been held by a thread that did not either)."""
    global _lock, _loop
    _lock, _loop = threading.Lock(), None


os.register_at_fork(after_in_child=_forget_parent_loop)


def loop() -> asyncio.AbstractEventLoop:
    """This process's sending loop, started on first use (again after a fork)."""
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            started = asyncio.new_event_loop()
            threading.Thread(target=started.run_forever, name="send-loop", daemon=True).start()
            _loop = started
        return _loop


def run(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run `coroutine` on the sending loop and wait for its result (or exception).

    Never call it from the loop's own thread: it would wait for itself."""
    target = loop()
    if _running_loop() is target:
        coroutine.close()
        raise RuntimeError("aio.run() called from the sending loop itself; await instead")
    return asyncio.run_coroutine_threadsafe(coroutine, target).result()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def may_have_arrived(error: aiohttp.ClientError) -> bool:
    """Whether a request that failed this way may have reached the server all the same: only a
    connection never made (refused, no route, DNS) is a clear no; a connection dropped while
    waiting for the answer is not."""
    return not isinstance(error, aiohttp.ClientConnectorError)


class LoopSession:
    """One pooled aiohttp session per adapter, bound to the loop it was made in.

    `limit` caps open connections, as the adapter caps requests in flight; the timeout covers a
    whole request (connect, send, answer), like the blocking clients' did. `resolver` makes the
    connector's DNS resolver (in the loop, as aiohttp's own must be): the webhooks' checks which
    addresses may be connected to (channels/webhook.py)."""

    def __init__(
        self,
        limit: int,
        timeout_s: float,
        headers: dict[str, str] | None = None,
        resolver: Callable[[], AbstractResolver] | None = None,
    ) -> None:
        self._limit = max(1, limit)
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._headers = headers or {}
        self._resolver = resolver
        self._session_resolver: AbstractResolver | None = None  # a connector leaves it open
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> aiohttp.ClientSession:
        """The session for the running loop (call inside the loop)."""
        running = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not running:
            resolver = self._resolver() if self._resolver is not None else None
            self._session_resolver = resolver
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit, resolver=resolver),
                timeout=self.timeout,
                headers=self._headers,
                # Proxies from the environment, as requests and httpx honoured them. Reading
                # them (and ~/.netrc, in a thread) costs a quarter of a request's CPU, every
                # request: only where a proxy is set.
                trust_env=bool(getproxies()),
            )
            self._session_loop = running
        return self._session

    def close(self) -> None:
        """Close the session on its loop, if this process made one (idempotent)."""
        session, self._session = self._session, None
        owner, self._session_loop = self._session_loop, None
        resolver, self._session_resolver = self._session_resolver, None
        if session is None or session.closed or owner is None or owner is not _loop:
            return  # never opened, or opened by a loop that is gone (a parent's, before a fork)
        if _running_loop() is owner:  # closing from inside the loop: schedule it
            owner.create_task(_close(session, resolver))
        else:
            run(_close(session, resolver))


async def _close(session: aiohttp.ClientSession, resolver: AbstractResolver | None) -> None:
    await session.close()
    if resolver is not None:
        await resolver.close()
