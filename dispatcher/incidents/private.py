"""Which private incidents a subscriber's own status page shows: those that concern them.

A scoped incident that was not made public is kept off the public page, the feed and the X
account (dispatcher/incidents/public.py). Each subscriber's private page (`/account/<signed
token>`, dispatcher/web/account.py) shows the public page's content plus the private incidents
that concern them: those whose scope holds their attributes (under OUTAGE_UNSCOPED, as the
audience does), and those they were told of (a scope that narrowed after they were told). The
team (internal subscribers) sees every one. Drafts never appear.

Two queries: the private incidents with their scopes (a few, however many subscribers there
are), and which of them reached this subscriber.
"""

from __future__ import annotations

from sqlalchemy import select

from dispatcher.policy.scope import matches
from dispatcher.store import Delivery, Incident, Store, Subscriber, Update


def visible(store: Store, subscriber: Subscriber, unscoped: str) -> list[int]:
    """The ids of the private incidents `subscriber` may see, oldest first."""
    with store.session() as session:
        private = session.execute(
            select(Incident.id, Incident.scope)
            .where(Incident.private.is_(True), Incident.draft.is_(False))
            .order_by(Incident.id)
        ).all()
        if not private or subscriber.internal:
            return [incident_id for incident_id, _ in private]
        told = set(
            session.scalars(
                select(Update.incident_id)
                .join(Delivery, Delivery.update_id == Update.id)
                .where(
                    Delivery.subscriber_id == subscriber.id,
                    Update.incident_id.in_([incident_id for incident_id, _ in private]),
                )
                .distinct()
            )
        )
    attributes = subscriber.attributes
    return [
        incident_id
        for incident_id, scope in private
        if incident_id in told or matches(scope or {}, attributes, unscoped)
    ]
