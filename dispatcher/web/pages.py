"""What every subscriber page shares: the HTML page with its headers, refusals as pages, and
reading the signed link a page is opened with.

Customers reach these pages from a signed, expiring link (dispatcher/links.py) and have no
account: the token in the path is the whole credential, so a forged or wrong-purpose token is
403; an expired one, one for an erased subscriber, and one signed out since (the subscriber
asked for a new link) 410; and none of them changes anything.

    /preferences/{token}   the preference centre (web/preferences.py)
    /unsubscribe/{token}   one-click unsubscribe (web/unsubscribe.py)
    /confirm/{token}       address confirmation (web/confirm.py)

GET never changes anything: mail scanners and link previews open links, and must neither
unsubscribe nor confirm anyone. Pages are server-rendered, work without JavaScript (the script
only moves channels without a round trip and lets them be dragged), and are sent with a strict
Content-Security-Policy, `Referrer-Policy: no-referrer` (the token must not leak to other sites)
and `Cache-Control: no-store`. Every page speaks its subscriber's language, and a refusal that
knows no subscriber yet the browser's (dispatcher/web/wording.py holds every sentence).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.routing import APIRoute

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.links import LinkError, LinkPurpose, LinkRevoked
from dispatcher.render.templates import environment
from dispatcher.store import Subscriber
from dispatcher.subscribers import preferences
from dispatcher.web.wording import Words, from_header

# The address fields a person types on these pages (a webhook is set by an operator).
TYPED_ADDRESSES = ("email", "phone")


class Refused(Exception):
    """A page that cannot be shown for this link; rendered by PageRoute as an HTML page. Its
    title and message are catalogue keys, said in `words`' language (else the browser's)."""

    def __init__(
        self, status_code: int, title: str, message: str, words: Words | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.title = title
        self.message = message
        self.words = words


class PageRoute(APIRoute):
    """Turns `Refused` (and the link errors it stands for) into an HTML page with its status,
    so a person with a bad link sees a sentence, not JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except Refused as refused:
                words = refused.words or browser_words(request)
                return page(
                    "web/message.html.j2",
                    request,
                    words,
                    status_code=refused.status_code,
                    title=words(refused.title),
                    message=words(refused.message),
                )
            except HTTPException as exc:  # e.g. the form reader's 413
                words = browser_words(request)
                return page(
                    "web/message.html.j2",
                    request,
                    words,
                    status_code=exc.status_code,
                    title=words("refused.bad_request_title"),
                    message=str(exc.detail),
                )

        return handle


def page(
    template: str, request: Request, words: Words, *, status_code: int = 200, **context: Any
) -> Response:
    """A page from templates/web/ in `words`' language (the template's `t`), with the headers
    every subscriber page needs."""
    pipeline: Pipeline | None = getattr(request.app.state, "pipeline", None)
    nonce = secrets.token_urlsafe(16)
    html = (
        environment()
        .get_template(template)
        .render(
            company=pipeline.settings.company_name if pipeline else "",
            nonce=nonce,
            t=words,
            **context,
        )
    )
    return HTMLResponse(
        html,
        status_code=status_code,
        headers={
            "Content-Security-Policy": (
                f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
            ),
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "X-Robots-Tag": "noindex",
            "Content-Language": words.language,
        },
    )


def browser_words(request: Request) -> Words:
    """The catalogue of the language the browser asks for, for a page that knows no subscriber."""
    return from_header(request.headers.get("accept-language"))


def sentence(text: str) -> str:
    """A message from the core or pydantic as a sentence for a person: capital, one full stop."""
    text = text.strip()
    return (text[:1].upper() + text[1:]).rstrip(".") + "."


def link_subscriber(pipeline: Pipeline, purpose: LinkPurpose, token: str) -> Subscriber:
    """The subscriber a link is for, or Refused: 403 forged or wrong page, 410 expired, gone or
    signed out."""
    try:
        claims = pipeline.links.read(purpose, token)
        subscriber = preferences.get(pipeline.store, claims.subscriber_id)
        claims.check_holder(subscriber)
        return subscriber
    except LinkError as exc:
        raise refused_link(exc) from None
    except preferences.SubscriberNotFound:
        raise gone() from None


def refused_link(exc: LinkError) -> Refused:
    """The page for a link that does not work: 410 once expired or signed out, else 403."""
    if isinstance(exc, LinkRevoked):
        return Refused(410, "refused.revoked_title", "refused.revoked")
    if exc.expired:
        return Refused(410, "refused.expired_title", "refused.expired")
    return Refused(403, "refused.forged_title", "refused.forged")


def gone() -> Refused:
    """The page for a good link to a subscriber who has since been erased."""
    return Refused(410, "refused.gone_title", "refused.gone")
