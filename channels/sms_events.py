"""What Twilio tells us about SMS, beside its adapter: status-callback words in ours, the
keywords people text to our number, and the signature every Twilio webhook carries.

Twilio POSTs a status callback to the URL the adapter gave with each message
(dispatcher/web/callbacks.py reads the request); `parse_status_callback` turns its form into a
`ProviderEvent`. What that status then does to the delivery is dispatcher/delivery/receipts.py's,
the same for every provider. Texts to our number arrive on dispatcher/web/inbound.py, which asks
`keyword` what they mean. Both routes accept a request only when `verify` says Twilio signed it.

Keywords are matched on the whole message, trimmed and case-insensitive, as carriers do: "stop
the alerts" is not a STOP.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from twilio.request_validator import RequestValidator

from channels.events import ProviderEvent, delivery_id
from channels.sms import SmsChannel
from dispatcher.models import ReceiptStatus

PROVIDER = "twilio"
SIGNATURE_HEADER = "X-Twilio-Signature"
IDEMPOTENCY_HEADER = "I-Twilio-Idempotency-Token"  # the same event, retried, carries the same

# Twilio's MessageStatus values (Messaging API, status callbacks); any other is UNKNOWN.
STATUSES: dict[str, ReceiptStatus] = {
    "accepted": ReceiptStatus.PENDING,
    "scheduled": ReceiptStatus.PENDING,
    "queued": ReceiptStatus.PENDING,
    "sending": ReceiptStatus.PENDING,
    "sent": ReceiptStatus.PENDING,  # handed to the carrier; "delivered" may follow
    "delivered": ReceiptStatus.DELIVERED,
    "read": ReceiptStatus.DELIVERED,
    "undelivered": ReceiptStatus.UNDELIVERED,
    "failed": ReceiptStatus.UNDELIVERED,
    "canceled": ReceiptStatus.UNDELIVERED,
}


def parse_status_callback(
    form: Mapping[str, str], delivery: str | None, idempotency_token: str | None
) -> ProviderEvent:
    """A status callback's form fields; our delivery id rides in the callback URL, and Twilio's
    idempotency token (a header) names the event, else its message SID and status do."""
    sid = form.get("MessageSid") or form.get("SmsSid") or ""
    status = (form.get("MessageStatus") or form.get("SmsStatus") or "").strip().lower()
    return ProviderEvent(
        provider=PROVIDER,
        channel=SmsChannel.name,
        event_id=(idempotency_token or f"{sid}:{status}")[:128],
        event=status,
        status=STATUSES.get(status, ReceiptStatus.UNKNOWN),
        delivery_id=delivery_id(delivery),
        provider_id=sid or None,  # a message SID names one message
        address=form.get("To") or None,
        detail=form.get("ErrorCode") or None,
    )


def verify(auth_token: str, url: str, params: Mapping[str, str], signature: str) -> bool:
    """Whether `signature` (the X-Twilio-Signature header) is Twilio's for exactly these form
    parameters POSTed to `url`, the full URL Twilio was given, query included (Twilio signs
    it whole), under the account's auth token. Twilio's own RequestValidator computes it."""
    return bool(signature) and bool(RequestValidator(auth_token).validate(url, params, signature))


class Keyword(StrEnum):
    """What an inbound text asks for."""

    OPT_OUT = "opt_out"  # STOP and its synonyms: send nothing more to this number
    OPT_IN = "opt_in"  # START, UNSTOP, YES, JA: send again, and confirm a waiting subscription
    OTHER = "other"  # anything else: ignored (people reply "thanks")


OPT_OUT_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
# JA: the German confirmation SMS asks for it (templates/confirm/de/sms.text.j2).
OPT_IN_WORDS = frozenset({"START", "UNSTOP", "YES", "JA"})


def keyword(body: str) -> Keyword:
    """The whole message as a keyword: trimmed, case and inner spaces ignored ("Stop all"),
    a trailing full stop or exclamation mark forgiven."""
    word = "".join(body.split()).upper().rstrip(".!")
    if word in OPT_OUT_WORDS:
        return Keyword.OPT_OUT
    if word in OPT_IN_WORDS:
        return Keyword.OPT_IN
    return Keyword.OTHER
