"""Address confirmation (double opt-in), from the link in a confirmation message.

    GET  /confirm/{token}       "confirm this address?" with one button
    POST /confirm/{token}       confirms (double opt-in)

The token names the address as well as the subscriber (dispatcher/subscribers/confirmations.py
reads it), so these pages read it there rather than with `pages.link_subscriber`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.links import LinkError, LinkPurpose
from dispatcher.store import Subscriber
from dispatcher.subscribers import confirmations, preferences
from dispatcher.subscribers.confirmations import ConfirmationError
from dispatcher.web.deps import PipelineDep
from dispatcher.web.pages import PageRoute, Refused, page, refused_link
from dispatcher.web.wording import words

router = APIRouter(tags=["subscriber pages"], include_in_schema=False, route_class=PageRoute)


def _confirmation(pipeline: Pipeline, token: str, act: bool) -> tuple[Subscriber, str, bool]:
    try:
        if act:
            confirmed = confirmations.confirm_link(pipeline, token)
            subscriber = preferences.get(pipeline.store, confirmed.subscriber_id)
            return subscriber, confirmed.field, True
        subscriber, address_field, address = confirmations.check_link(pipeline, token)
    except LinkError as exc:
        raise refused_link(exc) from None
    except preferences.SubscriberNotFound:
        raise Refused(410, "refused.stale_title", "refused.gone") from None
    except ConfirmationError as exc:
        raise Refused(410, "refused.stale_title", f"refused.{exc.code}") from None
    return subscriber, address_field, confirmations.is_confirmed(subscriber, address_field, address)


@router.get("/confirm/{token}")
def ask_confirm(request: Request, pipeline: PipelineDep, token: str) -> Response:
    subscriber, address_field, done = _confirmation(pipeline, token, act=False)
    return _confirm_page(request, pipeline, subscriber, address_field, done)


@router.post("/confirm/{token}")
def confirm(request: Request, pipeline: PipelineDep, token: str) -> Response:
    subscriber, address_field, done = _confirmation(pipeline, token, act=True)
    return _confirm_page(request, pipeline, subscriber, address_field, done)


def _confirm_page(
    request: Request, pipeline: Pipeline, subscriber: Subscriber, address_field: str, done: bool
) -> Response:
    said = words(subscriber.locale)
    return page(
        "web/confirm.html.j2",
        request,
        said,
        subscriber=subscriber,
        what=said(f"address.what_{address_field}"),
        done=done,
        manage_url=pipeline.links.url(LinkPurpose.MANAGE, subscriber),
    )
