"""What an update says to some of its recipients only, decided for a send batch at once: the
notes for segments (`--note-for plan=enterprise "…"`), and the story so far for whoever is told
of the incident for the first time because its scope widened to them.

Each costs one query per batch, and only for the batches that need it: the attributes of the
batch's subscribers when its update has notes, and who of them was told before when its update
changed the scope. The team (internal subscribers) sees every note, each marked with its
segment, so that what support says matches what each segment is told.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from dispatcher.delivery.rows import Claimed
from dispatcher.models import Audience
from dispatcher.policy.audience import TOLD
from dispatcher.policy.scope import describe, in_segment
from dispatcher.render.views import EarlierUpdate
from dispatcher.store import Delivery, SubscriberAttribute, Update


@dataclass(frozen=True)
class Personal:
    """The batch's notes and stories, by subscriber and update."""

    attributes: dict[int, dict[str, str]] = field(default_factory=dict)
    stories: dict[int, tuple[EarlierUpdate, ...]] = field(default_factory=dict)  # by update
    newcomers: frozenset[tuple[int, int]] = frozenset()  # (update, subscriber) told only now

    def note(self, item: Claimed) -> str | None:
        """The update's notes this recipient is to see, one a line."""
        notes = item.update.notes or []
        subscriber = item.subscriber
        if not notes or subscriber is None:
            return None
        if subscriber.internal:
            shown = [f"[For {describe(n['segment'])}] {n['text']}" for n in notes]
        else:
            attributes = self.attributes.get(subscriber.id, {})
            shown = [n["text"] for n in notes if in_segment(n["segment"], attributes)]
        return "\n".join(shown) or None

    def story(self, item: Claimed) -> tuple[EarlierUpdate, ...]:
        if item.subscriber is None or (item.update.id, item.subscriber.id) not in self.newcomers:
            return ()
        return self.stories.get(item.update.id, ())


def personal(session: Session, items: Sequence[Claimed]) -> Personal:
    """Read what the batch's notes and stories need (nothing, for most batches)."""
    people = [(item, item.subscriber.id) for item in items if item.subscriber is not None]
    noted = {subscriber_id for item, subscriber_id in people if item.update.notes}
    keys = {
        key for item, _ in people for note in item.update.notes or [] for key in note["segment"]
    }
    attributes: dict[int, dict[str, str]] = {}
    if noted:
        rows = session.execute(
            select(
                SubscriberAttribute.subscriber_id,
                SubscriberAttribute.key,
                SubscriberAttribute.value,
            ).where(SubscriberAttribute.subscriber_id.in_(noted), SubscriberAttribute.key.in_(keys))
        )
        for subscriber_id, key, value in rows:
            attributes.setdefault(subscriber_id, {})[key] = value
    stories: dict[int, tuple[EarlierUpdate, ...]] = {}
    newcomers: set[tuple[int, int]] = set()
    rescoped = {item.update.id: item.update for item, _ in people if item.update.scope is not None}
    for update_id, update in rescoped.items():
        story = _earlier(session, update)
        if not story:  # the incident's first update: nobody is told "so far"
            continue
        stories[update_id] = story
        ids = {subscriber_id for item, subscriber_id in people if item.update.id == update_id}
        told = session.scalars(
            select(Delivery.subscriber_id)
            .join(Update, Delivery.update_id == Update.id)
            .where(
                Delivery.subscriber_id.in_(ids),
                Update.incident_id == update.incident_id,
                Update.id < update_id,
                Delivery.status.in_(TOLD),
            )
        )
        newcomers.update((update_id, subscriber_id) for subscriber_id in ids - set(told))
    return Personal(attributes, stories, frozenset(newcomers))


def _earlier(session: Session, update: Update) -> tuple[EarlierUpdate, ...]:
    """The incident's public updates before this one, oldest first."""
    rows = session.execute(
        select(Update.state, Update.message, Update.created_at)
        .where(
            Update.incident_id == update.incident_id,
            Update.id < update.id,
            Update.audience == Audience.EVERYONE,
        )
        .order_by(Update.id)
    ).all()
    return tuple(EarlierUpdate(state, message, created_at) for state, message, created_at in rows)
