"""The preference centre: a subscriber's channels in order, addresses, services, severity, quiet
hours and language, from the link in our messages (the rules of these pages: web/pages.py).

    GET  /preferences/{token}   the preference centre
    POST /preferences/{token}   save; move a channel up/down (without JavaScript); unsubscribe
                                from everything; subscribe again; resend a confirmation
"""

from __future__ import annotations

from dataclasses import replace

from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.links import LinkPurpose
from dispatcher.models import Severity, SubscriberIn
from dispatcher.store import CONFIRMATION_COLUMNS, Subscriber
from dispatcher.subscribers import confirmations, preferences
from dispatcher.subscribers.records import SubscriberError, as_input, opt_outs
from dispatcher.web.deps import PipelineDep
from dispatcher.web.forms import FormDep
from dispatcher.web.pages import ADDRESS_LABELS, PageRoute, gone, link_subscriber, page
from dispatcher.web.preference_form import CHANNEL_LABELS, FormState, errors_of

SEVERITY_HINTS = {
    Severity.MINOR: "Everything, including slowdowns most people will not notice.",
    Severity.MAJOR: "Only when a feature is down for many people.",
    Severity.CRITICAL: "Only when the service is down.",
}
OPT_OUT_TEXT = {
    "unsubscribed": "You unsubscribed this address; we send nothing to it.",
    "stop": "This number replied STOP; text START to us to receive texts again.",
    "bounce": "Messages to this address bounced; enter a working one to use it again.",
    "spam_report": "This address reported our messages as spam; we send nothing to it.",
    "gone": "This webhook answered 410 Gone; ask us to set a new one.",
}
DONE_NOTICES = {
    "saved": "Your preferences are saved.",
    "unsubscribed": "You are unsubscribed from everything. We will send you nothing more.",
    "resubscribed": "Welcome back: you will hear about outages again.",
    "resent": "We sent the confirmation again. It can take a minute to arrive.",
}

router = APIRouter(tags=["subscriber pages"], include_in_schema=False, route_class=PageRoute)


def _back_to(request: Request, done: str) -> RedirectResponse:
    """After a POST, show the page again by GET (a reload does not post twice)."""
    return RedirectResponse(f"{request.url.path}?done={done}", status_code=303)


def _offered(pipeline: Pipeline, subscriber: Subscriber) -> list[str]:
    """Channels a subscriber can pick here: those with an address they can type (email, phone),
    and a webhook only when an operator set one (we do not post to URLs typed on a web page)."""
    offered = []
    for name in pipeline.registry.subscriber_channels():
        address_field = pipeline.registry.factory(name).address_field
        if (
            address_field in ADDRESS_LABELS
            or name in subscriber.channels
            or (address_field == "webhook" and subscriber.webhook_url)
        ):
            offered.append(name)
    return offered


def _address_fields(pipeline: Pipeline, offered: list[str]) -> dict[str, str]:
    return {name: pipeline.registry.factory(name).address_field or "" for name in offered}


def _centre(
    request: Request,
    pipeline: Pipeline,
    subscriber: Subscriber,
    state: FormState,
    *,
    status_code: int = 200,
    notice: str | None = None,
) -> Response:
    with pipeline.store.session() as session:
        blocked = {name: str(reason) for name, reason in opt_outs(session, subscriber).items()}
    channels = []
    for name in state.order:
        address_field = pipeline.registry.factory(name).address_field or ""
        channels.append(
            {
                "name": name,
                "label": CHANNEL_LABELS.get(name, name.replace("_", " ").capitalize()),
                "field": address_field,
                "address_label": ADDRESS_LABELS.get(address_field),
                "value": getattr(state, address_field, ""),
                "webhook_url": subscriber.webhook_url if address_field == "webhook" else None,
                "status": _address_status(subscriber, address_field, blocked),
            }
        )
    return page(
        "web/preferences.html.j2",
        request,
        status_code=status_code,
        subscriber=subscriber,
        state=state,
        channels=channels,
        components=preferences.known_components(
            pipeline.store, pipeline.settings, subscriber.components
        ),
        severities=[(s.value, s.value.capitalize(), SEVERITY_HINTS[s]) for s in Severity],
        languages=[(c, preferences.LANGUAGE_NAMES.get(c, c)) for c in preferences.languages()],
        time_zones=preferences.time_zones(),
        notice=notice,
        guess_timezone=subscriber.quiet_start is None and subscriber.timezone == "UTC",
        page_url=pipeline.links.url(LinkPurpose.PAGE, subscriber.id),
    )


