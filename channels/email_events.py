"""What SendGrid tells us about email, beside its adapter: event-webhook words in ours, and the
signature on each POST of them.

SendGrid POSTs batches of events as one JSON array (dispatcher/web/callbacks.py reads the
request), signed with its ECDSA key over "<timestamp><body>": the route accepts it only when
`verify` says so, and `parse_events` turns it into `ProviderEvent`s. A signature stays valid
forever, so a captured POST could be replayed a year later: its timestamp must be within a
window of now (`fresh`, five minutes by default, as our own webhooks' `verify`). What each
status then does to the delivery is dispatcher/delivery/receipts.py's, the same for every
provider.
"""

from __future__ import annotations

import binascii
import logging
import time

from cryptography.exceptions import UnsupportedAlgorithm
from sendgrid.helpers.eventwebhook import EventWebhook

from channels.email import EmailChannel
from channels.events import ProviderEvent, delivery_id
from dispatcher.models import ReceiptStatus

log = logging.getLogger(__name__)

PROVIDER = "sendgrid"
TOLERANCE_S = 300.0  # how far an event may be stamped from now (the default of the setting)
# The headers SendGrid's signed event webhook carries its signature and timestamp in.
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

# SendGrid's event webhook `event` values, any other is UNKNOWN; "blocked" is a bounce whose
# `type` is "blocked" (a soft, temporary refusal), told apart from a hard bounce by `parse_events`.
EVENTS: dict[str, ReceiptStatus] = {
    "processed": ReceiptStatus.PENDING,
    "deferred": ReceiptStatus.PENDING,
    "delivered": ReceiptStatus.DELIVERED,
    "open": ReceiptStatus.DELIVERED,
    "click": ReceiptStatus.DELIVERED,
    "bounce": ReceiptStatus.BOUNCED,
    "blocked": ReceiptStatus.UNDELIVERED,
    "dropped": ReceiptStatus.UNDELIVERED,
    "spamreport": ReceiptStatus.COMPLAINED,
    "unsubscribe": ReceiptStatus.UNSUBSCRIBED,
    "group_unsubscribe": ReceiptStatus.UNSUBSCRIBED,
}


def fresh(timestamp: str, tolerance_s: float = TOLERANCE_S, now: float | None = None) -> bool:
    """Whether `timestamp` (Unix seconds, as the -Timestamp header carries it) is within
    `tolerance_s` of `now`, either way: older is a replay, newer a clock that is off."""
    if not timestamp.isdigit():
        return False
    current = time.time() if now is None else now
    return abs(current - int(timestamp)) <= tolerance_s


def verify(
    public_key: str,
    body: bytes,
    signature: str,
    timestamp: str,
    *,
    tolerance_s: float = TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """Whether SendGrid's key (`public_key`, base64 as SendGrid shows it) signed `timestamp` and
    `body` with `signature` (the X-Twilio-Email-Event-Webhook-Signature and -Timestamp headers),
    as SendGrid's own EventWebhook helper checks it, and `timestamp` is `fresh`. A malformed
    signature, a body that is not UTF-8 or an unusable key is False, not an exception: each
    means "do not trust this"."""
    if not (signature and timestamp) or not fresh(timestamp, tolerance_s, now):
        return False
    try:
        return bool(
            EventWebhook(public_key).verify_signature(body.decode("utf-8"), signature, timestamp)
        )
    except (ValueError, TypeError, binascii.Error, UnsupportedAlgorithm):
        log.warning("SendGrid event signature could not be checked", exc_info=False)
        return False


def parse_events(document: object) -> list[ProviderEvent]:
    """The events of one event-webhook POST (a JSON array); ValueError if malformed. Our
    delivery id comes back in the `custom_args` the adapter set on each personalization."""
    if not isinstance(document, list) or not all(isinstance(e, dict) for e in document):
        raise ValueError("expected a JSON array of event objects")
    events = []
    for item in document:
        event = str(item.get("event") or "").lower()
        if event == "bounce" and str(item.get("type") or "").lower() == "blocked":
            event = "blocked"
        message_id = str(item.get("sg_message_id") or "").split(".")[0] or None
        fallback_id = f"{message_id}:{event}:{item.get('email')}:{item.get('timestamp')}"
        events.append(
            ProviderEvent(
                provider=PROVIDER,
                channel=EmailChannel.name,
                event_id=str(item.get("sg_event_id") or fallback_id)[:128],
                event=event,
                status=EVENTS.get(event, ReceiptStatus.UNKNOWN),
                delivery_id=delivery_id(item.get("delivery_id")),
                provider_id=None,  # the X-Message-Id names the whole request, not this message
                address=item.get("email") if isinstance(item.get("email"), str) else None,
                detail=str(item["status"]) if item.get("status") else None,
            )
        )
    return events
