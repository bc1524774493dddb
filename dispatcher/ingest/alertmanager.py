"""Prometheus Alertmanager's webhook (payload version 4), and the parser Grafana shares.

Grafana's unified alerting embeds Alertmanager and sends the same envelope with a few fields
added, so both sources go through `events_from_webhook`; only the source name differs.

Alertmanager sends the whole group on every notification: alerts still firing, alerts that
resolved since the last one, and alerts that joined. Each alert's own `status` says which; the
top-level `status` is only "firing if any alert fires". `endsAt` is not a status either: it is the
zero time while firing and a time in the past once resolved, so it is kept out of the decision.

A resolved alert carries the same annotations as when it fired ("Probe failure: …"), so its
`summary` is not a message for customers that it is over: the correlation writes that one.

Followed: prometheus/alertmanager notify/webhook/webhook.go (`Message`) and template/template.go
(`Data`, `Alert`), including the fields added in v0.32 (`notification_reason`) and v0.34
(`routeLabels`), which are accepted and not used: every notification is judged by its alerts'
statuses, whatever made Alertmanager send it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from dispatcher.ingest.events import AlertEvent, AlertStatus, IngestMapping, Parsed

# prometheus/common model.LabelSet.Fingerprint: FNV-1a 64 over sorted name/value pairs.
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_SEPARATOR = b"\xff"


class WebhookAlert(BaseModel):
    """One alert of a notification group; unknown fields (Grafana adds several) are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    status: AlertStatus
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime = Field(alias="startsAt")
    ends_at: datetime | None = Field(default=None, alias="endsAt")  # never read: see module doc
    generator_url: str = Field(default="", alias="generatorURL")  # "" when the rule has none
    fingerprint: str = ""  # absent from very old Alertmanagers and hand-written senders


class AlertmanagerWebhook(BaseModel):
    """The body Alertmanager's `webhook_config` receiver POSTs (`version: "4"`)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    receiver: str = ""
    status: AlertStatus
    alerts: Sequence[WebhookAlert]
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL")
    version: str = ""
    group_key: str = Field(alias="groupKey", min_length=1)
    # Alerts beyond the receiver's `max_alerts` are dropped by the sender and never reach us.
    truncated_alerts: int = Field(default=0, alias="truncatedAlerts")
    # Why it was sent ("first notification", "repeat interval elapsed", …) and the route's own
    # labels: declared for the OpenAPI description, never read (see the module docstring).
    notification_reason: str = ""
    route_labels: dict[str, str] | None = Field(default=None, alias="routeLabels")


def labels_fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's own fingerprint of a label set, for alerts that arrive without one.

    Computing the same value (rather than any stable hash) means an alert keys identically
    whether or not its sender included `fingerprint`, so a payload lacking it cannot split one
    alert into two.
    """
    digest = _FNV_OFFSET
    for name in sorted(labels):  # code-point order is UTF-8 byte order, as Go sorts
        for byte in name.encode() + _SEPARATOR + labels[name].encode() + _SEPARATOR:
            digest = ((digest ^ byte) * _FNV_PRIME) & 0xFFFF_FFFF_FFFF_FFFF
    return f"{digest:016x}"


def events_from_webhook(
    webhook: AlertmanagerWebhook, mapping: IngestMapping, source: str
) -> list[AlertEvent]:
    """One event per alert of a validated Alertmanager-shaped payload.

    Group-wide labels and annotations fill in what an alert lacks (its own values win), so a
    mapping label set once on the route still applies to every alert in the group.
    """
    events = []
    for alert in webhook.alerts:
        labels = {**webhook.common_labels, **alert.labels}
        annotations = {**webhook.common_annotations, **alert.annotations}
        component = mapping.component(labels)
        firing = alert.status is AlertStatus.FIRING
        events.append(
            AlertEvent(
                source=source,
                group_key=webhook.group_key,
                alert_key=alert.fingerprint or labels_fingerprint(alert.labels),
                status=alert.status,
                title=mapping.title(component, annotations),
                severity=mapping.severity(labels),
                components=[component],
                message=mapping.message(annotations) if firing else None,
                started_at=alert.starts_at,
                url=alert.generator_url or None,
                audience=mapping.audience(labels),
            )
        )
    return events


def parse(payload: dict[str, object], mapping: IngestMapping) -> Parsed:
    """Validate an Alertmanager webhook body (raising pydantic.ValidationError) into events."""
    webhook = AlertmanagerWebhook.model_validate(payload)
    return Parsed(events_from_webhook(webhook, mapping, "alertmanager"))
