"""`/webhooks/<source>`: monitoring systems open, update and resolve incidents.

Order of checks, so that nothing is stored from a request that should not be: the body size (the
BodySizeLimit middleware, 413), the credentials (401: a token, or the source's own signature),
the payload and its shape (422 naming the field), and only then the correlation, in one
transaction per alert group. The answer comes as soon as that is committed; the fan-out is
queued, never awaited. A source's own test is recorded and answered like any other payload.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from channels.webhook import verify
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents import correlate
from dispatcher.ingest import alertmanager, generic, grafana, pagerduty, source_tests, uptime_kuma
from dispatcher.ingest.events import IngestMapping, Parsed
from dispatcher.settings import Settings
from dispatcher.web import webhook_bodies
from dispatcher.web.deps import PipelineDep, bearer_token, check_token
from dispatcher.web.health import WebhookMetricsRoute

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-outage-signature"
NOTICE_MAX_CHARS = 500

Authenticate = Callable[[Request, Settings, str, bytes], None]
ReadBody = Callable[[Request, bytes, int], Awaitable[dict[str, Any]]]


def _token(request: Request, settings: Settings, name: str, body: bytes) -> None:
    """`Authorization: Bearer …`: the source's own token, else the shared one."""
    token = settings.webhook_tokens.get(name) or settings.webhook_token
    check_token(
        bearer_token(request),
        token.get_secret_value() if token else None,
        "OUTAGE_WEBHOOK_TOKEN",
    )


def _token_or_signature(request: Request, settings: Settings, name: str, body: bytes) -> None:
    """The generic source may sign its body (X-Outage-Signature) instead of sending a token."""
    signature = request.headers.get(SIGNATURE_HEADER)
    if signature is None:
        _token(request, settings, name, body)
        return
    secret = settings.generic_hmac_secret
    if secret is None or not verify(secret.get_secret_value(), signature, body):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="bad or stale signature")


def _pagerduty_signature(request: Request, settings: Settings, name: str, body: bytes) -> None:
    """PagerDuty signs every body with the subscription's secret (X-PagerDuty-Signature)."""
    configured = settings.pagerduty_webhook_secret
    secrets = pagerduty.signing_secrets(configured.get_secret_value()) if configured else []
    if not secrets:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="PAGERDUTY_WEBHOOK_SECRET is not configured on this dispatcher; set it to "
            "accept requests",
        )
    if not pagerduty.signed(secrets, request.headers.get(pagerduty.SIGNATURE_HEADER), body):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, detail="missing or wrong X-PagerDuty-Signature"
        )


async def _json(request: Request, body: bytes, max_bytes: int) -> dict[str, Any]:
    """How every source may send: the body is one JSON object."""
    return webhook_bodies.json_object(body)


@dataclass(frozen=True)
class Source:
    parse: Callable[[dict[str, object], IngestMapping], Parsed]
    model: type[BaseModel]  # for the OpenAPI description of the body
    authenticate: Authenticate = _token
    read: ReadBody = _json


SOURCES = {
    "alertmanager": Source(alertmanager.parse, alertmanager.AlertmanagerWebhook),
    "grafana": Source(grafana.parse, grafana.GrafanaWebhook),
    "uptime-kuma": Source(
        uptime_kuma.parse, uptime_kuma.UptimeKumaWebhook, read=webhook_bodies.json_or_form
    ),
    "pagerduty": Source(
        pagerduty.parse, pagerduty.PagerDutyWebhook, authenticate=_pagerduty_signature
    ),
    "generic": Source(generic.parse, generic.GenericAlert, authenticate=_token_or_signature),
}

router = APIRouter(prefix="/webhooks", tags=["webhooks"], route_class=WebhookMetricsRoute)


class Accepted(BaseModel):
    """The webhook's answer: which incidents it touched, whether anyone will be told, and
    whether it was the sender's own test (recorded, never an incident)."""

    incidents: list[int]
    updates: int
    changed: bool
    test: bool = False


def _parsed(name: str, payload: dict[str, object], mapping: IngestMapping, where: str) -> Parsed:
    try:
        return SOURCES[name].parse(payload, mapping)
    except ValidationError as exc:
        raise RequestValidationError(
            [
                {"type": e["type"], "loc": (where, *e["loc"]), "msg": e["msg"]}
                for e in exc.errors(include_url=False, include_input=False)
            ]
        ) from None


async def _accept(pipeline: Pipeline, name: str, parsed: Parsed) -> Accepted:
    if parsed.test:
        await run_in_threadpool(source_tests.record, pipeline.store, name)
        log.info("%s: the sender's test notification received", name)
    if parsed.notice:
        log.warning("%s: %s", name, " ".join(parsed.notice.split())[:NOTICE_MAX_CHARS])
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


def _receive(name: str) -> Callable[..., Any]:
    source = SOURCES[name]

    async def receive(request: Request, pipeline: PipelineDep) -> Accepted:
        settings = pipeline.settings
        body = await request.body()
        source.authenticate(request, settings, name, body)
        payload = await source.read(request, body, settings.webhook_max_bytes)
        return await _accept(pipeline, name, _parsed(name, payload, settings.ingest, "body"))

    receive.__name__ = f"receive_{name.replace('-', '_')}"
    receive.__doc__ = f"Accept a {name} notification; see the README for the set-up."
    return receive


async def receive_uptime_kuma_query(request: Request, pipeline: PipelineDep) -> Accepted:
    """Accept an Uptime Kuma notification sent with the GET method (Uptime Kuma 2.1+)."""
    settings = pipeline.settings
    _token(request, settings, "uptime-kuma", b"")
    payload = webhook_bodies.query_payload(request, settings.webhook_max_bytes)
    return await _accept(
        pipeline, "uptime-kuma", _parsed("uptime-kuma", payload, settings.ingest, "query")
    )


# Read from the query string by hand, after the token: declared here for the OpenAPI only.
_QUERY_PARAMETERS = [
    {"name": "msg", "in": "query", "required": True, "schema": {"type": "string"}},
    *(
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": f"the {name}, JSON-encoded",
        }
        for name in webhook_bodies.QUERY_JSON
    ),
]


def _body_schema(source: Source) -> dict[str, Any]:
    """The model's JSON schema with its $defs inlined, for `openapi_extra` (which has no place
    for definitions of its own)."""
    schema = source.model.model_json_schema(by_alias=True)
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

    content: dict[str, Any] = {"application/json": {"schema": inline(schema)}}
    if source.read is webhook_bodies.json_or_form:  # the JSON may come as form-data too
        field = {"type": "string", "description": "the JSON body"}
        content["multipart/form-data"] = {
            "schema": {
                "type": "object",
                "properties": {webhook_bodies.FORM_FIELD: field},
                "required": [webhook_bodies.FORM_FIELD],
            }
        }
    return {"requestBody": {"required": True, "content": content}}


_ANSWERS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or wrong token (or signature)"},
    413: {"description": "body over the size limit"},
    422: {"description": "not the source's shape; the field is named"},
}

for _name, _source in SOURCES.items():
    router.add_api_route(
        f"/{_name}",
        _receive(_name),
        methods=["POST"],
        status_code=status.HTTP_202_ACCEPTED,
        response_model=Accepted,
        openapi_extra=_body_schema(_source),
        responses=_ANSWERS,
    )

router.add_api_route(
    "/uptime-kuma",
    receive_uptime_kuma_query,
    methods=["GET"],
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    openapi_extra={"parameters": _QUERY_PARAMETERS},
    responses={**_ANSWERS, 414: {"description": "query string over the size limit"}},
)
