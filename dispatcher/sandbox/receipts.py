"""The sandbox's delivery receipts: Twilio status callbacks and SendGrid signed events, signed
the way the real providers sign them, so tests and the demo go through the real verification.

Twilio signs a callback with the account's auth token (HMAC-SHA1 over the URL and the sorted form
fields, `X-Twilio-Signature`); the sandbox uses the token the adapter authenticated its send with,
which in sandbox mode is always the harmless dummy. SendGrid signs each event POST with its ECDSA
P-256 key over "<timestamp><body>"; the sandbox's key is fixed and public
(`channels.transport.SANDBOX_EVENT_PUBLIC_KEY`), which the callback route trusts only in
sandbox mode.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from twilio.request_validator import RequestValidator

from channels import email_events, sms_events
from dispatcher.sandbox.state import SandboxState

# A fixed key, so a dispatcher in sandbox mode knows it without configuration. Not a secret: it
# only ever signs the sandbox's own events. Its public half is `SANDBOX_EVENT_PUBLIC_KEY` in
# channels/transport.py, where the product reads it.
_SEED = int.from_bytes(hashlib.sha256(b"outage-dispatcher sandbox event webhook").digest())
_EVENT_KEY = ec.derive_private_key(_SEED, ec.SECP256R1())


@dataclass(frozen=True)
class SignedRequest:
    """A provider's callback, ready to POST (or to hand to a test client)."""

    url: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        parts = urlsplit(self.url)
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def post(self, timeout_s: float = 5.0) -> int:
        """Send it, as the provider would; the receiver's HTTP status."""
        response = httpx.post(self.url, content=self.body, headers=self.headers, timeout=timeout_s)
        return response.status_code


def _latest(sandbox: SandboxState, channel: str, to: str) -> dict[str, Any]:
    wanted = to.strip().lower()
    message: dict[str, Any]
    for message in reversed(sandbox.messages(channel)):
        if wanted in ((message["to"] or "").lower(), str(message["provider_id"]).lower()):
            return message
    raise ValueError(f"the sandbox accepted no {channel} message to {to}")


def twilio_status(
    sandbox: SandboxState, to: str, status: str, *, error_code: int | None = None
) -> SignedRequest:
    """The status callback Twilio would POST for the latest SMS to `to` (a number or a SID), to
    the `StatusCallback` URL the adapter gave with it."""
    message = _latest(sandbox, "sms", to)
    url = message["meta"].get("status_callback")
    if not url:
        raise ValueError("that SMS was sent without a StatusCallback URL")
    account_sid = str(message["meta"].get("account_sid") or "")
    token = sandbox.twilio_auth_token(account_sid)
    if token is None:
        raise ValueError("the sandbox knows no auth token for that account")
    form = {
        "AccountSid": account_sid,
        "ApiVersion": "2010-04-01",
        "From": str(message["meta"].get("from") or ""),
        "MessageSid": str(message["provider_id"]),
        "MessageStatus": status,
        "SmsSid": str(message["provider_id"]),
        "SmsStatus": status,
        "To": str(message["to"]),
    }
    if error_code is not None:
        form["ErrorCode"] = str(error_code)
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        sms_events.SIGNATURE_HEADER: RequestValidator(token).compute_signature(url, form),
        sms_events.IDEMPOTENCY_HEADER: f"{message['provider_id']}-{status}-{uuid.uuid4().hex[:8]}",
    }
    return SignedRequest(url, headers, urlencode(form).encode())


def sendgrid_event(
    sandbox: SandboxState, url: str, to: str, event: str, *, bounce_type: str = "bounce"
) -> SignedRequest:
    """A signed event-webhook POST about the latest email to `to`, as SendGrid sends them:
    a JSON array whose events carry the send's `custom_args` (our delivery id) at top level."""
    message = _latest(sandbox, "email", to)
    item: dict[str, Any] = {
        "email": message["to"],
        "timestamp": int(time.time()),
        "event": event,
        "sg_event_id": base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="),
        "sg_message_id": f"{message['provider_id']}.sandbox-0",
        **message["meta"].get("custom_args", {}),
    }
    if event == "bounce":
        item.update(type=bounce_type, status="5.1.1", reason="550 5.1.1 mailbox unavailable")
    if event == "dropped":
        item["reason"] = "Invalid"
    body = json.dumps([item]).encode()
    return signed_events(url, body)


def signed_events(url: str, body: bytes, timestamp: str | None = None) -> SignedRequest:
    """`body` signed with the sandbox's event key, SendGrid's way."""
    stamp = timestamp or str(int(time.time()))
    signature = _EVENT_KEY.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    headers = {
        "Content-Type": "application/json",
        email_events.SIGNATURE_HEADER: base64.b64encode(signature).decode(),
        email_events.TIMESTAMP_HEADER: stamp,
    }
    return SignedRequest(url, headers, body)


def emit(
    sandbox: SandboxState,
    channel: str,
    to: str,
    status: str,
    url: str | None = None,
    error_code: int | None = None,
) -> int:
    """POST a signed delivery receipt for the latest message to `to`, as the provider would:
    for "sms" a Twilio status callback to the message's StatusCallback, for "email" a
    SendGrid event (`status` is its event name) to `url`. The receiver's HTTP status."""
    if channel == "sms":
        return twilio_status(sandbox, to, status, error_code=error_code).post()
    if channel == "email" and url:
        return sendgrid_event(sandbox, url, to, status).post()
    raise ValueError('receipts are for channel "sms", or "email" with a "url"')
