"""`POST /webhooks/twilio/inbound`: texts people send to our number (Twilio's incoming message
webhook). STOP and its synonyms opt the number out; START, UNSTOP and YES opt it back in and
confirm a subscription waiting on that number (a reply from the number is proof enough that it
is theirs). Anything else is ignored.

The request is verified with Twilio's own RequestValidator against the auth token (in sandbox
mode the sandbox's dummy token, as the adapter uses), over the URL Twilio was given: our public
URL plus this path, since behind a proxy the URL we see is not the one Twilio signed. A bad or
missing signature is 403 and changes nothing.

Twilio (with its default Advanced Opt-Out) answers STOP and START itself, so we answer those with
an empty TwiML response, and only confirm a YES in words. Keywords are matched on the whole
message, trimmed and case-insensitive, as carriers do: "stop the alerts" is not a STOP.
"""

from __future__ import annotations

import logging
from enum import StrEnum

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import Response
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from channels.transport import SANDBOX_CREDENTIAL, credential
from dispatcher.models import SuppressionReason
from dispatcher.settings import Settings
from dispatcher.subscribers import confirmations
from dispatcher.subscribers.suppressions import lift, suppress
from dispatcher.web.deps import PipelineDep
from dispatcher.web.preferences import Form, FormDep

log = logging.getLogger(__name__)

router = APIRouter(prefix="/webhooks/twilio", tags=["inbound"])

SIGNATURE_HEADER = "X-Twilio-Signature"


class Keyword(StrEnum):
    """What an inbound text asks for."""

    OPT_OUT = "opt_out"  # STOP and its synonyms: send nothing more to this number
    OPT_IN = "opt_in"  # START, UNSTOP, YES: send again, and confirm a waiting subscription
    OTHER = "other"  # anything else: ignored (people reply "thanks")


OPT_OUT_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
OPT_IN_WORDS = frozenset({"START", "UNSTOP", "YES"})


def keyword(body: str) -> Keyword:
    """The whole message as a keyword: trimmed, case and inner spaces ignored ("Stop all"),
    a trailing full stop or exclamation mark forgiven."""
    word = "".join(body.split()).upper().rstrip(".!")
    if word in OPT_OUT_WORDS:
        return Keyword.OPT_OUT
    if word in OPT_IN_WORDS:
        return Keyword.OPT_IN
    return Keyword.OTHER


@router.post("/inbound")
def inbound_sms(request: Request, pipeline: PipelineDep, form: FormDep) -> Response:
    """Twilio's incoming-message webhook: STOP opts out, START/YES opts in and confirms."""
    _verify(request, pipeline.settings, form)
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
        if confirmations.confirm_reply(pipeline.store, phone):
            reply.message(
                f"{pipeline.settings.company_name}: this number is confirmed for outage alerts. "
                "Reply STOP to opt out."
            )
    return Response(str(reply), media_type="application/xml")


def _verify(request: Request, settings: Settings, form: Form) -> None:
    """403 unless Twilio signed exactly these parameters for our public URL of this path."""
    try:
        token = credential(settings, "twilio_auth_token", "TWILIO_AUTH_TOKEN", SANDBOX_CREDENTIAL)
    except ValueError as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail=str(exc)) from None
    url = settings.public_url.rstrip("/") + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    signature = request.headers.get(SIGNATURE_HEADER, "")
    if not signature or not RequestValidator(token).validate(url, form.as_dict(), signature):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="missing or wrong Twilio signature")