def _address_status(
    subscriber: Subscriber, address_field: str, blocked: dict[str, str]
) -> dict[str, str]:
    """How an address stands, for the line under it: opted out, waiting, or confirmed."""
    if address_field in blocked:
        return {"kind": "blocked", "text": OPT_OUT_TEXT.get(blocked[address_field], "Opted out.")}
    if address_field not in confirmations.CONFIRMABLE or not getattr(subscriber, address_field):
        return {"kind": "none", "text": ""}
    if getattr(subscriber, CONFIRMATION_COLUMNS[address_field] or "") is None:
        return {"kind": "waiting", "text": "Waiting for you to confirm it: check your messages."}
    return {"kind": "ok", "text": "Confirmed."}


@router.get("/preferences/{token}")
def show_preferences(
    request: Request, pipeline: PipelineDep, token: str, done: str = ""
) -> Response:
    subscriber = link_subscriber(pipeline, LinkPurpose.MANAGE, token)
    state = FormState.of_subscriber(subscriber, _offered(pipeline, subscriber))
    return _centre(request, pipeline, subscriber, state, notice=DONE_NOTICES.get(done))


@router.post("/preferences/{token}")
def change_preferences(
    request: Request,
    pipeline: PipelineDep,
    background: BackgroundTasks,
    token: str,
    form: FormDep,
) -> Response:
    subscriber = link_subscriber(pipeline, LinkPurpose.MANAGE, token)
    action = form.get("action") or "save"
    if action == "unsubscribe_all":
        preferences.unsubscribe_all(pipeline.store, subscriber.id, actor="subscriber")
        return _back_to(request, "unsubscribed")
    if action == "resubscribe":
        preferences.resubscribe(pipeline.store, subscriber.id, actor="subscriber")
        background.add_task(confirmations.request, pipeline, subscriber.id)
        return _back_to(request, "resubscribed")
    if action == "resend":
        background.add_task(confirmations.request, pipeline, subscriber.id, [form.get("field")])
        return _back_to(request, "resent")
    offered = _offered(pipeline, subscriber)
    state = FormState.of_form(form, offered)
    if form.get("move"):
        notice = "Order changed. Save your preferences to keep it."
        return _centre(request, pipeline, subscriber, state.moved(form.get("move")), notice=notice)
    known = preferences.known_components(pipeline.store, pipeline.settings, subscriber.components)
    problems = state.problems(known, _address_fields(pipeline, offered))
    saved: preferences.Saved | None = None
    try:
        if problems:  # the core's findings too, so that every field is fixed in one go
            SubscriberIn.model_validate({**as_input(subscriber), **state.changes()})
        else:
            saved = preferences.update_preferences(
                pipeline.store,
                pipeline.registry,
                subscriber.id,
                state.changes(),
                actor="subscriber",
            )
    except (ValidationError, SubscriberError) as exc:
        problems = {**errors_of(exc), **problems}
    except preferences.SubscriberNotFound:
        raise gone() from None
    if saved is None:
        failed = replace(state, errors=problems)
        return _centre(request, pipeline, subscriber, failed, status_code=422)
    if saved.to_confirm:
        background.add_task(confirmations.request, pipeline, subscriber.id, saved.to_confirm)
    return _back_to(request, "saved")
