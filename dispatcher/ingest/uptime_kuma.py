"""Uptime Kuma's webhook notification, 1.23 and 2.x alike.

Followed: louislam/uptime-kuma server/notification-providers/webhook.js (the body and its three
modes), server/model/monitor.js (`sendNotification`, `toJSON`, the certificate warning),
server/model/heartbeat.js (`toJSON`), server/model/domain_expiry.js (the domain warning) and
server/server.js (`testNotification`), at 1.23.17 and at 2.x.

The body is `{"heartbeat": Heartbeat.toJSON() | null, "monitor": Monitor.toJSON() | null,
"msg": str}`; the web layer reads it from each mode (JSON, form-data, GET) into that one dict.
A monitor is one check of one thing, so it is both the group and the alert: a DOWN beat fires
it, an UP beat resolves it. PENDING (retrying before declaring DOWN) is not yet an outage, and
MAINTENANCE is announced by operators themselves, so neither produces an event. A monitor still
down is re-sent every `resendInterval` beats: the same DOWN again, which changes nothing.

A monitor has no labels; its tags play their part. A tag named as one of `[ingest]
component_labels` (`service: checkout`) names the component (several values, several
components), else the monitor's name does; a `severity` tag sets the severity. Tag names are
typed by people in a form, so they match without regard to case.

Only the monitor's checker wrote `msg` ("Request failed with status code 503", "200 - OK"), so
it is the team's detail, never a customer's message.

Without a monitor come only the "Test" button (msg "<notification name> Testing") and the
certificate and domain expiry warnings ("… will expire in 7 days"): the test is recorded, a
warning is passed on to the team's log; neither is an incident.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import IntEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from dispatcher.ingest.events import AlertEvent, AlertStatus, IngestMapping, Parsed


class KumaStatus(IntEnum):
    """Heartbeat status codes (server/model/heartbeat.js)."""

    DOWN = 0
    UP = 1
    PENDING = 2
    MAINTENANCE = 3


_EVENT_STATUS = {KumaStatus.DOWN: AlertStatus.FIRING, KumaStatus.UP: AlertStatus.RESOLVED}
# server.js `testNotification`: `notification.name + " Testing"`.
_TEST_SUFFIX = "Testing"


def _as_utc(value: datetime) -> datetime:
    # Heartbeat times are stored as UTC (dayjs.utc()) and serialised without an offset.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


class KumaHeartbeat(BaseModel):
    """One check result. Only what is read is declared: 2.x adds `retries` and `response` (the
    checked service's own answer), 1.23 sends `important` as 0/1 or a boolean, and both add the
    server's timezone and local time; none of it decides anything here."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    monitor_id: int = Field(alias="monitorID")
    status: KumaStatus
    time: UtcDatetime
    last_down_time: UtcDatetime | None = Field(default=None, alias="lastDownTime")  # on UP, 2.1+


class KumaTag(BaseModel):
    """A tag on a monitor: `{tag_id, monitor_id, name, value, color}` (1.23 adds `id`)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    value: str | None = None  # a tag may be set without a value


class KumaMonitor(BaseModel):
    """The monitor a heartbeat belongs to: its identity, name and tags (of its ~70 fields; a tag
    may say whom it hits: `region: eu-west`)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: int
    name: str = Field(min_length=1)
    tags: list[KumaTag] | None = None

    def tag_values(self, names: list[str]) -> list[str]:
        """The values of the first of `names` the monitor has a tag of, in the monitor's order."""
        for wanted in names:
            values = [
                (tag.value or "").strip()
                for tag in self.tags or []
                if tag.name.strip().casefold() == wanted.casefold()
            ]
            if found := list(dict.fromkeys(value for value in values if value)):
                return found
        return []


class UptimeKumaWebhook(BaseModel):
    """The body of an Uptime Kuma webhook notification."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    heartbeat: KumaHeartbeat | None
    monitor: KumaMonitor | None
    msg: str

    @field_validator("monitor")
    @classmethod
    def _monitor_with_heartbeat(
        cls, value: KumaMonitor | None, info: ValidationInfo
    ) -> KumaMonitor | None:
        """A heartbeat without its monitor cannot be keyed; only a test or a warning has neither."""
        if value is None and info.data.get("heartbeat") is not None:
            raise ValueError("a heartbeat must come with its monitor")
        return value


def parse(payload: dict[str, object], mapping: IngestMapping) -> Parsed:
    """Validate an Uptime Kuma webhook body (raising pydantic.ValidationError) into events."""
    webhook = UptimeKumaWebhook.model_validate(payload)
    beat, monitor = webhook.heartbeat, webhook.monitor
    if beat is None or monitor is None:
        if webhook.msg.endswith(_TEST_SUFFIX):
            return Parsed(test=True)
        return Parsed(notice=webhook.msg)
    if beat.status not in _EVENT_STATUS:
        return Parsed()
    status = _EVENT_STATUS[beat.status]
    components = monitor.tag_values(mapping.component_labels) or [monitor.name]
    severities = monitor.tag_values([mapping.severity_label])
    event = AlertEvent(
        source="uptime-kuma",
        group_key=str(monitor.id),
        alert_key=str(monitor.id),
        status=status,
        title=mapping.title(", ".join(components), {}),
        severity=mapping.severity_of(severities[0]) if severities else mapping.default_severity,
        components=components,
        detail=webhook.msg,
        # A DOWN beat's own time is the outage's start; an UP beat's is the recovery, and the
        # outage began at the last DOWN, when Uptime Kuma sends it.
        started_at=beat.time if status is AlertStatus.FIRING else beat.last_down_time,
        audience=mapping.audience({tag.name: tag.value or "" for tag in monitor.tags or []}),
    )
    return Parsed([event])
