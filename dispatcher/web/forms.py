"""Url-encoded form bodies, read with a size cap: the subscriber pages' forms and the provider
webhooks that post forms (Twilio's inbound texts and status callbacks)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import Depends, HTTPException, Request

FORM_MAX_BYTES = 64 * 1024
FORM_MAX_FIELDS = 200


@dataclass(frozen=True)
class Form:
    """A url-encoded form body: repeated names keep their order (the channel order relies on it)."""

    pairs: tuple[tuple[str, str], ...]

    def get(self, name: str) -> str:
        return next((value.strip() for key, value in self.pairs if key == name), "")

    def getlist(self, name: str) -> list[str]:
        return [value.strip() for key, value in self.pairs if key == name]

    def as_dict(self) -> dict[str, str]:
        """Single-valued view (the first value of each name), for provider webhooks."""
        found: dict[str, str] = {}
        for key, value in self.pairs:
            found.setdefault(key, value)
        return found


async def read_form(request: Request) -> Form:
    """The body as a url-encoded form, read with the forms' size cap; 413 or 400, never a 500."""
    return await form_of(request, FORM_MAX_BYTES)


async def form_of(request: Request, max_bytes: int) -> Form:
    """The body as a url-encoded form, streamed and refused as soon as it grows past
    `max_bytes` (a form is far smaller than the app's body limit, which is set for webhooks)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise HTTPException(413, detail=f"form body larger than {max_bytes} bytes")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, max_num_fields=FORM_MAX_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(400, detail="the form body is not url-encoded UTF-8") from None
    return Form(tuple(pairs))


FormDep = Annotated[Form, Depends(read_form)]
