"""The FastAPI application served by `outage serve`: one router module per concern.

On the embedded default there is no worker process, so the app runs the embedded runner itself
(dispatcher/delivery/runner.py, in a thread): it sends what the requests queued and what the
sweep finds due. Requests return as soon as their
rows are stored; they never wait for a provider.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from dispatcher.delivery.bootstrap import connect
from dispatcher.delivery.runner import Runner
from dispatcher.errors import OutageError
from dispatcher.settings import Settings, get_settings
from dispatcher.subscribers.throttle import Throttle
from dispatcher.web import (
    account,
    api_docs,
    confirm,
    feed,
    health,
    inbound,
    incidents_api,
    maintenance_api,
    preferences,
    subscribers_api,
    unsubscribe,
    webhooks,
)
from dispatcher.web import status as status_page
from dispatcher.web.callbacks import router as callbacks_router
from dispatcher.web.limits import BodySizeLimit, JsonNestingLimit


def create_app(settings: Settings | None = None) -> FastAPI:
    config = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pipeline = connect(config)
        app.state.pipeline = pipeline
        secret_key = pipeline.settings.secret_key
        assert secret_key is not None, "the Pipeline always resolves the links' secret key"
        app.state.throttle = Throttle(pipeline.settings, secret_key.get_secret_value())
        runner = Runner(pipeline) if config.embedded else None
        app.state.runner = runner
        if runner is not None:
            runner.start()
        try:
            yield
        finally:
            if runner is not None:
                runner.stop()
            app.state.throttle.close()
            pipeline.close()

    app = FastAPI(
        title="outage-dispatcher",
        version="0.1.0",
        summary="Incident updates to every subscriber, on the channel each one chose.",
        lifespan=lifespan,
        # Served by api_docs, for the operator (or anyone with OUTAGE_API_DOCS=public).
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )

    @app.exception_handler(OutageError)
    async def user_error(request: Request, exc: OutageError) -> JSONResponse:
        """Any OutageError a route lets through, as FastAPI answers an HTTPException: the message
        as `detail`, with the status its class (or the instance) names. Routes translate only
        what needs more: a subscriber's field errors in FastAPI's 422 shape, and the subscriber
        pages' HTML."""
        return JSONResponse({"detail": str(exc)}, status_code=exc.http_status)

    # Every route, the last added outermost: the size is capped before the JSON is looked at.
    app.add_middleware(JsonNestingLimit)
    app.add_middleware(BodySizeLimit, max_bytes=config.webhook_max_bytes)
    app.include_router(health.router)
    app.include_router(webhooks.router)
    app.include_router(incidents_api.router)
    app.include_router(maintenance_api.router)
    app.include_router(subscribers_api.router)
    app.include_router(preferences.router)
    app.include_router(unsubscribe.router)
    app.include_router(confirm.router)
    app.include_router(inbound.router)
    app.include_router(status_page.router)
    app.include_router(feed.router)
    app.include_router(account.router)
    app.include_router(callbacks_router)
    app.include_router(api_docs.router_for(app))
    return app
