"""What every monitoring source is turned into: one AlertEvent per alert in a payload.

Sources differ in shape, not in meaning: each has groups (an Alertmanager group, a Grafana
notification group, an Uptime Kuma monitor, a generic key) made of alerts that fire and resolve.
The correlation step only ever sees these events, so adding a source is adding a parser.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from dispatcher.models import TEXT_MAX, TITLE_MAX, Component, Severity, Text, Title


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
    # Checked as an operator's incident is (blank text never reaches the public): a source
    # that sends a blank title or component is told so (422), naming the field.
    title: Title
    severity: Severity
    components: list[Component] = Field(min_length=1)
    message: Text | None = None
    started_at: datetime | None = None
    url: str | None = None  # where an operator sees the alert (generatorURL, dashboard)


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

    def component(self, labels: dict[str, str]) -> str:
        return _first(labels, self.component_labels) or self.default_component

    def severity(self, labels: dict[str, str]) -> Severity:
        value = labels.get(self.severity_label, "").strip().lower()
        return self.severity_map.get(value, self.default_severity)

    def message(self, annotations: dict[str, str]) -> str | None:
        found = _first(annotations, self.message_annotations)
        return found[:TEXT_MAX] if found else None

    def title(self, component: str, annotations: dict[str, str]) -> str:
        found = _first(annotations, self.title_annotations)
        return found[:TITLE_MAX] if found else f"Disruption affecting {component}"


def _first(values: dict[str, str], names: list[str]) -> str | None:
    """The first of `names` with a value that is not blank (a blank annotation or label is read
    as missing, so the fallback applies), stripped."""
    return next((values[n].strip() for n in names if (values.get(n) or "").strip()), None)
