"""What the public sees: component states, open incidents, maintenance, 90 days of history, feed.

The status page, its Atom feed and `/api/status` all read through these functions, so the three
cannot disagree and none of them can leak what is not public. Three rules hold for every query:

- a **draft** (opened by a machine, not yet approved) is never returned, nor are its updates;
- a **private** incident (scoped to some subscribers, not made public) is returned only to a
  subscriber's private page, which names the ones it may show (`visible`,
  dispatcher/incidents/private.py);
- an update's **internal note** is never loaded into a public shape (`PublicUpdate` has no field
  for it), so no template or serializer can show it by mistake.

Costs, in database round trips: `snapshot` 2 (the incidents of the window with the updates of the
open ones, in one outer join; the component names of older incidents), `incident` 1, `feed` 1.
Everything else (states, day buckets) is computed in Python over those rows: at most a few hundred
incidents in 90 days, so a page costs milliseconds, and a deployment expecting its status page to
be hammered during an outage can put a short-lived cache in front (responses say `max-age`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Final

from sqlalchemy import ColumnElement, and_, or_, select

from dispatcher.models import IncidentState, Severity
from dispatcher.settings import Settings
from dispatcher.store import MAX_ID, Incident, Store, Update, utcnow

HISTORY_DAYS: Final = 90
CLOSED: Final = tuple(state for state in IncidentState if not state.is_open)  # over, called off
FEED_ENTRIES: Final = 50  # an Atom reader polls; it needs the recent updates, not all of them


class Level(StrEnum):
    """How a component is, now or on a day of its history; ordered from best to worst."""

    OPERATIONAL = "operational"  # nothing known to be wrong
    MAINTENANCE = "maintenance"  # a planned maintenance window is on
    DEGRADED = "degraded"  # a minor incident: slower, occasional errors
    PARTIAL_OUTAGE = "partial_outage"  # a major incident: a feature is down for many
    MAJOR_OUTAGE = "major_outage"  # a critical incident: the service is down

    @property
    def rank(self) -> int:
        return list(Level).index(self)

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS: Final = {
    Level.OPERATIONAL: "Operational",
    Level.MAINTENANCE: "Under maintenance",
    Level.DEGRADED: "Degraded performance",
    Level.PARTIAL_OUTAGE: "Partial outage",
    Level.MAJOR_OUTAGE: "Major outage",
}
_SEVERITY_LEVEL: Final = {
    Severity.MINOR: Level.DEGRADED,
    Severity.MAJOR: Level.PARTIAL_OUTAGE,
    Severity.CRITICAL: Level.MAJOR_OUTAGE,
}


def worst(levels: Iterable[Level]) -> Level:
    return max(levels, key=lambda level: level.rank, default=Level.OPERATIONAL)


@dataclass(frozen=True)
class PublicUpdate:
    """An update as the public sees it: no internal note, by construction."""

    id: int
    incident_id: int
    state: IncidentState
    message: str | None
    created_at: datetime
    next_update_at: datetime | None


@dataclass(frozen=True)
class PublicIncident:
    """A published incident (or maintenance) with its updates, oldest first."""

    id: int
    title: str
    severity: Severity
    state: IncidentState
    components: tuple[str, ...]
    started_at: datetime
    resolved_at: datetime | None
    eta: datetime | None
    ends_at: datetime | None
    updates: tuple[PublicUpdate, ...] = ()
    private: bool = False  # only on the private pages of those it concerns

    @property
    def is_maintenance(self) -> bool:
        """Announced or running maintenance, or one completed or called off (only maintenance
        has `ends_at`); one that went wrong and became an incident is an incident."""
        return self.state in (IncidentState.SCHEDULED, IncidentState.CANCELLED) or (
            self.state is IncidentState.RESOLVED and self.ends_at is not None
        )

    @property
    def is_open(self) -> bool:
        return self.state.is_open

    @property
    def level(self) -> Level:
        """What this incident does to its components while it is on."""
        return Level.MAINTENANCE if self.is_maintenance else _SEVERITY_LEVEL[self.severity]

    @property
    def next_update_at(self) -> datetime | None:
        """The promise made by the latest update, while the incident is open."""
        if not self.is_open or not self.updates:
            return None
        return self.updates[-1].next_update_at

    def affects_at(self, moment: datetime) -> bool:
        """Whether this incident weighs on its components at `moment`: an open incident from its
        start; a maintenance only inside its window (an announced one is not an outage yet)."""
        if self.state is IncidentState.SCHEDULED:
            return self.started_at <= moment and (self.ends_at is None or moment < self.ends_at)
        return self.is_open and self.started_at <= moment

    def days(self, now: datetime) -> list[date]:
        """The UTC days it covered, from its start to its resolution (or end, or now)."""
        end = self.resolved_at or (self.ends_at if self.is_maintenance else None) or now
        end = min(end, now)
        first, last = self.started_at.date(), end.date()
        return [first + timedelta(days=n) for n in range((last - first).days + 1)]


@dataclass(frozen=True)
class ComponentState:
    """A component now, and which open incidents (or running maintenance) make it so."""

    name: str
    level: Level
    incident_ids: tuple[int, ...]


@dataclass(frozen=True)
class Day:
    """One day of one component's history: the worst level of the incidents that touched it."""

    date: date
    level: Level
    incidents: tuple[PublicIncident, ...] = ()


