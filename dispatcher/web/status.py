"""The public status page: `/`, `/incidents/{id}`, `/api/status` and `/subscribe` (the feed:
web/feed.py).

Server-rendered HTML (Jinja2, autoescaped, no JavaScript, no external assets) so the page works
on any phone, in any reader, and when the company's CDN is what is down. Every route reads through
`dispatcher.incidents.public`, which returns only public shapes (no drafts, no internal notes);
this module only presents them. Costs: `/` and `/api/status` two queries, `/incidents/{id}` and
`/feed.atom` one (see `dispatcher.incidents.public`).

The sign-up form posts here, to `/subscribe`, as a plain form (no JSON, so no script is needed),
with the bot check's honeypot and signed timestamp (dispatcher/web/botcheck.py); the handler
checks it, asks the throttle (dispatcher/web/throttling.py), makes the subscriber with
`records.sign_up` and asks for the double opt-in with `confirmations.request`, the same core the
JSON sign-up API uses. Its answer is the same whether the address was new or already known, so
the form does not tell strangers who subscribes.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Annotated, Any, Final

from fastapi import APIRouter, BackgroundTasks, Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from pydantic import BaseModel, ValidationError

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents import public as public
from dispatcher.models import IncidentState, Severity, SubscriberIn
from dispatcher.render.calendar import clock, day
from dispatcher.settings import Settings, templates_dir
from dispatcher.store import utcnow
from dispatcher.subscribers import confirmations, records
from dispatcher.web import botcheck, throttling
from dispatcher.web.deps import PipelineDep, SettingsDep
from dispatcher.web.forms import Form, form_of
from dispatcher.web.pages import sentence

router = APIRouter(tags=["status"])

FORM_MAX_BYTES: Final = 16_384  # a sign-up form is a few hundred bytes
# Public pages may be cached briefly: during an outage everyone reloads the status page at once.
CACHE_PUBLIC: Final = "public, max-age=30"
# Nothing but this response's own style block (by nonce, as the subscriber pages do), and forms
# that post to us.
CSP: Final = (
    "default-src 'none'; style-src 'nonce-{nonce}'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
STATE_LABELS: Final = {
    IncidentState.INVESTIGATING: "Investigating",
    IncidentState.IDENTIFIED: "Identified",
    IncidentState.MONITORING: "Monitoring",
    IncidentState.RESOLVED: "Resolved",
    IncidentState.SCHEDULED: "Scheduled",
    IncidentState.CANCELLED: "Cancelled",
}


@cache
def pages() -> Environment:
    """The status pages' Jinja environment: every `.html.j2` autoescaped; dates by the same
    functions the messages use (English, UTC), so the page and the SMS show the same times."""
    env = Environment(
        loader=FileSystemLoader(templates_dir()),
        autoescape=select_autoescape(enabled_extensions=("html", "html.j2")),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(clock=clock, day=day, iso=iso, state_label=STATE_LABELS.__getitem__)
    return env


@dataclass(frozen=True)
class Viewer:
    """Whose private page this is (web/account.py): links stay under `base`, the signed path,
    and the page is never cached, indexed or named in a Referer."""

    name: str
    base: str  # "/account/<token>"


# A private page's headers: the token in its path is the whole credential.
PRIVATE_HEADERS: Final = {
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "private, no-store",
    "X-Robots-Tag": "noindex",
}


def page(
    settings: Settings,
    name: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
    cache_control: str = CACHE_PUBLIC,
    viewer: Viewer | None = None,
) -> HTMLResponse:
    """A status page from templates/web/status/: the public one, or a subscriber's own."""
    nonce = secrets.token_urlsafe(16)
    body = (
        pages()
        .get_template(f"web/status/{name}.html.j2")
        .render(
            company=settings.company_name,
            support_url=settings.support_url,
            signup_enabled=settings.signup_enabled and viewer is None,
            nonce=nonce,
            form_stamp=botcheck.stamp(_secret_key(settings)),
            viewer=viewer,
            base=viewer.base if viewer else "",
            **context,
        )
    )
    headers = {
        "Content-Security-Policy": CSP.format(nonce=nonce),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": cache_control,
        **(PRIVATE_HEADERS if viewer else {}),
    }
    return HTMLResponse(body, status_code=status_code, headers=headers)


def _secret_key(settings: Settings) -> str:
    key = settings.secret_key
    assert key is not None, "the Pipeline always resolves the links' secret key"
    return key.get_secret_value()


