"""The audit trail: one row per change an operator may later need to explain."""

from __future__ import annotations

from sqlalchemy.orm import Session

from dispatcher.store import AuditEvent


def record(
    session: Session,
    actor: str,
    action: str,
    *,
    subscriber_id: int | None = None,
    incident_id: int | None = None,
    **detail: object,
) -> None:
    """Add an audit event in the caller's transaction, so it exists exactly when the change does.

    `detail` must not carry secrets or full addresses."""
    session.add(
        AuditEvent(
            actor=actor,
            action=action,
            subscriber_id=subscriber_id,
            incident_id=incident_id,
            detail=detail,
        )
    )
