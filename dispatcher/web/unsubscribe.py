"""One-click unsubscribe, from the unsubscribe link in our messages and an email's
List-Unsubscribe header (the rules of these pages: web/pages.py).

    GET  /unsubscribe/{token}   "unsubscribe from everything?" with one button
    POST /unsubscribe/{token}   unsubscribes: the button, and RFC 8058 one-click from mail clients
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from dispatcher.links import LinkPurpose
from dispatcher.subscribers import preferences
from dispatcher.web.deps import PipelineDep
from dispatcher.web.pages import PageRoute, link_subscriber, page
from dispatcher.web.wording import words

router = APIRouter(tags=["subscriber pages"], include_in_schema=False, route_class=PageRoute)


@router.get("/unsubscribe/{token}")
def ask_unsubscribe(request: Request, pipeline: PipelineDep, token: str) -> Response:
    subscriber = link_subscriber(pipeline, LinkPurpose.UNSUBSCRIBE, token)
    return page(
        "web/unsubscribe.html.j2",
        request,
        words(subscriber.locale),
        subscriber=subscriber,
        done=False,
    )


@router.post("/unsubscribe/{token}")
def unsubscribe(request: Request, pipeline: PipelineDep, token: str) -> Response:
    """RFC 8058 one-click: the body (List-Unsubscribe=One-Click) carries nothing we need, and the
    answer must not need cookies, redirects or a further click."""
    subscriber = link_subscriber(pipeline, LinkPurpose.UNSUBSCRIBE, token)
    preferences.unsubscribe_all(pipeline.store, subscriber.id, actor="subscriber")
    manage_url = pipeline.links.url(LinkPurpose.MANAGE, subscriber)
    return page(
        "web/unsubscribe.html.j2",
        request,
        words(subscriber.locale),
        subscriber=subscriber,
        done=True,
        manage_url=manage_url,
    )
