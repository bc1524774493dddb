"""Delivery receipts from providers: `POST /callbacks/twilio/status` (Twilio status callbacks)
and `POST /callbacks/sendgrid/events` (SendGrid's signed event webhook).

These routes only read HTTP: each provider's checks and words are beside its adapter
(channels/sms_events.py, channels/email_events.py). Each request is verified before anything is
stored. Twilio's signature is checked with its own RequestValidator against the auth token, over
our public URL of this path with its query (the adapter's StatusCallback carries our delivery id
there, and Twilio signs the whole URL); the same check as the inbound-SMS webhook. SendGrid's
ECDSA signature over "<timestamp><body>" is checked with its EventWebhook helper and the public
key in OUTAGE_SENDGRID_EVENT_PUBLIC_KEY (in sandbox mode, the sandbox's own published key), and
its timestamp must be within OUTAGE_SENDGRID_EVENT_TOLERANCE_S of now (a replay otherwise). A
bad or missing signature, or a stale one, is 403 and nothing is stored.

Verified events go to `dispatcher.delivery.receipts`, which applies each once (by the provider's
event id) and may queue the update on the subscriber's next channel; that is sent at once.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from channels import email_events, sms_events
from channels.events import ProviderEvent
from channels.transport import SANDBOX_EVENT_PUBLIC_KEY
from dispatcher.delivery import receipts
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.settings import Settings
from dispatcher.web.deps import PipelineDep, check_twilio_signature
from dispatcher.web.forms import FormDep

router = APIRouter(prefix="/callbacks", tags=["callbacks"])

MAX_EVENTS_BYTES = 5 * 1024 * 1024  # SendGrid batches events; a POST is well under this


@router.post("/twilio/status", status_code=status.HTTP_204_NO_CONTENT)
def twilio_status(request: Request, pipeline: PipelineDep, form: FormDep) -> Response:
    """A Twilio status callback: delivered, undelivered, failed, … for one message."""
    check_twilio_signature(request, pipeline.settings, form.as_dict())
    event = sms_events.parse_status_callback(
        form.as_dict(),
        request.query_params.get("delivery_id"),
        request.headers.get(sms_events.IDEMPOTENCY_HEADER),
    )
    _apply(pipeline, [event])
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/sendgrid/events", status_code=status.HTTP_204_NO_CONTENT)
async def sendgrid_events(request: Request, pipeline: PipelineDep) -> Response:
    """SendGrid's event webhook: a signed JSON array of events (delivered, bounce, dropped, …)."""
    body = await _read_capped(request)
    _check_sendgrid_signature(request, pipeline.settings, body)
    try:
        events = email_events.parse_events(json.loads(body))
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
    await run_in_threadpool(_apply, pipeline, events)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _apply(pipeline: Pipeline, events: list[ProviderEvent]) -> None:
    applied = receipts.apply(pipeline.store, pipeline.registry, events, pipeline.guards.usable)
    pipeline.enqueue(applied.fallbacks)


async def _read_capped(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_EVENTS_BYTES:
            raise HTTPException(413, detail=f"body larger than {MAX_EVENTS_BYTES} bytes")
    return bytes(body)


def _check_sendgrid_signature(request: Request, settings: Settings, body: bytes) -> None:
    """403 unless SendGrid's key signed this timestamp and body, recently."""
    key = settings.sendgrid_event_public_key or (
        SANDBOX_EVENT_PUBLIC_KEY if settings.providers == "sandbox" else None
    )
    if key is None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail="OUTAGE_SENDGRID_EVENT_PUBLIC_KEY is not set: signed events cannot be verified",
        )
    signature = request.headers.get(email_events.SIGNATURE_HEADER, "")
    timestamp = request.headers.get(email_events.TIMESTAMP_HEADER, "")
    tolerance_s = settings.sendgrid_event_tolerance_s
    if timestamp and not email_events.fresh(timestamp, tolerance_s):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"SendGrid event timestamp more than {tolerance_s:g} s from now: refused as a "
            "replay (or this server's clock is off)",
        )
    if not email_events.verify(key, body, signature, timestamp, tolerance_s=tolerance_s):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="missing or wrong SendGrid signature")
