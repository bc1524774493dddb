"""The fake Twilio Messaging API: `POST /2010-04-01/Accounts/{sid}/Messages.json` (form fields,
basic auth) and the account lookup `outage doctor` checks credentials with, answered in Twilio's
own shapes (error codes included) so the real SDK parses them as it would Twilio's."""

from __future__ import annotations

import base64
import binascii
import math
import re
import uuid
from datetime import UTC, datetime
from email.message import Message as HeaderMap
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from dispatcher.sandbox.replies import Reply, json_reply
from dispatcher.sandbox.state import SandboxState, new_record

CHANNEL = "sms"
SEND_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<sid>[^/]+)/Messages\.json$")
_ACCOUNT_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<sid>[^/]+)\.json$")
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")

# GSM 03.38: the basic set counts 1 septet, the extension set 2; anything else forces UCS-2.
_GSM_BASIC = frozenset(
    "@\u00a3$\u00a5\u00e8\u00e9\u00f9\u00ec\u00f2\u00c7\n\u00d8\u00f8\r\u00c5\u00e5"
    "\u0394_\u03a6\u0393\u039b\u03a9\u03a0\u03a8\u03a3\u0398\u039e\u00c6\u00e6\u00df\u00c9"
    " !\"#\u00a4%&'()*+,-./0123456789:;<=>?\u00a1ABCDEFGHIJKLMNOPQRSTUVWXYZ\u00c4\u00d6\u00d1"
    "\u00dc\u00a7\u00bfabcdefghijklmnopqrstuvwxyz\u00e4\u00f6\u00f1\u00fc\u00e0"
)
_GSM_EXTENDED = frozenset("^{}\\[~]|\u20ac\f")

# Twilio's error code for each status we produce ourselves.
_CODES = {401: 20003, 404: 20404, 405: 20004, 429: 20429, 500: 20500, 503: 20503, 504: 20504}


def error(status: int, message: str, code: int | None = None) -> Reply:
    code = code or _CODES.get(status, 20001)
    return json_reply(
        status,
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
    )


def sms_segments(text: str) -> int:
    """How many SMS parts Twilio would bill: GSM-7 fits 160 (153 when split), UCS-2 70 (67)."""
    if all(char in _GSM_BASIC or char in _GSM_EXTENDED for char in text):
        units = sum(2 if char in _GSM_EXTENDED else 1 for char in text)
        single, part = 160, 153
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, part = 70, 67
    return 1 if units <= single else math.ceil(units / part)


def _basic_auth(header: str | None) -> tuple[str, str] | None:
    """(user, password) of a Basic Authorization header, None unless both are there."""
    if not header or not header.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if user and password else None


def whoami(state: SandboxState, path: str, headers: HeaderMap) -> Reply | None:
    """The account lookup, or None for another path; injected faults apply to it too."""
    if not (match := _ACCOUNT_PATH.match(path)):
        return None
    if _basic_auth((headers.get("Authorization") or "").strip()) is None:
        return error(401, "Authenticate")
    account = {"sid": match["sid"], "friendly_name": "Sandbox", "status": "active"}
    return state.take_fault(CHANNEL, error) or json_reply(200, account)


def send(state: SandboxState, path: str, headers: HeaderMap, body: bytes) -> Reply:
    """Create a message: validated as Twilio does, recorded, answered 201 "queued"."""
    credentials = _basic_auth(headers.get("Authorization"))
    if credentials is None:
        return error(401, "Authenticate")
    if (fault := state.take_fault(CHANNEL, error)) is not None:
        return fault
    form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)

    def field(name: str) -> str:
        return form.get(name, [""])[0]

    to, sender, service = field("To"), field("From"), field("MessagingServiceSid")
    text, callback = field("Body"), field("StatusCallback")
    if not to:
        return error(400, "A 'To' phone number is required.", 21604)
    if not _E164.match(to):
        return error(400, f"The 'To' number {to} is not a valid phone number.", 21211)
    if not (sender or service):
        return error(400, "A 'From' phone number is required.", 21603)
    if not text:
        return error(400, "Message body is required.", 21602)
    if len(text) > 1600:
        return error(400, "The concatenated message body exceeds the 1600 character limit.", 21617)
    if state.fails(to):  # as Twilio answers for a number that cannot receive SMS
        return error(400, f"The 'To' number {to} is not a valid phone number.", 21211)
    match = SEND_PATH.match(urlsplit(path).path)
    account_sid = match["sid"] if match else ""
    state.remember_twilio_token(account_sid, credentials[1])
    sid = "SM" + uuid.uuid4().hex
    segments = sms_segments(text)
    now = format_datetime(datetime.now(UTC))
    meta: dict[str, Any] = {
        "from": sender or None,
        "messaging_service_sid": service or None,
        "status_callback": callback or None,
        "num_segments": segments,
        "account_sid": account_sid,
    }
    state.record([new_record(CHANNEL, to, headers, sid, body=text, meta=meta)])
    base = f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}"
    return json_reply(
        201,
        {
            "account_sid": account_sid,
            "api_version": "2010-04-01",
            "body": text,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": sender or None,
            "messaging_service_sid": service or None,
            "num_media": "0",
            "num_segments": str(segments),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued",
            "subresource_uris": {"media": f"{base}/Media.json"},
            "to": to,
            "uri": f"{base}.json",
        },
    )
