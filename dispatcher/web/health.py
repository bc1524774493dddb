"""What an orchestrator and Prometheus ask the web process: alive, ready, and the metrics.

`/healthz` says only that the process answers (a liveness probe that checked the database would
restart every web process when the database blips). `/readyz` runs the readiness checks of
dispatcher/ops/doctor.py under a deadline and says ready or not; what is wrong only to the
operator (Bearer OUTAGE_API_TOKEN), since the findings describe the set-up (providers, broker,
database) to whoever asks. `/metrics` is the whole deployment's delivery metrics, read from the
database (dispatcher/ops/metrics.py), plus this process's own counters; with
OUTAGE_METRICS_TOKEN set, only for that token (or the operator's).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from dispatcher.ops import doctor, metrics
from dispatcher.ops.findings import Context
from dispatcher.web.deps import PipelineDep, SettingsDep, bearer_token, holds, is_operator
from dispatcher.web.limits import BodyTooLarge

router = APIRouter(tags=["health"])

_registry_lock = threading.Lock()


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


def readiness_context(pipeline: PipelineDep) -> Context:
    """What /readyz checks: this process's own settings, database engine and adapters."""
    return Context(pipeline.settings, pipeline.store.engine, registry=pipeline.registry)


@router.get(
    "/readyz",
    responses={
        503: {"description": "not ready; with the operator token, `checks` names what is wrong"}
    },
)
def readyz(
    request: Request,
    settings: SettingsDep,
    context: Annotated[Context, Depends(readiness_context)],
    response: Response,
) -> dict[str, Any]:
    """Ready to work: database and broker answer, templates render, live providers configured.
    `{"status": "ok"}` or `"fail"`; with the operator token also each check and its fix.

    Each check has a deadline well under a second; one that hangs is reported, not waited for.
    """
    operator = is_operator(request, settings)
    findings = doctor.readiness(context)
    if not doctor.all_ok(findings):
        response.status_code = 503
    summary = doctor.summary(findings)
    return summary if operator else {"status": summary["status"]}


def require_metrics_reader(request: Request, settings: SettingsDep) -> None:
    """With OUTAGE_METRICS_TOKEN set, /metrics answers only that token or the operator's."""
    if settings.metrics_token is None:
        return
    if not holds(bearer_token(request), settings.metrics_token, settings.api_token):
        raise HTTPException(
            401, detail="missing or wrong credentials", headers={"WWW-Authenticate": "Bearer"}
        )


def _app_registry(request: Request, pipeline: PipelineDep) -> CollectorRegistry:
    """One metrics registry per app, made on the first scrape (the pipeline exists by then)."""
    state = request.app.state
    with _registry_lock:
        registry: CollectorRegistry | None = getattr(state, "metrics_registry", None)
        if registry is None:
            registry = state.metrics_registry = metrics.registry_for(
                pipeline, state.throttle.sms_remaining
            )
    return registry


@router.get(
    "/metrics",
    response_class=Response,
    include_in_schema=False,
    dependencies=[Depends(require_metrics_reader)],
)
def prometheus_metrics(
    request: Request, registry: Annotated[CollectorRegistry, Depends(_app_registry)]
) -> Response:
    """Prometheus exposition (OpenMetrics when the scraper asks for it)."""
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(registry), media_type=content_type)


class WebhookMetricsRoute(APIRoute):
    """Counts each monitoring webhook by source and outcome (`outage_webhooks_received_total`).

    A route class, not a middleware, so the source label comes from the route (a closed set)
    rather than from whatever path a client sent. A body refused by its declared Content-Length
    never reaches a route and is not counted; one that grows too large while read is.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        source = self.path.rstrip("/").rsplit("/", 1)[-1]

        async def counted(request: Request) -> Response:
            status = 500
            try:
                response = await handler(request)
                status = response.status_code
                return response
            except HTTPException as exc:
                status = exc.status_code
                raise
            except RequestValidationError:
                status = 422
                raise
            except BodyTooLarge:
                status = 413
                raise
            finally:
                metrics.WEBHOOKS_RECEIVED.labels(source, metrics.webhook_outcome(status)).inc()

        return counted
