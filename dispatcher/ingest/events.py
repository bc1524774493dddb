"""What every monitoring source is turned into: one AlertEvent per alert in a payload.

Sources differ in shape, not in meaning: each has groups (an Alertmanager group, a Grafana
notification group, an Uptime Kuma monitor, a generic key) made of alerts that fire and resolve.
The correlation step only ever sees these events, so adding a source is adding a parser.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from dispatcher.models import Severity, slug

log = logging.getLogger(__name__)


class AlertStatus(StrEnum):
    FIRING = "firing"  # the condition holds: something is broken
    RESOLVED = "resolved"  # the condition cleared


class AlertEvent(BaseModel):
    """One alert's status as a source reported it, mapped to our vocabulary."""

    model_config = ConfigDict(frozen=True)

    source: str  # "alertmanager", "grafana", "uptime-kuma", "generic"
    group_key: str  # alerts with the same group key belong to one incident
    alert_key: str  # one alert within the group (fingerprint, monitor id, key)
    status: AlertStatus
    title: str = Field(min_length=1, max_length=200)
    severity: Severity
    components: list[str] = Field(min_length=1)
    message: str | None = None
    started_at: datetime | None = None
    url: str | None = None  # where an operator sees the alert (generatorURL, dashboard)
    # Whom it hits, by subscriber attribute (`[ingest] audience_labels`): {"region": ["eu-west"]};
    # empty: everyone its components concern.
    audience: dict[str, list[str]] = Field(default_factory=dict)


class IngestMapping(BaseModel):
    """How labels and annotations map onto incidents; `[ingest]` in config/outage.toml."""

    component_labels: list[str] = ["component", "service"]
    default_component: str = "general"
    severity_label: str = "severity"
    severity_map: dict[str, Severity] = {
        "critical": Severity.CRITICAL,
        "page": Severity.CRITICAL,
        "error": Severity.MAJOR,
        "warning": Severity.MAJOR,
        "info": Severity.MINOR,
        "none": Severity.MINOR,
    }
    default_severity: Severity = Severity.MAJOR
    message_annotations: list[str] = ["summary", "description", "message"]
    # Alert names are internal jargon ("HighErrorRate"): customers see a title annotation written
    # for them, else a plain one built from the component.
    title_annotations: list[str] = ["customer_title", "title"]
    # Labels naming whom an alert hits (region, account, plan): its incident is told only to the
    # subscribers with those attributes. None listed: every incident reaches everyone it concerns.
    audience_labels: list[str] = []

    def component(self, labels: dict[str, str]) -> str:
        return next(
            (labels[name] for name in self.component_labels if labels.get(name)),
            self.default_component,
        )

    def severity(self, labels: dict[str, str]) -> Severity:
        value = labels.get(self.severity_label, "").strip().lower()
        return self.severity_map.get(value, self.default_severity)

    def message(self, annotations: dict[str, str]) -> str | None:
        return next((annotations[n] for n in self.message_annotations if annotations.get(n)), None)

    def audience(self, labels: Mapping[str, str]) -> dict[str, list[str]]:
        """The audience labels an alert carries, as attribute slugs. A value that is no slug is
        left out (and logged): the alert then reaches everyone, since in doubt we tell."""
        found: dict[str, list[str]] = {}
        for name in self.audience_labels:
            value = labels.get(name)
            if not value:
                continue
            try:
                found[slug(name, "label")] = [slug(value, name)]
            except ValueError as exc:
                log.warning("audience label ignored: %s", exc)
        return found

    def title(self, component: str, annotations: dict[str, str]) -> str:
        for name in self.title_annotations:
            if annotations.get(name):
                return annotations[name][:200]
        return f"Disruption affecting {component}"
