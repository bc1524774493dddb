"""The API's documentation, for the operator: `/docs` (Swagger UI), `/redoc` and `/openapi.json`.

Why not open to all, as FastAPI serves them by default: the schema is a map of every operator
route and what each accepts, which helps nobody on the internet but an attacker. So they answer
the operator token, as `Authorization: Bearer` (curl, a schema tool) or as the password of HTTP
Basic authentication, which a browser asks for itself when it is refused (any user name); once
given, the browser sends it with Swagger UI's own request for the schema too. With
OUTAGE_API_DOCS=public they are open to anyone, as before.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, status
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse

from dispatcher.web.deps import SettingsDep, basic_password, bearer_token, holds

SCHEMA_URL = "/openapi.json"
SWAGGER_REDIRECT_URL = "/docs/oauth2-redirect"
REALM = "outage-dispatcher API docs"


def require_docs_reader(request: Request, settings: SettingsDep) -> None:
    """Anyone with OUTAGE_API_DOCS=public; else the operator token, as Bearer or Basic."""
    if settings.api_docs == "public":
        return
    if holds(bearer_token(request), settings.api_token) or holds(
        basic_password(request), settings.api_token
    ):
        return
    detail = "the API docs need the operator token (or OUTAGE_API_DOCS=public)"
    if settings.api_token is None:
        detail = (
            "OUTAGE_API_TOKEN is not set, so the API docs are closed (or OUTAGE_API_DOCS=public)"
        )
    raise HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8", Bearer'},
    )


def router_for(app: FastAPI) -> APIRouter:
    """The three documents of `app`, each behind `require_docs_reader` (the app is made with
    FastAPI's own docs routes switched off)."""
    router = APIRouter(include_in_schema=False, dependencies=[Depends(require_docs_reader)])

    @router.get(SCHEMA_URL)
    def openapi() -> dict[str, Any]:
        return app.openapi()

    @router.get("/docs")
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=SCHEMA_URL,
            title=f"{app.title} - API",
            oauth2_redirect_url=SWAGGER_REDIRECT_URL,
        )

    @router.get(SWAGGER_REDIRECT_URL)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @router.get("/redoc")
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=SCHEMA_URL, title=f"{app.title} - API")

    return router
