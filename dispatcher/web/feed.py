"""`/feed.atom`: the status page's updates as an Atom feed (RFC 4287), for feed readers and
chat integrations; the same public shapes as the page (dispatcher.incidents.public)."""

from __future__ import annotations

from typing import Final
from xml.etree import ElementTree as ET

from fastapi import APIRouter
from fastapi.responses import Response

from dispatcher.incidents import public
from dispatcher.render.calendar import clock
from dispatcher.settings import Settings
from dispatcher.store import utcnow
from dispatcher.web.deps import PipelineDep
from dispatcher.web.status import CACHE_PUBLIC, STATE_LABELS, iso

router = APIRouter(tags=["status"])

ATOM_NS: Final = "http://www.w3.org/2005/Atom"


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
    _text(feed, "updated", iso(entries[0][1].created_at) if entries else iso(utcnow()))
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
        _text(entry, "updated", iso(update.created_at))
        _text(entry, "published", iso(update.created_at))
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
