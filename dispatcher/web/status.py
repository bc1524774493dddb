"""The public status page: `/`, `/incidents/{id}`, `/feed.atom`, `/api/status` and `/subscribe`.

Server-rendered HTML (Jinja2, autoescaped, no JavaScript, no external assets) so the page works
on any phone, in any reader, and when the company's CDN is what is down. Every route reads through
`dispatcher.incidents.public`, which returns only public shapes (no drafts, no internal notes);
this module only presents them. Costs: `/` and `/api/status` two queries, `/incidents/{id}` and
`/feed.atom` one (see `dispatcher.incidents.public`).

The sign-up form posts here, to `/subscribe`, as a plain form (no JSON, so no script is needed);
the handler makes the subscriber with `records.add` and asks for the double opt-in with
`confirmations.request`, the same core the JSON sign-up API uses. Its answer is the same whether
the address was new or already known, so the form does not tell strangers who subscribes.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Annotated, Any, Final
from urllib.parse import parse_qs
from xml.etree import ElementTree as ET

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
from dispatcher.web.deps import PipelineDep, SettingsDep

router = APIRouter(tags=["status"])

ATOM_NS: Final = "http://www.w3.org/2005/Atom"
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
    env.filters.update(clock=clock, day=day, iso=_iso, state_label=STATE_LABELS.__getitem__)
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


def _snapshot(pipeline: PipelineDep) -> public.Snapshot:
    return public.snapshot(pipeline.store, pipeline.settings)


SnapshotDep = Annotated[public.Snapshot, Depends(_snapshot)]


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def status_page(settings: SettingsDep, snap: SnapshotDep) -> HTMLResponse:
    """The status page: components, open incidents, maintenance, 90 days, sign-up."""
    return page(settings, "index", {"snap": snap, "form": SignupForm()})


@router.get("/incidents/{incident_id}", response_class=HTMLResponse, include_in_schema=False)
def incident_page(pipeline: PipelineDep, incident_id: str) -> HTMLResponse:
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


@router.get("/feed.atom", include_in_schema=False)
def atom_feed(pipeline: PipelineDep) -> Response:
    """Atom (RFC 4287): one entry per published update, newest first."""
    return feed_response(atom(public.feed(pipeline.store), pipeline.settings))


def feed_response(body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(
        body,
        media_type="application/atom+xml; charset=utf-8",
        headers={"Cache-Control": CACHE_PUBLIC, "X-Content-Type-Options": "nosniff"}
        | (headers or {}),
    )


def atom(
    entries: list[tuple[public.PublicIncident, public.PublicUpdate]],
    settings: Settings,
    *,
    page_url: str | None = None,
    feed_id: str | None = None,
) -> bytes:
    """The feed document, built with ElementTree so that every text is escaped by the XML
    library, not by hand. Entry ids are the update's anchor on its incident's public page:
    unique and stable for as long as the public URL is, and the same in a subscriber's private
    feed (`page_url`, whose links lead to their own page; `feed_id` names it), so a reader
    following both sees an update once."""
    base = settings.public_url.rstrip("/")
    pages_at = page_url or base
    ET.register_namespace("", ATOM_NS)
    feed = ET.Element(f"{{{ATOM_NS}}}feed")
    _text(feed, "id", feed_id or f"{base}/")
    _text(feed, "title", f"{settings.company_name} status")
    _text(feed, "updated", _iso(entries[0][1].created_at) if entries else _iso(utcnow()))
    ET.SubElement(feed, f"{{{ATOM_NS}}}link", rel="self", href=f"{pages_at}/feed.atom")
    home = page_url or f"{base}/"
    ET.SubElement(feed, f"{{{ATOM_NS}}}link", rel="alternate", type="text/html", href=home)
    author = ET.SubElement(feed, f"{{{ATOM_NS}}}author")
    _text(author, "name", settings.company_name)
    for incident, update in entries:
        url = f"{pages_at}/incidents/{incident.id}#update-{update.id}"
        entry = ET.SubElement(feed, f"{{{ATOM_NS}}}entry")
        _text(entry, "id", f"{base}/incidents/{incident.id}#update-{update.id}")
        _text(entry, "title", f"[{STATE_LABELS[update.state]}] {incident.title}")
        _text(entry, "updated", _iso(update.created_at))
        _text(entry, "published", _iso(update.created_at))
        ET.SubElement(entry, f"{{{ATOM_NS}}}link", rel="alternate", type="text/html", href=url)
        ET.SubElement(entry, f"{{{ATOM_NS}}}category", term=str(incident.severity))
        _text(entry, "content", _entry_text(incident, update)).set("type", "text")
    document: bytes = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    return document


def _entry_text(incident: public.PublicIncident, update: public.PublicUpdate) -> str:
    lines = [update.message or f"{STATE_LABELS[update.state]}.", ""]
    lines.append(f"Affects: {', '.join(incident.components)} ({incident.severity}).")
    if update.next_update_at is not None and update.state.is_open:
        lines.append(f"Next update by {clock(update.next_update_at, update.created_at)}.")
    return "\n".join(lines)


def _text(parent: ET.Element, tag: str, text: str) -> ET.Element:
    element = ET.SubElement(parent, f"{{{ATOM_NS}}}{tag}")
    element.text = text
    return element


def _iso(moment: datetime) -> str:
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
def subscribe_page(settings: SettingsDep, snap: SnapshotDep) -> HTMLResponse:
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
    body = await request.body()
    if len(body) > FORM_MAX_BYTES:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail="form too large")
    # Storing blocks on the database: not on the event loop.
    return await run_in_threadpool(_subscribe_answer, pipeline, background, _read_form(body))


def _subscribe_answer(
    pipeline: Pipeline, background: BackgroundTasks, form: SignupForm
) -> HTMLResponse:
    settings = pipeline.settings
    snap = public.snapshot(pipeline.store, settings)
    outcome = _sign_up(pipeline, form, [c.name for c in snap.components])
    if isinstance(outcome, dict):
        return page(
            settings,
            "subscribe",
            {"snap": snap, "form": form.model_copy(update={"errors": outcome})},
            status_code=422,
            cache_control="no-store",
        )
    # After the answer, as the JSON sign-up does: a request never waits for a provider.
    background.add_task(confirmations.request, pipeline, outcome)
    return page(settings, "subscribed", {"form": form}, cache_control="no-store")


def _read_form(body: bytes) -> SignupForm:
    fields = parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=200)

    def one(name: str) -> str:
        return (fields.get(name) or [""])[0].strip()[:500]

    return SignupForm(
        name=one("name"),
        email=one("email"),
        phone=one("phone"),
        components=[c.strip() for c in fields.get("components", []) if c.strip()][:100],
    )


def _sign_up(pipeline: Pipeline, form: SignupForm, offered: list[str]) -> int | dict[str, str]:
    """The subscriber to send confirmations to (new, or already known by one of the addresses:
    the same answer either way, and the pending confirmation again), or the errors by field.

    The same core call as `POST /api/subscribers` without a token (`records.sign_up`), with
    `SubscriberIn` so no operator-only field can be set from this form."""
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
        return records.sign_up(pipeline.store, pipeline.registry, data, offered)
    except ValidationError as exc:
        return _field_errors(exc)
    except records.SubscriberError as exc:
        field, _, message = str(exc).partition(": ")
        return {field if field == "components" else "form": message if message else str(exc)}


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
