"""The long-running processes and the demo: `outage demo|serve|worker|sandbox`."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from dispatcher.cli.common import console, database_errors, open_pipeline, settings, user_errors
from dispatcher.settings import Settings
from dispatcher.store import Store, upgrade_schema

app = typer.Typer()


@app.command()
@user_errors
def demo(
    database: Annotated[Path, typer.Option(help="SQLite file, recreated.")] = Path(
        "outage-demo.sqlite3"
    ),
) -> None:
    """Open, update and resolve a sample incident on the embedded default and show who got what."""
    from dispatcher.ops.demo import run_demo

    run_demo(console, database)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
) -> None:
    """Serve the HTTP API (webhooks, subscriber API, status page)."""
    import uvicorn

    prepare_schema(settings())
    uvicorn.run("dispatcher.web.app:create_app", factory=True, host=host, port=port)


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(help="Worker processes (Celery).")] = 2,
    beat: Annotated[
        bool,
        typer.Option(help="Also run Celery beat (not needed: every worker sweeps on its own)."),
    ] = False,
) -> None:
    """Run a worker: a Celery worker when a broker is set, else an embedded polling loop. Either
    way it sweeps by itself: what a dead worker held is sent again within its lease."""
    config = settings()
    prepare_schema(config)
    if config.embedded:
        _embedded_worker(config)
        return
    from dispatcher.delivery.tasks import app as celery_app

    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())  # --log-level's
    # A node name of its own: two workers on one host named alike answer a ping as one, and on
    # RabbitMQ the second cannot take its control queue (RESOURCE_LOCKED).
    argv = [
        "worker",
        f"--loglevel={level}",
        f"--concurrency={concurrency}",
        f"--hostname=outage-{os.getpid()}@%h",
    ]
    celery_app.worker_main([*argv, "--beat"] if beat else argv)


@user_errors
def prepare_schema(config: Settings) -> None:
    """What `serve` and `worker` do first: with OUTAGE_AUTO_MIGRATE, upgrade the schema (workers
    starting together upgrade it once, under a lock); without, stop now, in one line, at a schema
    this release cannot use, rather than in the server's start-up or in each worker process. An
    empty database is created either way."""
    with database_errors():
        if config.auto_migrate:
            console.print(upgrade_schema(config.database_url).describe(), highlight=False)
        else:
            Store(config.database_url).close()


def _embedded_worker(config: Settings) -> None:
    from dispatcher.delivery.runner import Runner

    console.print("embedded worker: sending due deliveries from the database (Ctrl-C stops)")
    with open_pipeline(config) as pipeline:
        try:
            Runner(pipeline).run()
        except KeyboardInterrupt:
            console.print("stopped")


@app.command()
def sandbox(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8025,
    latency_ms: Annotated[float, typer.Option(help="Delay added to every provider request.")] = 0,
) -> None:
    """Run the local provider sandbox (Twilio, SendGrid, X shapes and a webhook receiver)."""
    from dispatcher.sandbox.server import Sandbox

    console.print(f"provider sandbox on http://{host}:{port} (messages: /sandbox/messages)")
    try:
        Sandbox(latency_ms=latency_ms).serve_forever(host, port)
    except KeyboardInterrupt:
        console.print("stopped")
