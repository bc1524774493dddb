"""The FastAPI application served by `outage serve`; routers are added per concern."""

from __future__ import annotations

from fastapi import FastAPI

from dispatcher.settings import get_settings


def create_app() -> FastAPI:
    settings = get_settings()
    app = FastAPI(title="outage-dispatcher", version="0.1.0")
    app.state.settings = settings

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """The process is alive; readiness (database, broker) is /readyz."""
        return {"status": "ok"}

    return app
