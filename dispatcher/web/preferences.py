"""The preference centre: a subscriber's channels in order, addresses, services, severity, quiet
hours and language, from the link in our messages (the rules of these pages: web/pages.py).

    GET  /preferences/{token}   the preference centre
    POST /preferences/{token}   save; move a channel up/down (without JavaScript); unsubscribe
                                from everything; subscribe again; resend a confirmation; send
                                me a new link (signs out every link sent so far)

Every confirmation these pages lead to (sending one again, a new address, coming back) asks the
sign-up throttle first (dispatcher/web/throttling.py): a link is no licence to make us text.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.links import LinkPurpose
from dispatcher.logs import mask_address
from dispatcher.models import Severity, SubscriberIn
from dispatcher.store import CONFIRMATION_COLUMNS, PENDING_COLUMNS, Subscriber
from dispatcher.subscribers import confirmations, new_link, preferences
from dispatcher.subscribers.records import SubscriberError, as_input, opt_outs
from dispatcher.web import throttling
from dispatcher.web.deps import PipelineDep
from dispatcher.web.forms import FormDep
from dispatcher.web.pages import (
    ADDRESS_LABELS,
    PageRoute,
    gone,
    link_subscriber,
    page,
    sentence,
)
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
    "saved_unsent": "Your preferences are saved, but we cannot send the confirmation just now: "
    "too many were asked for. Use “Send it again” later.",
    "resubscribed_unsent": "Welcome back. We cannot send the confirmation just now: too many "
    "were asked for. Use “Send it again” later.",
}
WAITING = "Waiting for you to confirm it: check your messages."

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
    )


def _address_status(
    subscriber: Subscriber, address_field: str, blocked: dict[str, str]
) -> dict[str, str]:
    """How an address stands, for the line under it: opted out, waiting, or confirmed."""
    if address_field in blocked:
        return {"kind": "blocked", "text": OPT_OUT_TEXT.get(blocked[address_field], "Opted out.")}
    if address_field not in confirmations.CONFIRMABLE or not getattr(subscriber, address_field):
        return {"kind": "none", "text": ""}
    pending = getattr(subscriber, PENDING_COLUMNS[address_field])
    if pending:
        return {
            "kind": "waiting",
            "text": f"Confirmed. Waiting for you to confirm {mask_address(pending)}: we keep "
            "using this one until you confirm it.",
        }
    if getattr(subscriber, CONFIRMATION_COLUMNS[address_field] or "") is None:
        return {"kind": "waiting", "text": WAITING}
    return {"kind": "ok", "text": "Confirmed."}


def _new_link(
    request: Request, pipeline: Pipeline, background: BackgroundTasks, subscriber: Subscriber
) -> Response:
    """Sign out every link and send a new one; this page's own link is one of those signed out,
    so the answer is a page of its own rather than the centre again."""
    try:
        asked = new_link.sign_out(pipeline.store, pipeline.registry, subscriber.id)
    except new_link.NoConfirmedAddress as exc:
        state = FormState.of_subscriber(subscriber, _offered(pipeline, subscriber))
        return _centre(
            request, pipeline, subscriber, state, status_code=409, notice=sentence(str(exc))
        )
    background.add_task(pipeline.deliver, [asked.delivery_id])
    return page(
        "web/message.html.j2",
        request,
        title="We sent you a new link",
        message=f"It is on its way to {mask_address(asked.address)}. This link, and every link "
        "in our earlier messages, no longer work.",
    )


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
        sent = _confirm(request, pipeline, background, subscriber.id, confirmations.CONFIRMABLE)
        return _back_to(request, "resubscribed" if sent else "resubscribed_unsent")
    if action == "resend":
        asked = confirmations.waiting(subscriber, [form.get("field")])
        refused = throttling.ask(request, pipeline, background, asked)
        if refused is not None:
            state = FormState.of_subscriber(subscriber, _offered(pipeline, subscriber))
            answer = _centre(
                request,
                pipeline,
                subscriber,
                state,
                status_code=refused.http_status,
                notice=sentence(refused.message),
            )
            answer.headers.update(throttling.retry_after(refused))
            return answer
        background.add_task(confirmations.request, pipeline, subscriber.id, list(asked))
        return _back_to(request, "resent")
    if action == "new_link":
        return _new_link(request, pipeline, background, subscriber)
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
                keep_confirmed=True,
            )
    except (ValidationError, SubscriberError) as exc:
        problems = {**errors_of(exc), **problems}
    except preferences.SubscriberNotFound:
        raise gone() from None
    if saved is None:
        failed = replace(state, errors=problems)
        return _centre(request, pipeline, subscriber, failed, status_code=422)
    if saved.to_confirm and not _confirm(
        request, pipeline, background, subscriber.id, saved.to_confirm
    ):
        return _back_to(request, "saved_unsent")
    return _back_to(request, "saved")


def _confirm(
    request: Request,
    pipeline: Pipeline,
    background: BackgroundTasks,
    subscriber_id: int,
    fields: Iterable[str],
) -> bool:
    """Ask for the confirmations these fields wait for, if the throttle lets them go now
    (after a change that is already saved: the person sends them again later otherwise)."""
    asked = confirmations.waiting(preferences.get(pipeline.store, subscriber_id), fields)
    if throttling.ask(request, pipeline, background, asked) is not None:
        return False
    if asked:
        background.add_task(confirmations.request, pipeline, subscriber_id, list(asked))
    return True
