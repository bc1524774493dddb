"""Grafana unified alerting's webhook contact point (payload `version: "1"`).

Grafana runs an embedded Alertmanager, so the body is Alertmanager's envelope with extras
(`orgId`, a rendered `title`/`message`, per-alert `ruleUID`, `values` and links). Meaning is the
same, so the Alertmanager parser does the work; this module declares the extra shape, the source
name, and tells the contact point's "Test" button from an alert. A repeat after
`repeat_interval` differs only in `values`, which are for operators and never read.

Followed: grafana/alerting receivers/webhook/v1/webhook.go (`webhookMessage`),
templates/template_data.go (`ExtendedData`, `ExtendedAlert`), notify/receivers.go
(`newTestAlert`) and notify/test_receivers.go (`TestNotifier`).

**The "Test" button** sends one alert made by `newTestAlert` (labels `alertname=TestAlert`,
`instance=Grafana`, annotation `summary="Notification test"`; the "Custom" variant merges the
user's own labels and annotations over those) under a group key that no real notification
has, since Grafana makes every press a group of its own:

- since October 2025: `webhook-<fingerprint>-<unix time>`, with `receiver: "webhook"`;
- October 2023 to October 2025: `<contact point name>-<fingerprint>-<unix time>`, with
  `receiver` the contact point's name;
- August 2021 to October 2023: the labels as Go prints them, then the time as Go prints it
  (`{alertname="TestAlert", instance="Grafana"}2023-10-16 09:14:17.12 +0000 UTC m=+1.23`).

A real group's key is its route's followed by its group labels (`{}:{alertname="…",
grafana_folder="…"}`), so the key tells a test from an alert whatever labels the user chose
(an alert rule may well be called TestAlert).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

from pydantic import Field

from dispatcher.ingest.alertmanager import (
    AlertmanagerWebhook,
    WebhookAlert,
    events_from_webhook,
    labels_fingerprint,
)
from dispatcher.ingest.events import IngestMapping, Parsed

# `<name>-<fingerprint>-<unix time>`: the name is the integration's type or the contact point's.
_TEST_KEY = re.compile(r".+-(?P<fingerprint>[0-9a-f]{16})-\d+")
# Go's time.Time.String(), as the oldest form appends it: "2023-10-16 09:14:17.12 +0000 UTC".
_GO_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d+)? [+-]\d{4} ")


class GrafanaAlert(WebhookAlert):
    """An Alertmanager alert plus the links and query values Grafana adds (for operators)."""

    values: dict[str, float | None] | None = None  # null for the test alert
    value_string: str = Field(default="", alias="valueString")
    silence_url: str = Field(default="", alias="silenceURL")
    dashboard_url: str = Field(default="", alias="dashboardURL")
    panel_url: str = Field(default="", alias="panelURL")
    image_url: str = Field(default="", alias="imageURL")
    rule_uid: str = Field(default="", alias="ruleUID")


class GrafanaWebhook(AlertmanagerWebhook):
    """The body a Grafana webhook contact point POSTs."""

    alerts: Sequence[GrafanaAlert]
    org_id: int | None = Field(default=None, alias="orgId")
    title: str = ""  # rendered for humans, e.g. "[FIRING:2] (blue)"; not parsed
    state: str = ""  # "alerting" / "ok": a summary of the alerts' statuses, which are used instead
    message: str = ""


def _go_label_set(labels: Mapping[str, str]) -> str:
    """A label set as Go's `model.LabelSet.String()` prints it: sorted, values quoted."""
    pairs = (f"{name}={json.dumps(labels[name], ensure_ascii=False)}" for name in sorted(labels))
    return "{" + ", ".join(pairs) + "}"


def is_test(webhook: GrafanaWebhook) -> bool:
    """Whether this is the contact point's "Test" button (see the module docstring)."""
    if len(webhook.alerts) != 1:
        return False
    alert = webhook.alerts[0]
    key = webhook.group_key
    keyed = _TEST_KEY.fullmatch(key)
    if keyed is not None:
        return keyed["fingerprint"] == (alert.fingerprint or labels_fingerprint(alert.labels))
    printed = _go_label_set(alert.labels)
    return key.startswith(printed) and _GO_TIME.match(key, len(printed)) is not None


def parse(payload: dict[str, object], mapping: IngestMapping) -> Parsed:
    """Validate a Grafana webhook body (raising pydantic.ValidationError) into events; a test
    press into none."""
    webhook = GrafanaWebhook.model_validate(payload)
    if is_test(webhook):
        return Parsed(test=True)
    return Parsed(events_from_webhook(webhook, mapping, "grafana"))
