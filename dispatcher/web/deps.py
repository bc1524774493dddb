"""What route handlers share: the process's Pipeline, and the token checks.

Secrets are compared in constant time; a missing configuration refuses (401 with the reason),
never accepts: a dispatcher started without a token must not take webhooks from anyone.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

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
