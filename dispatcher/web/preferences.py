"""The preference centre: a subscriber's channels in order, addresses, services, severity, quiet
hours and language, from the link in our messages (the rules of these pages: web/pages.py), in
the subscriber's language (the one saved, until a change of it is saved).

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
from dispatcher.web.pages import TYPED_ADDRESSES, PageRoute, gone, link_subscriber, page, sentence
from dispatcher.web.preference_form import FormState, channel_label, errors_of
from dispatcher.web.wording import Words, words

# ?done= after a POST (the _unsent ones: saved, but the throttle held the confirmation back)
DONE_NOTICES = (
    "saved",
    "unsubscribed",
    "resubscribed",
    "resent",
    "saved_unsent",
    "resubscribed_unsent",
)
# The form's fields as the error summary names them (catalogue keys).
FIELD_NAMES = {
    "channels": "preferences.channels",
    "email": "address.email",
    "phone": "address.phone",
    "components": "preferences.components",
    "min_severity": "preferences.min_severity",
    "quiet_start": "preferences.quiet_hours",
    "quiet_end": "preferences.quiet_hours",
    "timezone": "preferences.timezone",
    "locale": "preferences.language",
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
            address_field in TYPED_ADDRESSES
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
    said = words(subscriber.locale)
    with pipeline.store.session() as session:
        blocked = {name: str(reason) for name, reason in opt_outs(session, subscriber).items()}
    channels = []
    for name in state.order:
        address_field = pipeline.registry.factory(name).address_field or ""
        typed = address_field in TYPED_ADDRESSES
        channels.append(
            {
                "name": name,
                "label": channel_label(said, name),
                "field": address_field,
                "address_label": said(f"address.{address_field}") if typed else None,
                "value": getattr(state, address_field, ""),
                "webhook_url": subscriber.webhook_url if address_field == "webhook" else None,
                "status": _address_status(said, subscriber, address_field, blocked),
            }
        )
    return page(
        "web/preferences.html.j2",
        request,
        said,
        status_code=status_code,
        subscriber=subscriber,
        state=state,
        channels=channels,
        components=preferences.known_components(
            pipeline.store, pipeline.settings, subscriber.components
        ),
        severities=[
            (s.value, said(f"preferences.severity_{s}"), said(f"preferences.severity_{s}_hint"))
            for s in Severity
        ],
        field_names={name: said(key) for name, key in FIELD_NAMES.items()},
        languages=[(c, preferences.LANGUAGE_NAMES.get(c, c)) for c in preferences.languages()],
        time_zones=preferences.time_zones(),
        notice=notice,
        guess_timezone=subscriber.quiet_start is None and subscriber.timezone == "UTC",
        page_url=pipeline.links.url(LinkPurpose.PAGE, subscriber),
    )


def _address_status(
    said: Words, subscriber: Subscriber, address_field: str, blocked: dict[str, str]
) -> dict[str, str]:
    """How an address stands, for the line under it: opted out, waiting, or confirmed."""
    if address_field in blocked:
        reason = f"status.{blocked[address_field]}"
        return {"kind": "blocked", "text": said(reason if said.has(reason) else "status.opted_out")}
    if address_field not in confirmations.CONFIRMABLE or not getattr(subscriber, address_field):
        return {"kind": "none", "text": ""}
    pending = getattr(subscriber, PENDING_COLUMNS[address_field])
    if pending:
        return {"kind": "waiting", "text": said("status.pending", address=mask_address(pending))}
    if getattr(subscriber, CONFIRMATION_COLUMNS[address_field] or "") is None:
        return {"kind": "waiting", "text": said("status.waiting")}
    return {"kind": "ok", "text": said("status.confirmed")}


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
    said = words(subscriber.locale)
    return page(
        "web/message.html.j2",
        request,
        said,
        title=said("notice.new_link_title"),
        message=said("notice.new_link", address=mask_address(asked.address)),
    )


@router.get("/preferences/{token}")
def show_preferences(
    request: Request, pipeline: PipelineDep, token: str, done: str = ""
) -> Response:
    subscriber = link_subscriber(pipeline, LinkPurpose.MANAGE, token)
    state = FormState.of_subscriber(subscriber, _offered(pipeline, subscriber))
    notice = words(subscriber.locale)(f"notice.{done}") if done in DONE_NOTICES else None
    return _centre(request, pipeline, subscriber, state, notice=notice)


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
    said = words(subscriber.locale)
    if form.get("move"):
        notice = said("notice.moved")
        return _centre(request, pipeline, subscriber, state.moved(form.get("move")), notice=notice)
    known = preferences.known_components(pipeline.store, pipeline.settings, subscriber.components)
    problems = state.problems(known, _address_fields(pipeline, offered), said)
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
        problems = {**errors_of(exc, said), **problems}
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
