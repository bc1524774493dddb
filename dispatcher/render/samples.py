"""Sample data for an update at each state: a checkout incident, as real as we can make it.

`outage template preview` renders a template with it, and `outage doctor` renders every
installed channel at every state with it to find the ones that fail, so both see the texts a
real incident produces (an operator's message of typical length, a next-update time, a
maintenance window) without a database. The times are fixed, so every run shows the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Final

from dispatcher.models import IncidentState, Severity
from dispatcher.render.views import IncidentView, RecipientView, UpdateView

_SAMPLE_START: Final = datetime(2025, 5, 14, 14, 5, tzinfo=UTC)
_SAMPLE_MESSAGES: Final = {
    IncidentState.INVESTIGATING: (
        "Some card payments fail at checkout with an error. Orders already placed are not "
        "affected, and you can retry a failed payment in a few minutes."
    ),
    IncidentState.IDENTIFIED: (
        "A configuration change at our payment provider is rejecting some cards. We are rolling "
        "it back."
    ),
    IncidentState.MONITORING: (
        "The change has been rolled back and payments are succeeding again. We are watching "
        "error rates closely."
    ),
    IncidentState.RESOLVED: (
        "A configuration change at our payment provider rejected some card payments between "
        "14:02 and 15:05 UTC. It has been rolled back, and failed payments can be retried safely."
    ),
    IncidentState.SCHEDULED: (
        "Checkout will be read-only for up to 15 minutes during the window. No action is needed."
    ),
    IncidentState.CANCELLED: "We will announce a new date at least a week ahead.",
}
_MAINTENANCE: Final = (IncidentState.SCHEDULED, IncidentState.CANCELLED)


_SAMPLE_CREDIT: Final = "Affected accounts get a 10% credit on this month's invoice."


def sample(
    state: IncidentState, *, public_url: str = "https://status.example.com"
) -> tuple[IncidentView, UpdateView, RecipientView]:
    """Realistic data for `outage template preview`: a checkout incident at the given state."""
    base = public_url.rstrip("/")
    scheduled = state in _MAINTENANCE
    started = datetime(2025, 5, 21, 2, 0, tzinfo=UTC) if scheduled else _SAMPLE_START
    created = {
        IncidentState.INVESTIGATING: _SAMPLE_START + timedelta(minutes=3),
        IncidentState.IDENTIFIED: _SAMPLE_START + timedelta(minutes=25),
        IncidentState.MONITORING: _SAMPLE_START + timedelta(minutes=55),
        IncidentState.RESOLVED: _SAMPLE_START + timedelta(minutes=65),
        IncidentState.SCHEDULED: datetime(2025, 5, 14, 10, 0, tzinfo=UTC),
        IncidentState.CANCELLED: datetime(2025, 5, 16, 9, 30, tzinfo=UTC),
    }[state]
    incident = IncidentView(
        id=42,
        title="Payments maintenance" if scheduled else "Checkout errors",
        severity=Severity.MINOR if scheduled else Severity.MAJOR,
        state=state,
        components=("checkout", "payments"),
        started_at=started,
        resolved_at=None if state.is_open else created,
        url=f"{base}/incidents/42",
    )
    update = UpdateView(
        id=7,
        state=state,
        message=_SAMPLE_MESSAGES[state],
        created_at=created,
        next_update_at=created + timedelta(minutes=30) if state.is_open and not scheduled else None,
        eta=_sample_eta(state, started),
        credit_note=_SAMPLE_CREDIT if state is IncidentState.RESOLVED else None,
    )
    recipient = RecipientView(
        name="Ada",
        locale="en",
        manage_url=f"{base}/preferences/s-3f9a",
        unsubscribe_url=f"{base}/unsubscribe/s-3f9a",
    )
    return incident, update, recipient


def every_topic(
    *, public_url: str = "https://status.example.com"
) -> Iterator[tuple[IncidentView, UpdateView, RecipientView]]:
    """A sample of every message topic: each state, then the post-incident review."""
    for state in IncidentState:
        yield sample(state, public_url=public_url)
    incident, update, recipient = sample(IncidentState.RESOLVED, public_url=public_url)
    review = replace(
        update,
        message=None,
        credit_note=None,
        milestone="postmortem",
        review_url=f"{public_url.rstrip('/')}/reviews/42",
        created_at=update.created_at + timedelta(days=3),
    )
    yield incident, review, recipient


def _sample_eta(state: IncidentState, started: datetime) -> datetime | None:
    if state is IncidentState.IDENTIFIED:
        return started + timedelta(minutes=70)
    if state in _MAINTENANCE:  # a maintenance notice's eta is the window's end
        return started + timedelta(hours=2)
    return None