def _snapshot(pipeline: PipelineDep) -> public.Snapshot:
    return public.snapshot(pipeline.store, pipeline.settings)


SnapshotDep = Annotated[public.Snapshot, Depends(_snapshot)]


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def statuspage(settings: SettingsDep, snap: SnapshotDep) -> HTMLResponse:
    """The status page: components, open incidents, maintenance, 90 days, sign-up."""
    return page(settings, "index", {"snap": snap, "form": SignupForm()})


@router.get("/incidents/{incident_id}", response_class=HTMLResponse, include_in_schema=False)
def incidentpage(pipeline: PipelineDep, incident_id: str) -> HTMLResponse:
    """One incident's timeline: the page every message links to. Drafts are 404, like unknown
    ids, so a draft's existence is not revealed."""
    number = incident_number(incident_id)
    found = public.incident(pipeline.store, number) if number is not None else None
    if found is None:
        return page(pipeline.settings, "not_found", {}, status_code=404, cache_control="no-store")
    return page(pipeline.settings, "incident", {"incident": found, "now": utcnow()})


def incident_number(text: str) -> int | None:
    """An incident id from a path, or None for anything else (no int() of a 10,000-digit
    string, no "١٢" read as 12)."""
    plain = text.isascii() and text.isdigit() and len(text) <= 19
    return int(text) if plain else None


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# --- /api/status ----------------------------------------------------------------------------


class UpdateOut(BaseModel):
    id: int
    state: IncidentState
    message: str | None
    created_at: datetime
    next_update_at: datetime | None


class IncidentOut(BaseModel):
    id: int
    title: str
    severity: Severity
    state: IncidentState
    components: list[str]
    started_at: datetime
    resolved_at: datetime | None
    eta: datetime | None
    ends_at: datetime | None
    next_update_at: datetime | None
    url: str
    updates: list[UpdateOut]


class ComponentOut(BaseModel):
    name: str
    status: public.Level
    incident_ids: list[int]


class StatusOut(BaseModel):
    """The status page as data: for widgets, other status pages and monitoring."""

    generated_at: datetime
    status: public.Level
    description: str
    components: list[ComponentOut]
    incidents: list[IncidentOut]
    maintenance: list[IncidentOut]


@router.get("/api/status")
def status_json(pipeline: PipelineDep, snap: SnapshotDep, response: Response) -> StatusOut:
    """Components with their current state, open incidents with their updates (oldest first),
    and scheduled maintenance that has not ended. No drafts, no internal notes."""
    base = pipeline.settings.public_url.rstrip("/")
    response.headers["Cache-Control"] = CACHE_PUBLIC

    def out(incident: public.PublicIncident) -> IncidentOut:
        return IncidentOut(
            id=incident.id,
            title=incident.title,
            severity=incident.severity,
            state=incident.state,
            components=list(incident.components),
            started_at=incident.started_at,
            resolved_at=incident.resolved_at,
            eta=incident.eta,
            ends_at=incident.ends_at,
            next_update_at=incident.next_update_at,
            url=f"{base}/incidents/{incident.id}",
            updates=[UpdateOut.model_validate(u, from_attributes=True) for u in incident.updates],
        )

    return StatusOut(
        generated_at=snap.now,
        status=snap.level,
        description=snap.level.label,
        components=[
            ComponentOut(name=c.name, status=c.level, incident_ids=list(c.incident_ids))
            for c in snap.components
        ],
        incidents=[out(i) for i in snap.open_incidents],
        maintenance=[out(i) for i in snap.maintenance],
    )


# --- /subscribe -----------------------------------------------------------------------------


class SignupForm(BaseModel):
    """What the sign-up form holds, to show it again with the person's input after an error."""

    name: str = ""
    email: str = ""
    phone: str = ""
    components: list[str] = []
    errors: dict[str, str] = {}  # field -> message; "form" for what belongs to no one field


@router.get("/subscribe", response_class=HTMLResponse, include_in_schema=False)
def subscribepage(settings: SettingsDep, snap: SnapshotDep) -> HTMLResponse:
    """The sign-up form on its own page (where the form comes back after a mistake)."""
    if not settings.signup_enabled:
        raise HTTPException(status.HTTP_404_NOT_FOUND)
    return page(settings, "subscribe", {"snap": snap, "form": SignupForm()})


