"""Grafana unified alerting's webhook contact point (payload `version: "1"`).

Grafana runs an embedded Alertmanager, so the body is Alertmanager's envelope with extras
(`orgId`, a rendered `title`/`message`, per-alert `values` and links). Meaning is the same, so the
Alertmanager parser does the work; this module only declares the extra shape and the source name.

Grafana's "Test" button on a contact point sends a normal-looking firing alert (labels
`alertname=TestAlert`, `instance=Grafana`); it parses like any other.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from dispatcher.ingest.alertmanager import AlertmanagerWebhook, WebhookAlert, events_from_webhook
from dispatcher.ingest.events import AlertEvent, IngestMapping


class GrafanaAlert(WebhookAlert):
    """An Alertmanager alert plus the links and query values Grafana adds (for operators)."""

    values: dict[str, float | None] | None = None
    value_string: str = Field(default="", alias="valueString")
    silence_url: str = Field(default="", alias="silenceURL")
    dashboard_url: str = Field(default="", alias="dashboardURL")
    panel_url: str = Field(default="", alias="panelURL")


class GrafanaWebhook(AlertmanagerWebhook):
    """The body a Grafana webhook contact point POSTs."""

    alerts: Sequence[GrafanaAlert]
    org_id: int | None = Field(default=None, alias="orgId")
    title: str = ""  # rendered for humans, e.g. "[FIRING:2] (blue)"; not parsed
    state: str = ""  # "alerting" / "ok": a summary of the alerts' statuses, which are used instead
    message: str = ""


def parse(payload: dict[str, object], mapping: IngestMapping) -> list[AlertEvent]:
    """Validate a Grafana webhook body (raising pydantic.ValidationError) into events."""
    return events_from_webhook(GrafanaWebhook.model_validate(payload), mapping, "grafana")
