"""The naive design, for comparison: one Celery task per delivery, one SDK call each.

This is how a notifier is usually first written: the fan-out publishes a task per recipient and
each task renders that recipient's message and calls the provider's SDK once, through our own
adapters (`send_one`, with their pooled clients), so the difference measured is the design (a
broker round trip, a render and a request per message) and not the HTTP code. It is given every
advantage: no delivery rows are written or read, the incident arrives in the task's arguments.

Run by a real worker: ``celery -A bench.naive worker --pool threads --concurrency 16``; the
broker comes from NAIVE_BROKER_URL, the sandbox from OUTAGE_SANDBOX_URL.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from celery import Celery

from channels.base import Channel, Message
from dispatcher.delivery.registry import ChannelRegistry
from dispatcher.links import LinkPurpose, Links
from dispatcher.models import IncidentState, Severity
from dispatcher.render.messages import render
from dispatcher.render.views import IncidentView, RecipientView, UpdateView
from dispatcher.settings import Settings

BROKER_URL = os.environ.get("NAIVE_BROKER_URL", "redis://127.0.0.1:6379/14")
TASK = "naive.deliver"

app = Celery("naive", broker=BROKER_URL)
app.conf.update(
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=4,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@dataclass(frozen=True)
class _Holder:
    """Whom a link is for, as the task's arguments carry it."""

    id: int
    link_secret: str | None


@cache
def _process() -> tuple[ChannelRegistry, Links, Settings]:
    """Adapters and links built once per worker process, as any sane worker would."""
    settings = Settings()
    links = Links(settings.public_url, "naive-benchmark-secret")
    return ChannelRegistry(settings), links, settings


def task_args(
    incident: IncidentView, update: UpdateView, channel: str, recipient: dict[str, Any]
) -> list[Any]:
    """The task's JSON arguments: everything it needs, so it never reads a database."""
    return [
        {
            "id": incident.id,
            "title": incident.title,
            "severity": str(incident.severity),
            "state": str(incident.state),
            "components": list(incident.components),
            "started_at": incident.started_at.isoformat(),
            "url": incident.url,
        },
        {"id": update.id, "state": str(update.state), "created_at": update.created_at.isoformat()},
        channel,
        recipient,
    ]


@app.task(name=TASK)
def deliver(
    incident: dict[str, Any], update: dict[str, Any], channel: str, recipient: dict[str, Any]
) -> None:
    registry, links, settings = _process()
    adapter: Channel = registry.get(channel)
    holder = _Holder(recipient["id"], recipient["link_secret"])
    person = RecipientView(
        name=recipient["name"],
        locale=recipient["locale"],
        timezone=recipient["timezone"],
        manage_url=links.url(LinkPurpose.MANAGE, holder),
        unsubscribe_url=links.url(LinkPurpose.UNSUBSCRIBE, holder),
    )
    rendered = render(
        channel,
        adapter.limits,
        IncidentView(
            id=incident["id"],
            title=incident["title"],
            severity=Severity(incident["severity"]),
            state=IncidentState(incident["state"]),
            components=tuple(incident["components"]),
            started_at=datetime.fromisoformat(incident["started_at"]),
            resolved_at=None,
            url=incident["url"],
        ),
        UpdateView(
            id=update["id"],
            state=IncidentState(update["state"]),
            message=None,
            created_at=datetime.fromisoformat(update["created_at"]),
        ),
        person,
        company_name=settings.company_name,
        support_url=settings.support_url,
        sms_max_segments=settings.sms_max_segments,
    )
    adapter.send_one(
        Message(
            key=recipient["id"],
            to=recipient["to"],
            text=rendered.text,
            subject=rendered.subject,
            html=rendered.html,
            payload=rendered.payload,
            secret=recipient.get("secret"),
            unsubscribe_url=person.unsubscribe_url,
        )
    )
