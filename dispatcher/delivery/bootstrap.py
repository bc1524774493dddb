"""How a process gets its Pipeline: the one place that picks the queue and starts the sandbox.

Every process builds its Pipeline here (the CLI, `outage serve`, each Celery pool process, the
demo), so they cannot drift: on the embedded default the jobs stay in-process, with a broker they
go through Celery. When the providers are the sandbox and no `OUTAGE_SANDBOX_URL` names a running
one, a sandbox of our own is started here and stopped with the Pipeline, so nothing leaves the
machine. This is the only module of the product that imports `dispatcher.sandbox`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.delivery.queue import Queue
from dispatcher.settings import Settings

if TYPE_CHECKING:
    from dispatcher.sandbox.server import Sandbox


def connect(settings: Settings, queue: Queue | None = None) -> Pipeline:
    """The Pipeline for this process: `queue` when given (a Celery worker passes its own),
    in-process jobs on the embedded default, the broker otherwise."""
    if queue is None and not settings.embedded:
        from dispatcher.delivery.tasks import CeleryQueue, make_celery  # imports Celery

        queue = CeleryQueue(make_celery(settings))
    settings, sandbox = own_sandbox(settings)
    try:
        return Pipeline(settings, queue, on_close=sandbox.stop if sandbox is not None else None)
    except BaseException:  # e.g. a schema to upgrade first: leave no sandbox running behind
        if sandbox is not None:
            sandbox.stop()
        raise


def own_sandbox(settings: Settings) -> tuple[Settings, Sandbox | None]:
    """The settings pointed at a sandbox started for this process, when the providers are the
    sandbox and none is named; otherwise the settings as they are, and None."""
    if settings.providers != "sandbox" or settings.sandbox_url is not None:
        return settings, None
    from dispatcher.sandbox.server import Sandbox

    sandbox = Sandbox()
    return settings.model_copy(update={"sandbox_url": sandbox.start()}), sandbox
