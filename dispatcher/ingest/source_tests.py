"""A monitoring source's own test (a contact point's "Test" button, a subscription's ping):
recorded, one row per source with the last time, and never an incident.

The sender shows a test as passed when we answer 2xx; the record is what lets an operator see
on our side, in `outage doctor` and `outage_monitoring_test_received_timestamp_seconds`, that
the request got through the network, the token and the parser.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from dispatcher.store import SourceTest, Store, utcnow


def record(store: Store, source: str) -> None:
    """Note that `source` sent its test now (an upsert: two presses at once do not collide)."""
    now = utcnow()
    with store.session() as session:
        insert = postgresql.insert if store.dialect == "postgresql" else sqlite.insert
        session.execute(
            insert(SourceTest)
            .values(source=source, received_at=now)
            .on_conflict_do_update(index_elements=[SourceTest.source], set_={"received_at": now})
        )


def last_received(session: Session) -> dict[str, datetime]:
    """Each source that ever sent a test, and when it last did."""
    rows = session.execute(select(SourceTest.source, SourceTest.received_at))
    return {source: received_at for source, received_at in rows}
