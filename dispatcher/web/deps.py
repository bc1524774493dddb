"""What route handlers share: the process's Pipeline, and the token and signature checks.

Secrets are compared in constant time; a missing configuration refuses (401 with the reason),
never accepts: a dispatcher started without a token must not take webhooks from anyone.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from pydantic import SecretStr

from channels import sms, sms_events
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.settings import Settings


def get_pipeline(request: Request) -> Pipeline:
    pipeline: Pipeline = request.app.state.pipeline
    return pipeline


def get_settings_dep(request: Request) -> Settings:
    return get_pipeline(request).settings


PipelineDep = Annotated[Pipeline, Depends(get_pipeline)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def basic_password(request: Request) -> str | None:
    """The password of `Authorization: Basic …`: what a browser sends once it has asked for one
    (the operator's token there opens the API docs), whatever the user name."""
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2] or None


def holds(presented: str | None, *expected: SecretStr | None) -> bool:
    """Whether `presented` is one of the configured `expected` secrets (constant time)."""
    if presented is None:
        return False
    return any(
        secret is not None
        and hmac.compare_digest(presented.encode(), secret.get_secret_value().encode())
        for secret in expected
    )


def is_operator(request: Request, settings: Settings) -> bool:
    """The request carries the operator token (Bearer); a wrong one is a 401, not a stranger."""
    presented = bearer_token(request)
    if presented is None:
        return False
    if not holds(presented, settings.api_token):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong credentials",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return True


def check_token(presented: str | None, expected: str | None, what: str) -> None:
    """401 unless `presented` equals `expected`; the answer never says which part was wrong."""
    if expected is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail=f"{what} is not configured on this dispatcher; set it to accept requests",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if presented is None or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong credentials",
            headers={"WWW-Authenticate": "Bearer"},
        )


def require_operator(request: Request, settings: SettingsDep) -> None:
    """The operator API (incidents, subscribers): `Authorization: Bearer $OUTAGE_API_TOKEN`."""
    token = settings.api_token.get_secret_value() if settings.api_token else None
    check_token(bearer_token(request), token, "OUTAGE_API_TOKEN")


OperatorDep = Depends(require_operator)


def check_twilio_signature(request: Request, settings: Settings, params: Mapping[str, str]) -> None:
    """403 unless Twilio signed exactly these form parameters for our public URL of this path
    and query: behind a proxy the URL we see is not the one Twilio was given (and signed).
    401 when the auth token is not configured."""
    try:
        token = sms.auth_token(settings)
    except ValueError as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail=str(exc)) from None
    url = settings.public_url.rstrip("/") + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    signature = request.headers.get(sms_events.SIGNATURE_HEADER, "")
    if not sms_events.verify(token, url, params, signature):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="missing or wrong Twilio signature")
