"""What a provider's webhook tells the core, in the core's words: the one shape every
`channels/<channel>_events.py` module hands to dispatcher/delivery/receipts.py.

A provider's events module knows its payloads, its words (a dict to `ReceiptStatus` with UNKNOWN
for a word it does not know, as anymail's `event_types`) and its signature check; the core knows
what each status does to a delivery, whichever provider said it: it keeps `provider` for the
record, and never decides anything by it.
"""

from __future__ import annotations

from dataclasses import dataclass

from dispatcher.models import ReceiptStatus


@dataclass(frozen=True)
class ProviderEvent:
    """One event as a provider reported it, already verified as coming from that provider."""

    provider: str  # who said it ("twilio"): with `event_id`, the key the event is stored under
    channel: str  # the channel of the delivery it is about
    event_id: str  # the provider's own id for this event: what makes applying it idempotent
    event: str  # the provider's word, e.g. "undelivered"
    status: ReceiptStatus  # that word in ours
    delivery_id: int | None  # ours, when the provider echoes it (custom_args, callback URL)
    # The provider's id of this one message, to find the delivery by without `delivery_id`;
    # None when its ids name more than one message (SendGrid's name a whole request).
    provider_id: str | None = None
    address: str | None = None  # the recipient the provider names (used only to suppress)
    detail: str | None = None  # an error code, for the record; never an address


def delivery_id(value: object) -> int | None:
    """Our delivery id as a provider echoes it back (text, from a URL or custom args), else None."""
    try:
        return int(str(value)) if value is not None and str(value).strip() else None
    except ValueError:
        return None
