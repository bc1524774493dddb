"""Our own documented JSON format, for senders that are not Alertmanager, Grafana or Uptime Kuma.

It already speaks our vocabulary (components, severity), so no mapping applies. Because we define
it, unknown fields are rejected: a misspelt `mesage` is an error the sender sees at once, not a
silently missing message.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dispatcher.ingest.events import AlertEvent, AlertStatus, IngestMapping, Parsed
from dispatcher.models import Scope, Severity, clean_scope


class GenericAlert(BaseModel):
    """One alert in the generic format; `source` + `key` identify it across updates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(pattern=r"^[a-z0-9_-]{1,64}$")  # names the sending system
    key: str = Field(min_length=1, max_length=500)
    status: AlertStatus
    title: str = Field(min_length=1, max_length=200)
    severity: Severity
    components: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    message: str | None = None
    url: str | None = None
    # Whom it hits, by subscriber attribute: {"region": "eu-west"} or {"region": ["a", "b"]}.
    affects: Scope = Field(default_factory=dict)

    @field_validator("affects", mode="before")
    @classmethod
    def _affects(cls, value: object) -> Scope:
        if not isinstance(value, dict):
            raise ValueError("affects is an object of key: value or [values]")
        return clean_scope(value)


def parse(payload: dict[str, object], mapping: IngestMapping) -> Parsed:
    """Validate a generic alert (raising pydantic.ValidationError) into its one event.

    `mapping` is accepted for the common parser signature and unused. The sender's name prefixes
    the group key so two systems using the same `key` never share an incident.
    """
    alert = GenericAlert.model_validate(payload)
    return Parsed(
        [
            AlertEvent(
                source="generic",
                group_key=f"{alert.source}:{alert.key}",
                alert_key=alert.key,
                status=alert.status,
                title=alert.title,
                severity=alert.severity,
                components=alert.components,
                message=alert.message,
                url=alert.url,
                audience=alert.affects,
            )
        ]
    )
