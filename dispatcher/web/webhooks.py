"""`POST /webhooks/<source>`: monitoring systems open, update and resolve incidents.

Order of checks, so that nothing is stored from a request that should not be: the body size (the
BodySizeLimit middleware, 413), the credentials (401), the JSON and its shape (422 naming the
field), and only then the correlation, in one transaction per alert group. The answer comes as
soon as that is committed; the fan-out is queued, never awaited. A source's own test is recorded
and answered like any other payload.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from channels.webhook import verify
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents import correlate
from dispatcher.ingest import alertmanager, generic, grafana, source_tests, uptime_kuma
from dispatcher.ingest.events import IngestMapping, Parsed
from dispatcher.web.deps import PipelineDep, bearer_token, check_token
from dispatcher.web.health import WebhookMetricsRoute

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-outage-signature"


@dataclass(frozen=True)
class Source:
    parse: Callable[[dict[str, object], IngestMapping], Parsed]
    model: type[BaseModel]  # for the OpenAPI description of the body
    accepts_signature: bool = False  # the generic source may sign instead of sending a token


SOURCES = {
    "alertmanager": Source(alertmanager.parse, alertmanager.AlertmanagerWebhook),
    "grafana": Source(grafana.parse, grafana.GrafanaWebhook),
    "uptime-kuma": Source(uptime_kuma.parse, uptime_kuma.UptimeKumaWebhook),
    "generic": Source(generic.parse, generic.GenericAlert, accepts_signature=True),
}

router = APIRouter(prefix="/webhooks", tags=["webhooks"], route_class=WebhookMetricsRoute)


class Accepted(BaseModel):
    """The webhook's answer: which incidents it touched, whether anyone will be told, and
    whether it was the sender's own test (recorded, never an incident)."""

    incidents: list[int]
    updates: int
    changed: bool
    test: bool = False


def _authenticate(request: Request, pipeline: Pipeline, name: str, body: bytes) -> None:
    settings = pipeline.settings
    source = SOURCES[name]
    signature = request.headers.get(SIGNATURE_HEADER)
    if source.accepts_signature and signature is not None:
        secret = settings.generic_hmac_secret
        if secret is None or not verify(secret.get_secret_value(), signature, body):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="bad or stale signature")
        return
    token = settings.webhook_tokens.get(name) or settings.webhook_token
    check_token(
        bearer_token(request),
        token.get_secret_value() if token else None,
        "OUTAGE_WEBHOOK_TOKEN",
    )


def _json(body: bytes) -> dict[str, object]:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body",), "msg": f"invalid JSON: {exc}"}]
        ) from None
    if not isinstance(payload, dict):
        raise RequestValidationError(
            [{"type": "dict_type", "loc": ("body",), "msg": "expected a JSON object"}]
        )
    return payload


def _parsed(name: str, payload: dict[str, object], mapping: IngestMapping) -> Parsed:
    try:
        return SOURCES[name].parse(payload, mapping)
    except ValidationError as exc:
        raise RequestValidationError(
            [
                {"type": e["type"], "loc": ("body", *e["loc"]), "msg": e["msg"]}
                for e in exc.errors(include_url=False, include_input=False)
            ]
        ) from None


def _receive(name: str) -> Callable[..., Any]:
    async def receive(request: Request, pipeline: PipelineDep) -> Accepted:
        body = await request.body()
        _authenticate(request, pipeline, name, body)
        parsed = _parsed(name, _json(body), pipeline.settings.ingest)
        if parsed.test:
            await run_in_threadpool(source_tests.record, pipeline.store, name)
            log.info("%s: the sender's test notification received", name)
        # The database work is blocking: keep it off the event loop.
        result = await run_in_threadpool(
            correlate.ingest, pipeline.store, pipeline.settings, parsed.events
        )
        pipeline.announce(*result.update_ids)
        return Accepted(
            incidents=result.incident_ids,
            updates=len(result.update_ids),
            changed=result.changed,
            test=parsed.test,
        )

    receive.__name__ = f"receive_{name.replace('-', '_')}"
    receive.__doc__ = f"Accept a {name} notification; see the README for the set-up."
    return receive


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its $defs inlined, for `openapi_extra` (which has no place
    for definitions of its own)."""
    schema = model.model_json_schema(by_alias=True)
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(definitions[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline(schema)}},
        }
    }


for _name, _source in SOURCES.items():
    router.add_api_route(
        f"/{_name}",
        _receive(_name),
        methods=["POST"],
        status_code=status.HTTP_202_ACCEPTED,
        response_model=Accepted,
        openapi_extra=_body_schema(_source.model),
        responses={
            401: {"description": "missing or wrong token (or signature)"},
            413: {"description": "body over the size limit"},
            422: {"description": "not JSON, or not the source's shape; the field is named"},
        },
    )
