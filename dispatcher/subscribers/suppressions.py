"""Addresses that receive nothing more (opt-outs, bounces, STOP, 410 Gone).

Kept by address, not by subscriber, so an opt-out survives the subscriber being deleted and
re-imported. Checked twice: when the audience is chosen, and again just before sending.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from dispatcher.audit import record
from dispatcher.models import SuppressionReason
from dispatcher.store import Suppression, insert_ignoring_duplicates

Address = tuple[str, str]  # (address field: email/phone/webhook, the address)


def suppress(
    session: Session,
    kind: str,
    address: str,
    reason: SuppressionReason,
    *,
    actor: str,
    subscriber_id: int | None = None,
) -> None:
    """Idempotent: suppressing an address twice keeps the first reason."""
    session.execute(
        insert_ignoring_duplicates(session, Suppression).values(
            kind=kind, address=address, reason=reason
        )
    )
    record(session, actor, f"suppressed:{reason}", subscriber_id=subscriber_id, kind=kind)


def lift(session: Session, kind: str, address: str, *, actor: str) -> bool:
    """Undo a suppression (an SMS START, a re-subscribe); True if there was one."""
    found = session.scalars(
        select(Suppression).where(Suppression.kind == kind, Suppression.address == address)
    ).first()
    if found is None:
        return False
    session.delete(found)
    record(session, actor, "suppression_lifted", kind=kind)
    return True


def suppressed(session: Session, addresses: Iterable[Address]) -> set[Address]:
    """Which of these addresses are suppressed, in one query per chunk."""
    wanted = list(set(addresses))
    found: set[Address] = set()
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = session.execute(
            select(Suppression.kind, Suppression.address).where(
                tuple_(Suppression.kind, Suppression.address).in_(chunk)
            )
        ).all()
        found.update((kind, address) for kind, address in rows)
    return found


def all_suppressed(session: Session) -> set[Address]:
    """Every suppressed address: loaded once per fan-out, cheaper than a query per subscriber."""
    return {
        (kind, address)
        for kind, address in session.execute(select(Suppression.kind, Suppression.address))
    }