@dataclass(frozen=True)
class ComponentHistory:
    name: str
    days: tuple[Day, ...]  # oldest first, HISTORY_DAYS of them, the last one today

    @property
    def clear_days(self) -> int:
        """Days without an incident (maintenance is planned, so it does not count against)."""
        return sum(day.level in (Level.OPERATIONAL, Level.MAINTENANCE) for day in self.days)


@dataclass(frozen=True)
class Snapshot:
    """Everything the status page shows, read at one moment."""

    now: datetime
    components: tuple[ComponentState, ...]
    open_incidents: tuple[PublicIncident, ...]  # newest first
    maintenance: tuple[PublicIncident, ...]  # upcoming and running windows, soonest first
    history: tuple[ComponentHistory, ...]
    past_incidents: tuple[PublicIncident, ...] = field(default=())  # resolved in the window

    @property
    def level(self) -> Level:
        """The page's headline: the worst component."""
        return worst(component.level for component in self.components)


def listed(visible: Collection[int] = ()) -> ColumnElement[bool]:
    """The incidents a page may show: published, and public or among `visible`."""
    # IS NOT TRUE: a row from before the column existed (NULL) was public.
    shown: ColumnElement[bool] = Incident.private.is_not(True)
    if visible:
        shown = or_(shown, Incident.id.in_(list(visible)))
    return and_(Incident.draft.is_(False), shown)


def snapshot(
    store: Store, settings: Settings, now: datetime | None = None, visible: Collection[int] = ()
) -> Snapshot:
    """The whole status page in two queries (see the module docstring); `visible`: private
    incidents a subscriber's page also shows."""
    now = now or utcnow()
    since = datetime.combine(
        (now - timedelta(days=HISTORY_DAYS - 1)).date(), datetime.min.time(), now.tzinfo
    )
    with store.session() as session:
        rows = session.execute(
            select(Incident, Update)
            .outerjoin(
                Update,
                and_(Update.incident_id == Incident.id, Incident.state.not_in(CLOSED)),
            )
            .where(
                listed(visible),
                or_(
                    Incident.state.not_in(CLOSED),
                    Incident.resolved_at >= since,
                    Incident.started_at >= since,
                ),
            )
            .order_by(Incident.id, Update.created_at, Update.id)
        ).all()
        older = session.scalars(
            select(Incident.components).where(listed(visible), Incident.started_at < since)
        ).all()
    incidents = _grouped(rows)
    names = _component_names(settings.components, older, incidents)
    return Snapshot(
        now=now,
        components=tuple(_component_state(name, incidents, now) for name in names),
        open_incidents=tuple(
            sorted(
                (i for i in incidents if i.is_open and not i.is_maintenance),
                key=lambda i: i.started_at,
                reverse=True,
            )
        ),
        maintenance=tuple(
            sorted(
                (
                    i
                    for i in incidents
                    if i.state is IncidentState.SCHEDULED and (i.ends_at is None or i.ends_at > now)
                ),
                key=lambda i: i.started_at,
            )
        ),
        history=tuple(_history(name, incidents, since.date(), now) for name in names),
        past_incidents=tuple(
            sorted(
                (i for i in incidents if not i.is_open),
                key=lambda i: i.resolved_at or i.started_at,
                reverse=True,
            )
        ),
    )


