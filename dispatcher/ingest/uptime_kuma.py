"""Uptime Kuma's webhook notification (server/notification-providers/webhook.js, JSON body).

The body is `{"heartbeat": Heartbeat.toJSON() | null, "monitor": Monitor.toJSON() | null,
"msg": str}`. A monitor is one check of one thing, so it is both the group and the alert: a DOWN
beat fires it, an UP beat resolves it. PENDING (retrying before declaring DOWN) is not yet an
outage, and MAINTENANCE is announced by operators themselves, so neither produces an event.

The "Test" button sends heartbeat and monitor as null with msg "<notification name> Testing";
that is accepted and does nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import IntEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from dispatcher.ingest.events import AlertEvent, AlertStatus, IngestMapping


class KumaStatus(IntEnum):
    """Heartbeat status codes (server/model/heartbeat.js)."""

    DOWN = 0
    UP = 1
    PENDING = 2
    MAINTENANCE = 3


_EVENT_STATUS = {KumaStatus.DOWN: AlertStatus.FIRING, KumaStatus.UP: AlertStatus.RESOLVED}
# Uptime Kuma replaces an empty heartbeat message with this before notifying.
_NO_MESSAGE = ("", "N/A")


def _as_utc(value: datetime) -> datetime:
    # Heartbeat times are stored as UTC (dayjs.utc()) and serialised without an offset.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


class KumaHeartbeat(BaseModel):
    """One check result; Uptime Kuma also adds timezone/localDateTime, ignored here."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    monitor_id: int = Field(alias="monitorID")
    status: KumaStatus
    time: UtcDatetime
    msg: str | None = None
    last_down_time: UtcDatetime | None = Field(default=None, alias="lastDownTime")  # on UP, 2.x


class KumaTag(BaseModel):
    """A tag on a monitor (server/model/monitor.js `getTags`): a name, and a value if set."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    value: str | None = None


class KumaMonitor(BaseModel):
    """The monitor a heartbeat belongs to: its identity and name, and its tags (which may say
    whom it hits: `region: eu-west`)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: int
    name: str = Field(min_length=1)
    type: str | None = None
    url: str | None = None
    hostname: str | None = None
    tags: list[KumaTag] = Field(default_factory=list)


class UptimeKumaWebhook(BaseModel):
    """The JSON body of an Uptime Kuma webhook notification."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    heartbeat: KumaHeartbeat | None
    monitor: KumaMonitor | None
    msg: str

    @field_validator("monitor")
    @classmethod
    def _monitor_with_heartbeat(
        cls, value: KumaMonitor | None, info: ValidationInfo
    ) -> KumaMonitor | None:
        """A heartbeat without its monitor cannot be keyed; only the test send has neither."""
        if value is None and info.data.get("heartbeat") is not None:
            raise ValueError("a heartbeat must come with its monitor")
        return value


def parse(payload: dict[str, object], mapping: IngestMapping) -> list[AlertEvent]:
    """Validate an Uptime Kuma webhook body (raising pydantic.ValidationError) into events.

    A monitor has no labels, so its name is the component and the mapping's default severity
    applies.
    """
    webhook = UptimeKumaWebhook.model_validate(payload)
    beat, monitor = webhook.heartbeat, webhook.monitor
    if beat is None or monitor is None or beat.status not in _EVENT_STATUS:
        return []
    status = _EVENT_STATUS[beat.status]
    component = monitor.name
    return [
        AlertEvent(
            source="uptime-kuma",
            group_key=str(monitor.id),
            alert_key=str(monitor.id),
            status=status,
            title=mapping.title(component, {}),
            severity=mapping.default_severity,
            components=[component],
            message=None if beat.msg in _NO_MESSAGE else beat.msg,
            # An UP beat's own time is the recovery; the outage began at the last DOWN, if sent.
            started_at=beat.time if status is AlertStatus.FIRING else beat.last_down_time,
            audience=mapping.audience({tag.name: tag.value or "" for tag in monitor.tags}),
        )
    ]
