"""`/api/incidents`: the CLI's incident operations, for scripts (operator token required);
planned maintenance is at `/api/maintenance` (maintenance_api.py).

The core's refusals answer through the app's OutageError handler: an unknown id is 404, a change
the incident's state does not allow 409."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, status
from pydantic import BaseModel

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents import lifecycle, reports
from dispatcher.incidents.lifecycle import Extras, Posted
from dispatcher.models import ApproveIn, IncidentIn, IncidentState, ReopenIn, Severity, UpdateIn
from dispatcher.store import MAX_ID
from dispatcher.web.deps import OperatorDep, PipelineDep

IncidentId = Annotated[int, Path(ge=1, le=MAX_ID, description="the incident's id")]

router = APIRouter(prefix="/api/incidents", tags=["incidents"], dependencies=[OperatorDep])


class PostedOut(BaseModel):
    incident_id: int
    update_id: int


class UpdateOut(BaseModel):
    id: int
    state: IncidentState
    message: str | None
    created_at: datetime


class IncidentOut(BaseModel):
    id: int
    title: str
    severity: Severity
    state: IncidentState
    components: list[str]
    draft: bool
    source: str
    started_at: datetime
    resolved_at: datetime | None
    updates: list[UpdateOut] = []
    deliveries: dict[str, dict[str, int]] = {}


def announce(pipeline: Pipeline, posted: Posted) -> PostedOut:
    """Hand a committed update to the queue; the ids the caller may follow."""
    pipeline.announce(posted.update_id)
    return PostedOut(incident_id=posted.incident_id, update_id=posted.update_id)


@router.post("", status_code=status.HTTP_201_CREATED)
def open_incident(pipeline: PipelineDep, body: IncidentIn) -> PostedOut:
    """Open an incident (investigating) and notify everyone it concerns."""
    return announce(pipeline, lifecycle.open_incident(pipeline.store, body))


@router.post("/{incident_id}/updates", status_code=status.HTTP_201_CREATED)
def post_update(pipeline: PipelineDep, incident_id: IncidentId, body: UpdateIn) -> PostedOut:
    """Post an update; state `resolved` resolves the incident (with the feedback survey, and the
    credit note for subscribers only), as `outage incident update` and `resolve` do."""
    extras = Extras.of(body)
    if body.state is IncidentState.RESOLVED:
        posted = lifecycle.resolve(pipeline.store, incident_id, body.message, extras)
    else:
        posted = lifecycle.post_update(
            pipeline.store, incident_id, body.state, body.message, extras
        )
    return announce(pipeline, posted)


@router.post("/{incident_id}/reopen", status_code=status.HTTP_201_CREATED)
def reopen(pipeline: PipelineDep, incident_id: IncidentId, body: ReopenIn) -> PostedOut:
    """Reopen a resolved incident: those who were told of it (and the public post, if it was)
    hear it is back; nobody else is paged."""
    return announce(pipeline, lifecycle.reopen_incident(pipeline.store, incident_id, body))


@router.post("/{incident_id}/approve")
def approve(pipeline: PipelineDep, incident_id: IncidentId, body: ApproveIn) -> PostedOut:
    """Publish a draft opened by a monitoring system, optionally reworded first."""
    posted = lifecycle.approve(pipeline.store, incident_id, title=body.title, message=body.message)
    return announce(pipeline, posted)


@router.get("")
def list_incidents(pipeline: PipelineDep) -> list[IncidentOut]:
    return [
        IncidentOut.model_validate(i, from_attributes=True)
        for i in reports.incidents(pipeline.store)
    ]


@router.get("/{incident_id}")
def get_incident(pipeline: PipelineDep, incident_id: IncidentId) -> IncidentOut:
    """The incident with its updates and its deliveries counted per channel and status."""
    found, updates = reports.incident(pipeline.store, incident_id)
    summary = reports.delivery_summary(pipeline.store, incident_id)
    out = IncidentOut.model_validate(found, from_attributes=True)
    out.updates = [UpdateOut.model_validate(u, from_attributes=True) for u in updates]
    out.deliveries = {channel: dict(counts) for channel, counts in summary.items()}
    return out
