"""What Twilio tells us about SMS, beside its adapter: status-callback words in ours.

Twilio POSTs a status callback to the URL the adapter gave with each message
(dispatcher/web/callbacks.py reads the request); `parse_status_callback` turns its form into a
`ProviderEvent`. What that status then does to the delivery is dispatcher/delivery/receipts.py's,
the same for every provider.
"""

from __future__ import annotations

from collections.abc import Mapping

from channels.events import ProviderEvent, delivery_id
from channels.sms import SmsChannel
from dispatcher.models import ReceiptStatus

PROVIDER = "twilio"

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
