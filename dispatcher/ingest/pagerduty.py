"""PagerDuty's V3 webhooks: a webhook subscription's events, signed with its secret.

Followed: PagerDuty/developer-docs docs/webhooks/01-Overview.md (the envelope, the event types,
the `incident` data), 02-Behavior.md (retries, ordering, at-least-once) and 04-Signatures.md
(the signature); Aldaviva/PagerDuty Tests/Webhooks/WebhookResourceTests.cs for bodies PagerDuty
sent, its `pagey.ping` test event among them.

A body is one event, `{"event": {"id", "event_type", "resource_type", "occurred_at", "agent",
"client", "data"}}`, and a PagerDuty incident is both a group and its one alert here:

- `incident.triggered` fires it: a draft opens, or it is published per `[auto_publish]`;
- `incident.resolved` resolves it;
- `incident.reopened` fires it again and reopens ours, however long ago it was resolved;
- acknowledged, escalated and every other event type are the responders' business: accepted,
  nothing said to anyone. Every event type is answered 2xx, since PagerDuty drops a webhook
  answered 4xx and disables a subscription that drops three: a new type must not be refused;
- `pagey.ping` ("Send test event" on the subscription) is recorded as the source's test.

Only incidents of a service listed in `[ingest] pagerduty_services` concern customers; the
others are internal services' and are accepted silently. An incident's title is the
responders' words ("CRITICAL: disk full on db-3"): the team reads it in the internal note,
customers a title made from the component. The severity comes from the incident's priority
when `[ingest] severity_map` knows it (add `p1 = "critical"`), else from its urgency
(`pagerduty_urgency`). Deliveries are at least once and in order per incident, so a duplicate
arrives before the next event and changes nothing.

The signature: `X-PagerDuty-Signature: v1=<hex HMAC-SHA256 of the raw body>`, one `v1=` per
signing secret while a secret rotates; the body is PagerDuty's if any of them matches any of
ours (PAGERDUTY_WEBHOOK_SECRET, comma-separated while rotating).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from dispatcher.ingest.events import AlertEvent, AlertStatus, IngestMapping, Parsed
from dispatcher.models import Severity

SIGNATURE_HEADER = "x-pagerduty-signature"
SIGNATURE_VERSION = "v1="
TEST_EVENT = "pagey.ping"
ACTIONS = {
    "incident.triggered": AlertStatus.FIRING,
    "incident.reopened": AlertStatus.FIRING,
    "incident.resolved": AlertStatus.RESOLVED,
}


class Reference(BaseModel):
    """A PagerDuty resource reference (`service_reference`, `priority_reference`, …)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(min_length=1)
    summary: str | None = None


class PagerDutyIncident(BaseModel):
    """`event.data` of the incident events: the incident as it is after the event."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(min_length=1, max_length=200)
    number: int | None = None
    title: str = ""
    status: str = ""
    html_url: str | None = None
    service: Reference
    urgency: str = ""
    priority: Reference | None = None
    created_at: datetime | None = None


def _data_kind(value: Any) -> str:
    return "incident" if isinstance(value, dict) and value.get("type") == "incident" else "other"


# An incident for the incident events, anything else (a note, a service, the ping) as it came.
EventData = Annotated[
    Annotated[PagerDutyIncident, Tag("incident")] | Annotated[dict[str, Any], Tag("other")],
    Discriminator(_data_kind),
]


class PagerDutyEvent(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(min_length=1)
    event_type: str = Field(min_length=1)
    resource_type: str = ""
    occurred_at: datetime | None = None
    data: EventData | None = None

    @model_validator(mode="after")
    def _incident_when_acted_on(self) -> PagerDutyEvent:
        if self.event_type in ACTIONS and not isinstance(self.data, PagerDutyIncident):
            raise ValueError(f'{self.event_type} needs an incident in data (type "incident")')
        return self


class PagerDutyWebhook(BaseModel):
    """The body a PagerDuty V3 webhook subscription POSTs."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event: PagerDutyEvent


def signing_secrets(configured: str) -> list[str]:
    """The secrets in PAGERDUTY_WEBHOOK_SECRET: one, or several comma-separated while rotating."""
    return [secret.strip() for secret in configured.split(",") if secret.strip()]


def signed(secrets: Sequence[str], header: str | None, body: bytes) -> bool:
    """Whether one of the header's `v1=` signatures is ours over this exact body."""
    presented = [
        part.strip().removeprefix(SIGNATURE_VERSION).lower().encode()
        for part in (header or "").split(",")
        if part.strip().startswith(SIGNATURE_VERSION)
    ]
    expected = [hmac.new(s.encode(), body, hashlib.sha256).hexdigest().encode() for s in secrets]
    return any(hmac.compare_digest(p, e) for p in presented for e in expected)


def _severity(incident: PagerDutyIncident, mapping: IngestMapping) -> Severity:
    priority = (incident.priority.summary or "") if incident.priority else ""
    if priority.strip().lower() in mapping.severity_map:
        return mapping.severity_of(priority)
    return mapping.pagerduty_urgency.get(incident.urgency.strip().lower(), mapping.default_severity)


def parse(payload: dict[str, object], mapping: IngestMapping) -> Parsed:
    """Validate a PagerDuty V3 webhook body (raising pydantic.ValidationError) into events."""
    event = PagerDutyWebhook.model_validate(payload).event
    if event.event_type == TEST_EVENT:
        return Parsed(test=True)
    status = ACTIONS.get(event.event_type)
    incident = event.data
    if status is None or not isinstance(incident, PagerDutyIncident):
        return Parsed()
    component = mapping.pagerduty_services.get(incident.service.id)
    if component is None:
        return Parsed()
    number = f" #{incident.number}" if incident.number is not None else ""
    verb = event.event_type.removeprefix("incident.")
    return Parsed(
        [
            AlertEvent(
                source="pagerduty",
                group_key=incident.id,
                alert_key=incident.id,
                status=status,
                title=mapping.title(component, {}),
                severity=_severity(incident, mapping),
                components=[component],
                detail=f"PagerDuty incident{number} {verb}: {incident.title}".strip(": "),
                started_at=incident.created_at,
                url=incident.html_url,
                reopens=event.event_type == "incident.reopened",
            )
        ]
    )