@router.post("/subscribe", response_class=HTMLResponse, include_in_schema=False)
async def subscribe(
    request: Request, pipeline: PipelineDep, background: BackgroundTasks
) -> HTMLResponse:
    """Sign up from the plain HTML form (application/x-www-form-urlencoded)."""
    if not pipeline.settings.signup_enabled:
        raise HTTPException(status.HTTP_404_NOT_FOUND)
    sent = await form_of(request, FORM_MAX_BYTES)
    human = botcheck.passes(
        sent, _secret_key(pipeline.settings), pipeline.settings.signup_min_fill_s
    )
    # Storing blocks on the database (and the throttle on Redis): not on the event loop.
    return await run_in_threadpool(
        _subscribe_answer, request, pipeline, background, _read_form(sent), human
    )


def _subscribe_answer(
    request: Request,
    pipeline: Pipeline,
    background: BackgroundTasks,
    form: SignupForm,
    human: bool,
) -> HTMLResponse:
    settings = pipeline.settings
    snap = public.snapshot(pipeline.store, settings)
    if not human:  # nothing checked, stored or counted for a script (web/botcheck.py)
        return _again(settings, snap, form, {"form": botcheck.REFUSED}, 422)
    offered = [c.name for c in snap.components]
    checked = _checked(pipeline, form, offered)
    if isinstance(checked, dict):
        return _again(settings, snap, form, checked, 422)
    refused = throttling.ask(request, pipeline, background, throttling.given(checked))
    if refused is not None:
        again = _again(
            settings, snap, form, {"form": sentence(refused.message)}, refused.http_status
        )
        again.headers.update(throttling.retry_after(refused))
        return again
    try:
        known_id = records.sign_up(pipeline.store, pipeline.registry, checked, offered)
    except records.SubscriberError as exc:  # what changed since it was checked (a component)
        return _again(settings, snap, form, _subscriber_errors(exc), 422)
    # After the answer, as the JSON sign-up does: a request never waits for a provider.
    background.add_task(confirmations.request, pipeline, known_id)
    return page(settings, "subscribed", {"form": form}, cache_control="no-store")


def _again(
    settings: Settings,
    snap: public.Snapshot,
    form: SignupForm,
    errors: dict[str, str],
    status_code: int,
) -> HTMLResponse:
    """The form again, filled in as it was sent, with what is wrong by field."""
    return page(
        settings,
        "subscribe",
        {"snap": snap, "form": form.model_copy(update={"errors": errors})},
        status_code=status_code,
        cache_control="no-store",
    )


def _read_form(form: Form) -> SignupForm:
    def one(name: str) -> str:
        return form.get(name)[:500]

    return SignupForm(
        name=one("name"),
        email=one("email"),
        phone=one("phone"),
        components=[c for c in form.getlist("components") if c][:100],
    )


def _checked(
    pipeline: Pipeline, form: SignupForm, offered: list[str]
) -> SubscriberIn | dict[str, str]:
    """The sign-up the form asks for, checked as `records.sign_up` will store it (the same core
    rules as `POST /api/subscribers` without a token, with `SubscriberIn` so no operator-only
    field can be set from this form), or the errors by field."""
    if not form.email and not form.phone:
        return {"form": "Give an email address, a phone number, or both."}
    channels = [
        channel
        for channel, given in (("email", form.email), ("sms", form.phone))
        if given and channel in pipeline.registry.factories
    ]
    try:
        data = SubscriberIn(
            name=form.name,
            email=form.email or None,
            phone=form.phone or None,
            channels=channels or ["email"],
            components=form.components,
        )
        records.check_sign_up(pipeline.registry, data, offered)
    except ValidationError as exc:
        return _field_errors(exc)
    except records.SubscriberError as exc:
        return _subscriber_errors(exc)
    return data


def _subscriber_errors(exc: records.SubscriberError) -> dict[str, str]:
    field, _, message = str(exc).partition(": ")
    named = field in ("components", "phone")
    return {field if named else "form": message or str(exc)}


_FIELD_NAMES: Final = {
    "name": "name",
    "email": "email",
    "phone": "phone",
    "components": "components",
}


def _field_errors(error: ValidationError) -> dict[str, str]:
    errors: dict[str, str] = {}
    for item in error.errors():
        where = str(item["loc"][0]) if item["loc"] else "form"
        message = item["msg"].removeprefix("Value error, ")
        errors.setdefault(_FIELD_NAMES.get(where, "form"), message)
    return errors
