"""What every monitoring source is turned into: one AlertEvent per alert in a payload.

Sources differ in shape, not in meaning: each has groups (an Alertmanager group, a Grafana
notification group, an Uptime Kuma monitor, a PagerDuty incident, a generic key) made of alerts
that fire and resolve. The correlation step only ever sees these events, so adding a source is
adding a parser.

Two kinds of words travel with an event and never mix: `message` is written for customers (a
rule author's `summary`), `detail` is the monitor's own output ("connect ECONNREFUSED
10.0.3.7:443", "200 - OK"), which only the team sees, as the update's internal note.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from dispatcher.models import TEXT_MAX, TITLE_MAX, Component, Severity, Text, Title, slug

log = logging.getLogger(__name__)

DETAIL_MAX_CHARS = 1000  # a monitor's output is kept for the team, never at any length


class AlertStatus(StrEnum):
    FIRING = "firing"  # the condition holds: something is broken
    RESOLVED = "resolved"  # the condition cleared


def _clip(text: str | None) -> str | None:
    return text[:DETAIL_MAX_CHARS] if text else None


class AlertEvent(BaseModel):
    """One alert's status as a source reported it, mapped to our vocabulary."""

    model_config = ConfigDict(frozen=True)

    source: str  # "alertmanager", "grafana", "uptime-kuma", "pagerduty", "generic"
    group_key: str  # alerts with the same group key belong to one incident
    alert_key: str  # one alert within the group (fingerprint, monitor id, key)
    status: AlertStatus
    # Checked as an operator's incident is (blank text never reaches the public): a source
    # that sends a blank title or component is told so (422), naming the field.
    title: Title
    severity: Severity
    components: list[Component] = Field(min_length=1)
    message: Text | None = None  # for customers; None lets the templates speak
    detail: Annotated[str | None, AfterValidator(_clip)] = None  # for the team only
    started_at: datetime | None = None
    url: str | None = None  # where an operator sees the alert (generatorURL, dashboard)
    # The source itself says this is the same incident again (PagerDuty's "reopened"), so it
    # reopens ours however long ago it resolved, rather than opening a new one.
    reopens: bool = False
    # Whom it hits, by subscriber attribute (`[ingest] audience_labels`): {"region": ["eu-west"]};
    # empty: everyone its components concern.
    audience: dict[str, list[str]] = Field(default_factory=dict)


@dataclass(frozen=True)
class Parsed:
    """What a payload holds: its alerts' events, or the sender's own test, or a notice.

    A test (Grafana's "Test" button, Uptime Kuma's, PagerDuty's ping) is recorded and answered
    2xx, so the sender shows it passed; a notice is a warning about no alert (Uptime Kuma's
    certificate expiry), for the team's log. Neither becomes an incident."""

    events: Sequence[AlertEvent] = ()
    test: bool = False
    notice: str | None = None


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
    # PagerDuty service id (as in its URL, /services/PF9KMXH) -> our component. A service not
    # listed is an internal one: its incidents are accepted and tell nobody.
    pagerduty_services: dict[str, str] = {}
    # A PagerDuty incident's urgency, when its priority (looked up in `severity_map`, e.g.
    # "p1") says nothing.
    pagerduty_urgency: dict[str, Severity] = {"high": Severity.MAJOR, "low": Severity.MINOR}
    # Labels naming whom an alert hits (region, account, plan): its incident is told only to the
    # subscribers with those attributes. None listed: every incident reaches everyone it concerns.
    audience_labels: list[str] = []

    def component(self, labels: dict[str, str]) -> str:
        return _first(labels, self.component_labels) or self.default_component

    def severity(self, labels: dict[str, str]) -> Severity:
        return self.severity_of(labels.get(self.severity_label, ""))

    def severity_of(self, value: str) -> Severity:
        """A severity word as a source spells it ("Critical", "P1"), case-insensitively."""
        return self.severity_map.get(value.strip().lower(), self.default_severity)

    def message(self, annotations: dict[str, str]) -> str | None:
        found = _first(annotations, self.message_annotations)
        return found[:TEXT_MAX] if found else None

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
        found = _first(annotations, self.title_annotations)
        return found[:TITLE_MAX] if found else f"Disruption affecting {component}"


def _first(values: dict[str, str], names: list[str]) -> str | None:
    """The first of `names` with a value that is not blank (a blank annotation or label is read
    as missing, so the fallback applies), stripped."""
    return next((values[n].strip() for n in names if (values.get(n) or "").strip()), None)
