"""`/api/maintenance`: the CLI's maintenance operations, for scripts (operator token required).

Schedule, move, call off and list planned maintenance (dispatcher/incidents/maintenance.py); a
maintenance is an incident row, so `GET /api/incidents/{id}` shows its timeline and deliveries.
The core's refusals answer through the app's OutageError handler: an unknown id is 404, a change
the maintenance's state does not allow 409."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query, status
from pydantic import BaseModel

from dispatcher.incidents import maintenance
from dispatcher.models import CancelIn, IncidentState, MaintenanceIn, Severity, WindowIn
from dispatcher.web.deps import OperatorDep, PipelineDep
from dispatcher.web.incidents_api import IncidentId, PostedOut, announce

router = APIRouter(prefix="/api/maintenance", tags=["maintenance"], dependencies=[OperatorDep])


class MaintenanceOut(BaseModel):
    id: int
    title: str
    severity: Severity
    state: IncidentState  # scheduled (or running), resolved (completed) or cancelled
    components: list[str]
    started_at: datetime  # the window's start
    ends_at: datetime
    resolved_at: datetime | None


@router.post("", status_code=status.HTTP_201_CREATED)
def schedule(pipeline: PipelineDep, body: MaintenanceIn) -> PostedOut:
    """Announce planned maintenance now to everyone it concerns; reminders, its start and its
    end are announced by the sweep."""
    return announce(pipeline, maintenance.schedule(pipeline.store, body))


@router.get("")
def list_maintenance(
    pipeline: PipelineDep,
    everything: bool = Query(default=False, alias="all", description="completed, cancelled too"),
) -> list[MaintenanceOut]:
    """Scheduled and running maintenance, soonest first (`?all=true`: every one)."""
    return [
        MaintenanceOut.model_validate(item, from_attributes=True)
        for item in maintenance.listed(pipeline.store, everything=everything)
    ]


@router.post("/{maintenance_id}/reschedule", status_code=status.HTTP_201_CREATED)
def reschedule(pipeline: PipelineDep, maintenance_id: IncidentId, body: WindowIn) -> PostedOut:
    """Move it (or give a running one a later end): told once to those who were told of it."""
    return announce(pipeline, maintenance.reschedule(pipeline.store, maintenance_id, body))


@router.post("/{maintenance_id}/cancel", status_code=status.HTTP_201_CREATED)
def cancel(pipeline: PipelineDep, maintenance_id: IncidentId, body: CancelIn) -> PostedOut:
    """Call it off before it starts: told once to those who were told of it."""
    return announce(pipeline, maintenance.cancel(pipeline.store, maintenance_id, body.message))
