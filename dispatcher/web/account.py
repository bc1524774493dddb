"""A subscriber's private status page: the public page plus the private incidents that concern
them, with the same timeline, promises and history bars, and its own Atom feed.

    GET /account/{token}                  the page (`outage subscriber link ID --page`)
    GET /account/{token}/incidents/{id}   one incident's timeline (public or theirs)
    GET /account/{token}/feed.atom        their feed: public updates and theirs

The token is a signed, expiring link like the preference centre's (dispatcher/links.py,
purpose "page"): forged or for another page 403, expired or for an erased subscriber 410, shown
as a page (web/pages.py). Which private incidents a subscriber sees is decided by
dispatcher/incidents/private.py; everything is read through dispatcher/incidents/public.py, so a
private page shows nothing the public one would hide but those incidents (no drafts, no
internal notes). Responses are never cached, indexed or named in a Referer.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents import private, public
from dispatcher.links import LinkPurpose
from dispatcher.store import Subscriber, utcnow
from dispatcher.web.deps import PipelineDep
from dispatcher.web.feed import atom, feed_response
from dispatcher.web.pages import PageRoute, link_subscriber
from dispatcher.web.status import PRIVATE_HEADERS, Viewer, incident_number, page

router = APIRouter(tags=["subscriber pages"], include_in_schema=False, route_class=PageRoute)


def _viewer(pipeline: Pipeline, token: str) -> tuple[Subscriber, Viewer, list[int]]:
    """The subscriber of the link (or the refusal page), their page, and what it may show."""
    subscriber = link_subscriber(pipeline, LinkPurpose.PAGE, token)
    shown = private.visible(pipeline.store, subscriber, pipeline.settings.unscoped)
    return subscriber, Viewer(subscriber.name, f"/account/{token}"), shown


@router.get("/account/{token}", response_class=HTMLResponse)
def account_page(pipeline: PipelineDep, token: str) -> HTMLResponse:
    _, viewer, shown = _viewer(pipeline, token)
    snap = public.snapshot(pipeline.store, pipeline.settings, visible=shown)
    return page(pipeline.settings, "index", {"snap": snap}, viewer=viewer)


@router.get("/account/{token}/incidents/{incident_id}", response_class=HTMLResponse)
def account_incident(pipeline: PipelineDep, token: str, incident_id: str) -> HTMLResponse:
    _, viewer, shown = _viewer(pipeline, token)
    number = incident_number(incident_id)
    found = public.incident(pipeline.store, number, shown) if number is not None else None
    if found is None:
        return page(pipeline.settings, "not_found", {}, status_code=404, viewer=viewer)
    return page(pipeline.settings, "incident", {"incident": found, "now": utcnow()}, viewer=viewer)


@router.get("/account/{token}/feed.atom")
def account_feed(pipeline: PipelineDep, token: str) -> Response:
    subscriber, _, shown = _viewer(pipeline, token)
    base = pipeline.settings.public_url.rstrip("/")
    body = atom(
        public.feed(pipeline.store, visible=shown),
        pipeline.settings,
        page_url=f"{base}/account/{token}",
        feed_id=f"{base}/account#subscriber-{subscriber.id}",
    )
    return feed_response(body, PRIVATE_HEADERS)
