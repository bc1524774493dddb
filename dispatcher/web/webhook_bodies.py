"""How a monitoring webhook's payload arrives, read into the one dict its parser validates.

Every source can post JSON. Uptime Kuma's Webhook notification has two more "body" settings
(louislam/uptime-kuma server/notification-providers/webhook.js): form-data, one multipart field
named `data` holding the same JSON; and, since 2.1, the GET method, with `msg`, `heartbeat` and
`monitor` as query parameters, the last two JSON-encoded. All three come out the same.

Whatever goes wrong is a 422 naming where (`body`, `body.data`, `query.heartbeat`), never a 500:
the body is already within the size limit (BodySizeLimit) when it gets here, and a query string
is held to the same limit.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError

FORM_FIELD = "data"  # Uptime Kuma's form-data mode: formData.append("data", JSON.stringify(…))
QUERY_JSON = ("heartbeat", "monitor")  # its GET mode: JSON.stringify(…) per parameter


def _invalid(loc: tuple[str, ...], kind: str, msg: str) -> RequestValidationError:
    return RequestValidationError([{"type": kind, "loc": loc, "msg": msg}])


def json_object(raw: str | bytes, loc: tuple[str, ...] = ("body",)) -> dict[str, Any]:
    """A JSON object, or a 422 at `loc` saying why not."""
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _invalid(loc, "json_invalid", f"invalid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise _invalid(loc, "dict_type", "expected a JSON object")
    return payload


def _is_form(request: Request) -> bool:
    media_type = request.headers.get("content-type", "").partition(";")[0]
    return media_type.strip().lower() == "multipart/form-data"


async def json_or_form(request: Request, body: bytes, max_bytes: int) -> dict[str, Any]:
    """The JSON body, or the JSON in a multipart body's `data` field (Uptime Kuma's form-data)."""
    if not _is_form(request):
        return json_object(body)
    try:
        # The body is already read (and cached on the request): this parses it, with no files.
        form = await request.form(max_files=0, max_fields=16, max_part_size=max_bytes)
    except HTTPException as exc:  # starlette's answer to a malformed multipart body
        raise _invalid(("body",), "multipart_invalid", f"invalid form-data: {exc.detail}") from None
    value = form.get(FORM_FIELD)
    if not isinstance(value, str):
        raise _invalid(
            ("body", FORM_FIELD),
            "missing",
            f"form-data needs a field named {FORM_FIELD!r} holding the JSON body",
        )
    return json_object(value, ("body", FORM_FIELD))


def query_payload(request: Request, max_bytes: int) -> dict[str, Any]:
    """Uptime Kuma's GET mode: `msg` as it is, `heartbeat` and `monitor` decoded (absent: null,
    as for its "Test" button and the certificate warnings)."""
    if len(request.url.query) > max_bytes:
        raise HTTPException(414, detail=f"query string longer than {max_bytes} bytes")
    params = request.query_params
    payload: dict[str, Any] = {"msg": params.get("msg")}
    for name in QUERY_JSON:
        raw = params.get(name)
        payload[name] = None if raw is None else json_object(raw, ("query", name))
    return payload