def incident(
    store: Store, incident_id: int, visible: Collection[int] = ()
) -> PublicIncident | None:
    """One published incident with its whole timeline, in one query; None for an unknown id, a
    draft or a private incident not in `visible` (indistinguishable from outside, on purpose)."""
    if not 0 < incident_id <= MAX_ID:
        return None
    with store.session() as session:
        rows = session.execute(
            select(Incident, Update)
            .outerjoin(Update, Update.incident_id == Incident.id)
            .where(Incident.id == incident_id, listed(visible))
            .order_by(Update.created_at, Update.id)
        ).all()
    found = _grouped(rows)
    return found[0] if found else None


def feed(
    store: Store, limit: int = FEED_ENTRIES, visible: Collection[int] = ()
) -> list[tuple[PublicIncident, PublicUpdate]]:
    """The latest published updates, newest first, each with its incident (without timeline);
    of public incidents and those in `visible`."""
    with store.session() as session:
        rows = session.execute(
            select(Update, Incident)
            .join(Incident, Update.incident_id == Incident.id)
            .where(listed(visible))
            .order_by(Update.created_at.desc(), Update.id.desc())
            .limit(limit)
        ).all()
    return [(_public_incident(row, ()), _public_update(update)) for update, row in rows]


def _grouped(rows: Sequence[tuple[Incident, Update | None]]) -> list[PublicIncident]:
    """(incident, update) rows of an outer join as incidents with their updates, in row order."""
    updates: dict[int, list[PublicUpdate]] = {}
    incidents: dict[int, Incident] = {}
    for row, update in rows:
        incidents.setdefault(row.id, row)
        bucket = updates.setdefault(row.id, [])
        if update is not None:
            bucket.append(_public_update(update))
    return [_public_incident(row, tuple(updates[key])) for key, row in incidents.items()]


def _public_incident(row: Incident, updates: tuple[PublicUpdate, ...]) -> PublicIncident:
    return PublicIncident(
        id=row.id,
        title=row.title,
        severity=row.severity,
        state=row.state,
        components=tuple(row.components),
        started_at=row.started_at,
        resolved_at=row.resolved_at,
        eta=row.eta,
        ends_at=row.ends_at,
        updates=updates,
        private=row.private,
    )


def _public_update(row: Update) -> PublicUpdate:
    return PublicUpdate(
        id=row.id,
        incident_id=row.incident_id,
        state=row.state,
        message=row.message,
        created_at=row.created_at,
        next_update_at=row.next_update_at,
    )


def _component_names(
    configured: Iterable[str], older: Iterable[Iterable[str]], recent: Iterable[PublicIncident]
) -> list[str]:
    """Configured components in their configured order, then every other component a published
    incident has named, alphabetically."""
    seen = {name for names in older for name in names}
    seen.update(name for item in recent for name in item.components)
    ordered = list(dict.fromkeys(configured))
    return ordered + sorted(seen.difference(ordered), key=str.casefold)


def _component_state(
    name: str, incidents: Sequence[PublicIncident], now: datetime
) -> ComponentState:
    current = [i for i in incidents if name in i.components and i.affects_at(now)]
    return ComponentState(
        name=name,
        level=worst(i.level for i in current),
        incident_ids=tuple(i.id for i in current),
    )


def _history(
    name: str, incidents: Sequence[PublicIncident], first: date, now: datetime
) -> ComponentHistory:
    touched: dict[date, list[PublicIncident]] = {}
    for item in incidents:
        if name in item.components:
            for day in item.days(now):
                touched.setdefault(day, []).append(item)
    days = []
    for offset in range((now.date() - first).days + 1):
        current = first + timedelta(days=offset)
        found = tuple(touched.get(current, ()))
        days.append(Day(current, worst(i.level for i in found), found))
    return ComponentHistory(name=name, days=tuple(days))
