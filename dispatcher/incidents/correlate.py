"""From monitoring alerts to incidents: deduplicate, group, reopen on flapping, hold resolves.

Monitors repeat themselves every few minutes and flap; customers must hear of a problem once, of
its end once, and of nothing in between that did not change. So the decision is made from each
alert's *change* of status (kept per alert in the `alerts` table), never from the payload alone:

- an alert group's first firing alert opens an incident (a draft unless the source may publish);
- the same payload again changes nothing and sends nothing (monitoring retries are idempotent);
- a new alert joining an open group adds an update and widens the incident;
- an alert's audience labels (`[ingest] audience_labels`: region, account, plan) scope its
  incident to the subscribers with those attributes; alerts of one group in several regions
  scope it to all of them, and one without the label to everyone (policy/scope.py `widened`);
- when every alert of the group has resolved, the incident is resolved only after the resolve
  has held for `resolve_hold_s` (the sweep announces it), so a blip does not page twice;
- a group that fires again within `flap_window_s` of its resolution reopens the same incident
  (and always, when the source says it is the same incident again: PagerDuty's "reopened").

Customers read what was written for them: a rule's `summary`, else the templates' own words; and
at the end "Checkout is working normally again", never a monitor's "200 - OK". The monitor's own
output and the link to it go to the team, as each update's internal note.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dispatcher.incidents import lifecycle
from dispatcher.incidents.lifecycle import Extras
from dispatcher.ingest.events import AlertEvent, AlertStatus
from dispatcher.models import IncidentIn, Scope, Severity
from dispatcher.policy.scope import widened
from dispatcher.settings import Settings
from dispatcher.store import Alert, Incident, Store, utcnow


def resolved_message(components: Sequence[str]) -> str:
    """What customers read when the monitoring says it is over, in the incident's own words:
    "Checkout is working normally again", "Checkout and payments are …"."""
    names = list(components) or ["the service"]
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    verb = "is" if len(names) == 1 else "are"
    return f"{listed[:1].upper()}{listed[1:]} {verb} working normally again."


@dataclass
class Correlated:
    """What one payload did: the incidents it touched and the updates to fan out."""

    incident_ids: list[int] = field(default_factory=list)
    update_ids: list[int] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.update_ids)


def ingest(store: Store, settings: Settings, events: Sequence[AlertEvent]) -> Correlated:
    """Apply a payload's events, one transaction per alert group."""
    result = Correlated()
    groups: dict[tuple[str, str], list[AlertEvent]] = {}
    for event in events:
        groups.setdefault((event.source, event.group_key), []).append(event)
    for (source, group_key), group_events in groups.items():
        with store.session() as session:
            incident_id, update_ids = _apply(session, settings, source, group_key, group_events)
        if incident_id is not None:
            result.incident_ids.append(incident_id)
        result.update_ids.extend(update_ids)
    return result


def settle(store: Store, settings: Settings) -> list[int]:
    """Resolve the incidents whose alerts have all stayed resolved for `resolve_hold_s`; the
    sweep calls this, so a held resolve is announced even if no monitor posts again."""
    cutoff = utcnow() - timedelta(seconds=settings.resolve_hold_s)
    update_ids: list[int] = []
    with store.session() as session:
        due = session.scalars(
            select(Incident)
            .where(
                Incident.resolve_pending_since.is_not(None),
                Incident.resolve_pending_since <= cutoff,
                Incident.resolved_at.is_(None),
            )
            .with_for_update(skip_locked=True)
        ).all()
        for incident in due:
            message = resolved_message(incident.components)
            update_ids.append(lifecycle.close(session, incident, message).update_id)
    return update_ids


@dataclass(frozen=True)
class _Changes:
    new_alerts: list[AlertEvent]  # never seen firing in this group before
    refiring: list[AlertEvent]  # known alerts that fire again
    all_resolved: bool  # no alert of the group is firing now


def _apply(
    session: Session, settings: Settings, source: str, group_key: str, events: list[AlertEvent]
) -> tuple[int | None, list[int]]:
    now = utcnow()
    changes = _record_alerts(session, source, group_key, events, now)
    incident = session.scalars(
        select(Incident)
        .where(Incident.source == source, Incident.source_key == group_key)
        .order_by(Incident.id.desc())
        .with_for_update()
    ).first()
    firing = [e for e in events if e.status is AlertStatus.FIRING]
    update_ids: list[int] = []

    if changes.new_alerts or changes.refiring:
        reopens = any(e.reopens for e in firing)
        if incident is None or (not reopens and _beyond_flap_window(incident, settings, now)):
            incident, update_id = _open(session, settings, source, group_key, firing)
            update_ids.append(update_id)
        elif incident.resolved_at is not None:
            message = f"The problem has returned. {_message(firing) or ''}".strip()
            reopened = lifecycle.reopen(session, incident, message, _rescoped(incident, firing))
            update_ids.append(reopened.update_id)
            incident.resolve_pending_since = None
        else:
            incident.resolve_pending_since = None  # a blip before the resolve was announced
            if changes.new_alerts:
                update_ids.append(_widen(session, incident, changes.new_alerts))
    elif changes.all_resolved and incident is not None and incident.resolved_at is None:
        if incident.resolve_pending_since is None:
            incident.resolve_pending_since = now
        if settings.resolve_hold_s == 0:
            message = _message(events) or resolved_message(incident.components)
            closed = lifecycle.close(session, incident, message, _for_the_team(events))
            update_ids.append(closed.update_id)

    if incident is not None:
        _link_alerts(session, source, group_key, incident.id)
    return (incident.id if incident else None), update_ids


