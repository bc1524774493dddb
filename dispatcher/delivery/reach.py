"""Who will hear of an update, counted before it goes: the dry run, and the numbers every
`incident open|update` states ("told 312 of 10,000: region=eu-west").

Both read `fanout.planned`, the very stream the fan-out writes its rows from (same audience
query, same cadence, same pacing), so a preview cannot disagree with the send that follows:

- a **dry run** makes the change in a transaction that is rolled back (`preview`), so the
  state machine's refusals are the same as for the real command, and nothing is kept: no
  incident, no update, no delivery, no audit event;
- the **answer** of a real command counts the committed update before it is handed to the
  queue (`counted`), so pacing sees what the fan-out will see.

"Of" is the audience the update would have without its scope (the subscribers its components
and severity concern): the difference is who a scope spares. It costs a second pass over the
audience, made only for a scoped incident.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from dispatcher.delivery.fanout import planned
from dispatcher.delivery.registry import ChannelRegistry
from dispatcher.incidents.lifecycle import Posted
from dispatcher.models import WaitReason
from dispatcher.policy.scope import INCLUDE, describe
from dispatcher.store import Incident, Store, Update

# The pacing rules that hold a message back (the others are a provider's: retries, breakers).
HELD = (WaitReason.QUIET_HOURS, WaitReason.HOURLY_CAP, WaitReason.COALESCING)
TEAM = "the team"
TOLD_BEFORE = "told before"  # out of a narrowed scope, still told


@dataclass
class Reach:
    """What an update's fan-out writes, counted: subscribers told (each on one channel), the
    public posts, how many pacing holds and why, and how the scope divides those told."""

    incident_id: int
    update_id: int
    scope: dict[str, list[str]]
    private: bool
    told: int = 0
    of: int = 0
    channels: Counter[str] = field(default_factory=Counter)
    public: list[str] = field(default_factory=list)
    held: Counter[str] = field(default_factory=Counter)
    segments: Counter[str] = field(default_factory=Counter)
    newcomers: int = 0  # told for the first time on this update: their message has the story

    @property
    def headline(self) -> str:
        """The numbers in a line: "told 312 of 10,000: region=eu-west" ("told 10,000")."""
        if not self.scope:
            return f"told {self.told:,}"
        return f"told {self.told:,} of {self.of:,}: {describe(self.scope)}"

    def lines(self) -> list[str]:
        """The rest, a line each: channels, scope values, held, public posts."""
        found = []
        if self.channels:
            found.append("by channel: " + _counts(self.channels))
        if self.segments:
            found.append("by scope: " + _counts(self.segments))
        if self.newcomers:
            found.append(f"told for the first time (with the story so far): {self.newcomers:,}")
        if self.held:
            found.append("held: " + _counts(self.held))
        if self.public:
            found.append("public post: " + ", ".join(self.public))
        elif self.private:
            found.append("private: not on the public page, the feed or the public account")
        return found

    def as_dict(self, *, ids: bool = True) -> dict[str, object]:
        """The counts as JSON; without the ids for a dry run, whose rows were never kept."""
        found: dict[str, object] = (
            {"incident_id": self.incident_id, "update_id": self.update_id} if ids else {}
        )
        return found | {
            "scope": self.scope,
            "private": self.private,
            "told": self.told,
            "of": self.of,
            "channels": dict(self.channels),
            "public": self.public,
            "held": dict(self.held),
            "segments": dict(self.segments),
            "newcomers": self.newcomers,
        }


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{name} {count:,}" for name, count in sorted(counter.items()))


def preview(store: Store, registry: ChannelRegistry, write: Callable[[Session], Posted]) -> Reach:
    """The dry run: `write` (lifecycle.create or lifecycle.post) in a transaction that is then
    rolled back, counted in it. Raises what `write` raises, so bad input fails as it would."""
    with store.rolled_back() as session:
        return count(session, registry, write(session))


def counted(store: Store, registry: ChannelRegistry, posted: Posted) -> Reach:
    """The counts of a committed update, read before it is announced."""
    with store.session() as session:
        return count(session, registry, posted)


def count(session: Session, registry: ChannelRegistry, posted: Posted) -> Reach:
    update_row = session.get_one(Update, posted.update_id)
    incident = session.get_one(Incident, posted.incident_id)
    scope = {key: list(values) for key, values in sorted((incident.scope or {}).items())}
    reach = Reach(posted.incident_id, posted.update_id, scope, incident.private)
    for item in planned(session, incident, update_row, registry):
        person = item.recipient
        if person is None:
            reach.public.append(item.channel)
            continue
        reach.told += 1
        reach.channels[item.channel] += 1
        reach.newcomers += person.newcomer
        if item.reason in HELD:
            reach.held[str(item.reason)] += 1
        if scope:
            unscoped = registry.settings.unscoped
            for segment in _segments(scope, person.values, person.internal, unscoped):
                reach.segments[segment] += 1
    reach.of = reach.told
    if scope:
        reach.of = sum(
            1
            for item in planned(session, incident, update_row, registry, unscoped_view=True)
            if item.recipient is not None
        )
    return reach


def _segments(
    scope: dict[str, list[str]], values: tuple[str | None, ...], internal: bool, unscoped: str
) -> list[str]:
    """Where a recipient counts: the team; under their value of each key ("region=eu-west"),
    or "region not set" (told by OUTAGE_UNSCOPED=include); else told before a narrowing."""
    if internal:
        return [TEAM]
    found = []
    for key, value in zip(sorted(scope), values, strict=True):
        if value is None and unscoped == INCLUDE:
            found.append(f"{key} not set")
        elif value is not None and value in scope[key]:
            found.append(f"{key}={value}")
        else:
            return [TOLD_BEFORE]
    return found
