"""`POST /webhooks/twilio/inbound`: texts people send to our number (Twilio's incoming message
webhook). STOP and its synonyms opt the number out; START, UNSTOP and YES (JA, which the German
confirmation asks for) opt it back in and confirm a subscription waiting on that number (a
reply from the number is proof enough that it is theirs). Anything else is ignored. What a
text means is Twilio's knowledge, in channels/sms_events.py (`keyword`); this route acts on it.

The request is verified with Twilio's own RequestValidator against the auth token (in sandbox
mode the sandbox's dummy token, as the adapter uses), over the URL Twilio was given: our public
URL plus this path (`check_twilio_signature`). A bad or missing signature is 403 and changes
nothing.

Twilio (with its default Advanced Opt-Out) answers STOP and START itself, so we answer those with
an empty TwiML response, and only confirm a YES in words, in the subscriber's language.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import Response
from twilio.twiml.messaging_response import MessagingResponse

from channels.sms_events import Keyword, keyword
from dispatcher.models import SuppressionReason
from dispatcher.subscribers import confirmations
from dispatcher.subscribers.suppressions import lift, suppress
from dispatcher.web.deps import PipelineDep, check_twilio_signature
from dispatcher.web.forms import FormDep

log = logging.getLogger(__name__)

router = APIRouter(prefix="/webhooks/twilio", tags=["inbound"])


@router.post("/inbound")
def inbound_sms(request: Request, pipeline: PipelineDep, form: FormDep) -> Response:
    """Twilio's incoming-message webhook: STOP opts out, START/YES opts in and confirms."""
    check_twilio_signature(request, pipeline.settings, form.as_dict())
    phone = form.get("From")
    if not phone:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail="From: missing")
    kind = keyword(form.get("Body"))
    log.info("inbound SMS: %s", kind)
    reply = MessagingResponse()
    if kind is Keyword.OPT_OUT:
        with pipeline.store.session() as session:
            suppress(session, "phone", phone, SuppressionReason.STOP, actor="subscriber:sms")
    elif kind is Keyword.OPT_IN:
        with pipeline.store.session() as session:
            lift(session, "phone", phone, actor="subscriber:sms")
        confirmed = confirmations.confirm_reply(pipeline.store, phone)
        if confirmed:
            reply.message(
                confirmations.confirmed_reply(pipeline.store, pipeline.settings, confirmed[0])
            )
    return Response(str(reply), media_type="application/xml")
