"""Never flood a person: which updates each channel carries, and when a message may go.

Three rules, applied when an update is fanned out (and completed at send time, where a queued
message for an older update is dropped once a newer one exists for the same person):

- **cadence per channel**: SMS carries an incident's opening and its end, email every update,
  the public post every change of state (configurable), so a pocket does not buzz for "still
  investigating";
- **coalescing**: a second message about the same incident within `coalesce_window_s` of the
  last one *sent* to that person waits for the window to end; whatever is newest then is sent,
  once (a digest of the latest state). A message still queued does not start a window: counted
  from it, a person told nothing yet would wait for a message that never went;
- **hourly cap** per person and channel, and **quiet hours**: non-critical messages wait, and
  are folded into one when they end.

What is never held: a resolution goes to everyone at once (neither coalescing nor the cap hold
it; only quiet hours, for a non-critical incident), a critical incident is held by none of the
three, and the team (internal subscribers: drafts to approve, reminders of promises, internal
notes) is never held by coalescing or the cap, since a late draft or reminder defeats its point.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dispatcher.models import (
    Audience,
    Cadence,
    DeliveryStatus,
    Severity,
    UpdateKind,
    WaitReason,
)
from dispatcher.policy.quiet_hours import may_send_at
from dispatcher.store import Delivery, Incident, Update

CARRIED: dict[Cadence, frozenset[UpdateKind]] = {
    Cadence.EVERY_UPDATE: frozenset(UpdateKind),
    Cadence.STATE_CHANGES: frozenset(
        {UpdateKind.OPENED, UpdateKind.STATE_CHANGE, UpdateKind.RESOLVED}
    ),
    Cadence.OPEN_AND_RESOLVE: frozenset({UpdateKind.OPENED, UpdateKind.RESOLVED}),
}

# What counts as told: handed to the provider.
COUNTED_STATUSES = (DeliveryStatus.SENT, DeliveryStatus.DELIVERED, DeliveryStatus.SENDING)


def update_kind(session: Session, update: Update) -> UpdateKind:
    """What the update is to its readers. An end (resolved, a maintenance called off) is
    RESOLVED; news that changes what people were told (a maintenance moved: Audience.TOLD) is
    carried, and exempt from coalescing, like an opening."""
    if not update.state.is_open:
        return UpdateKind.RESOLVED
    if update.audience is Audience.TOLD:
        return UpdateKind.OPENED
    previous = session.scalars(
        select(Update.state)
        .where(Update.incident_id == update.incident_id, Update.id < update.id)
        .order_by(Update.id.desc())
        .limit(1)
    ).first()
    if previous is None or not previous.is_open:
        return UpdateKind.OPENED
    return UpdateKind.SAME_STATE if previous == update.state else UpdateKind.STATE_CHANGE


def carries(cadence: Mapping[str, Cadence], channel: str, kind: UpdateKind) -> bool:
    return kind in CARRIED[cadence.get(channel, Cadence.EVERY_UPDATE)]


@dataclass(frozen=True)
class Pacing:
    """What is already known about the people an update goes to, loaded once per fan-out with
    two aggregate queries rather than one per subscriber."""

    now: datetime
    severity: Severity
    kind: UpdateKind
    coalesce_window: timedelta
    hourly_cap: int
    last_told: dict[str, datetime]  # recipient -> last message sent about this incident
    sent_last_hour: dict[tuple[str, str], tuple[int, datetime]]  # (recipient, channel) -> n, first

    @classmethod
    def load(
        cls,
        session: Session,
        incident: Incident,
        kind: UpdateKind,
        *,
        now: datetime,
        coalesce_window_s: float,
        hourly_cap: int,
    ) -> Pacing:
        last_told: dict[str, datetime] = {
            recipient: last
            for recipient, last in session.execute(
                select(Delivery.recipient, func.max(Delivery.sent_at))
                .join(Update, Delivery.update_id == Update.id)
                .where(
                    Update.incident_id == incident.id,
                    Delivery.status.in_(COUNTED_STATUSES),
                    Delivery.sent_at.is_not(None),
                )
                .group_by(Delivery.recipient)
            )
            if last is not None
        }
        hour_ago = now - timedelta(hours=1)
        sent_last_hour = {
            (recipient, channel): (count, first or now)
            for recipient, channel, count, first in session.execute(
                select(
                    Delivery.recipient,
                    Delivery.channel,
                    func.count(),
                    func.min(Delivery.sent_at),
                )
                .where(Delivery.sent_at >= hour_ago, Delivery.status.in_(COUNTED_STATUSES))
                .group_by(Delivery.recipient, Delivery.channel)
            ).all()
        }
        return cls(
            now=now,
            severity=Severity(incident.severity),
            kind=kind,
            coalesce_window=timedelta(seconds=coalesce_window_s),
            hourly_cap=hourly_cap,
            last_told=last_told,
            sent_last_hour=sent_last_hour,
        )

    def due_at(
        self,
        recipient: str,
        channel: str,
        quiet_start: str | None,
        quiet_end: str | None,
        timezone: str,
        *,
        internal: bool = False,
    ) -> tuple[datetime, WaitReason | None]:
        """The earliest moment this message may go to this person on this channel, and the
        rule that holds it until then (None: it may go now)."""
        due, reason = self.now, None
        paced = not internal and self.kind is not UpdateKind.RESOLVED
        last = self.last_told.get(recipient)
        coalesced = paced and last is not None and self.kind is not UpdateKind.OPENED
        if coalesced and last is not None and last + self.coalesce_window > due:
            due, reason = last + self.coalesce_window, WaitReason.COALESCING
        count, first = self.sent_last_hour.get((recipient, channel), (0, self.now))
        capped = paced and self.severity is not Severity.CRITICAL and count >= self.hourly_cap
        if capped and first + timedelta(hours=1) > due:
            due, reason = first + timedelta(hours=1), WaitReason.HOURLY_CAP
        quiet = may_send_at(quiet_start, quiet_end, timezone, due, self.severity)
        if quiet > due:
            return quiet, WaitReason.QUIET_HOURS
        return due, reason