def _record_alerts(
    session: Session, source: str, group_key: str, events: list[AlertEvent], now: datetime
) -> _Changes:
    known = {
        alert.alert_key: alert
        for alert in session.scalars(
            select(Alert)
            .where(Alert.source == source, Alert.group_key == group_key)
            .with_for_update()
        )
    }
    new_alerts: list[AlertEvent] = []
    refiring: list[AlertEvent] = []
    for event in events:
        firing = event.status is AlertStatus.FIRING
        alert = known.get(event.alert_key)
        if alert is None:
            alert = Alert(
                source=source,
                group_key=group_key,
                alert_key=event.alert_key,
                firing=firing,
                component=event.components[0],
                changed_at=now,
            )
            session.add(alert)
            known[event.alert_key] = alert
            if firing:
                new_alerts.append(event)
        elif alert.firing != firing:
            alert.firing = firing
            alert.changed_at = now
            if firing:
                refiring.append(event)
        alert.last_seen_at = now
    session.flush()
    return _Changes(new_alerts, refiring, all(not a.firing for a in known.values()))


def _beyond_flap_window(incident: Incident, settings: Settings, now: datetime) -> bool:
    resolved_at = incident.resolved_at
    return resolved_at is not None and now - resolved_at > timedelta(seconds=settings.flap_window_s)


def _open(
    session: Session, settings: Settings, source: str, group_key: str, firing: list[AlertEvent]
) -> tuple[Incident, int]:
    severity = max((e.severity for e in firing), key=lambda s: s.rank)
    data = IncidentIn(
        title=firing[0].title,
        severity=severity,
        components=list(dict.fromkeys(c for e in firing for c in e.components)),
        message=_message(firing),
        affects=_audience(firing),
    )
    posted = lifecycle.create(
        session,
        data,
        source=source,
        source_key=group_key,
        draft=not _may_publish(settings, source, severity),
        extras=_for_the_team(firing),
    )
    return session.get_one(Incident, posted.incident_id), posted.update_id


def _widen(session: Session, incident: Incident, new_alerts: list[AlertEvent]) -> int:
    """A new alert joined the group: more components, perhaps a higher severity, one update."""
    added = [c for e in new_alerts for c in e.components if c not in incident.components]
    incident.components = list(dict.fromkeys([*incident.components, *added]))
    top = max((e.severity for e in new_alerts), key=lambda s: s.rank)
    if top.rank > Severity(incident.severity).rank:
        incident.severity = top
    message = _message(new_alerts)
    if added:
        message = f"Also affecting {', '.join(added)}. {message or ''}".strip()
    extras = _rescoped(incident, new_alerts)
    return lifecycle.add_update(
        session, incident, incident.state, message, extras, actor=incident.source
    ).update_id


def _audience(events: Sequence[AlertEvent]) -> Scope:
    """Whom the alerts hit together: each key all of them carry, with the values of any."""
    scope: Scope | None = None
    for event in events:
        scope = dict(event.audience) if scope is None else widened(scope, event.audience)
    return scope or {}


def _rescoped(incident: Incident, events: Sequence[AlertEvent]) -> Extras:
    """The incident's scope widened to alerts that joined or fired again (never narrowed: a
    scope of everyone stays so)."""
    return replace(_for_the_team(events), scope=widened(incident.scope or {}, _audience(events)))


def _link_alerts(session: Session, source: str, group_key: str, incident_id: int) -> None:
    """The group's alerts belong to its current incident (a new one after the flap window)."""
    session.execute(
        update(Alert)
        .where(Alert.source == source, Alert.group_key == group_key)
        .values(incident_id=incident_id)
    )


def _may_publish(settings: Settings, source: str, severity: Severity) -> bool:
    threshold = settings.auto_publish.get(source)
    return threshold is not None and severity.at_least(threshold)


def _message(events: Sequence[AlertEvent]) -> str | None:
    return next((e.message for e in events if e.message), None)


def _for_the_team(events: Sequence[AlertEvent]) -> Extras:
    """The monitor's own words and where to see them, as the update's internal note."""
    lines = dict.fromkeys(
        " ".join(part for part in (e.detail, e.url) if part) for e in events if e.detail or e.url
    )
    return Extras(internal_note="\n".join(lines) or None)
