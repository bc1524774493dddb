"""`/api/incidents`: the CLI's incident operations, for scripts (operator token required);
planned maintenance is at `/api/maintenance` (maintenance_api.py).

The core's refusals answer through the app's OutageError handler: an unknown id is 404, a change
the incident's state does not allow 409.

`?dry_run=true` on opening or updating counts who would be told (per channel, per scope value,
held by pacing) and keeps nothing: the same function as `outage incident open|update --dry-run`
(dispatcher/delivery/reach.py). A real open or update answers with the same counts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response, status
from pydantic import BaseModel
from sqlalchemy.orm import Session

from dispatcher.delivery import reach
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents import lifecycle, reports
from dispatcher.incidents.lifecycle import Extras, Posted
from dispatcher.models import ApproveIn, IncidentIn, IncidentState, ReopenIn, Severity, UpdateIn
from dispatcher.store import MAX_ID
from dispatcher.web.deps import OperatorDep, PipelineDep

IncidentId = Annotated[int, Path(ge=1, le=MAX_ID, description="the incident's id")]

router = APIRouter(prefix="/api/incidents", tags=["incidents"], dependencies=[OperatorDep])


DryRun = Annotated[
    bool, Query(description="count who would be told, on which channel; keep and send nothing")
]


class ReachOut(BaseModel):
    """Who an update is told to: subscribers (each on one channel) of `of`, the audience it
    would have without its scope; per channel, per scope value, held by pacing and why."""

    scope: dict[str, list[str]]
    private: bool
    told: int
    of: int
    channels: dict[str, int]
    public: list[str]
    held: dict[str, int]
    segments: dict[str, int]
    newcomers: int


class DryRunOut(ReachOut):
    dry_run: bool = True


class PostedOut(BaseModel):
    incident_id: int
    update_id: int
    reach: ReachOut


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
    scope: dict[str, list[str]]  # who it affects, by subscriber attribute; {}: everyone
    private: bool  # scoped and not public: only on the private pages of those it concerns
    started_at: datetime
    resolved_at: datetime | None
    updates: list[UpdateOut] = []
    deliveries: dict[str, dict[str, int]] = {}


def announce(pipeline: Pipeline, posted: Posted) -> PostedOut:
    """Hand a committed update to the queue; the ids the caller may follow, and who is told."""
    told = reach.counted(pipeline.store, pipeline.registry, posted)  # before the fan-out
    pipeline.announce(posted.update_id)
    return PostedOut(
        incident_id=posted.incident_id,
        update_id=posted.update_id,
        reach=ReachOut.model_validate(told.as_dict(ids=False)),
    )


def _post(
    pipeline: Pipeline, write: Callable[[Session], Posted], dry_run: bool, response: Response
) -> Any:
    """Commit `write` and announce it, or with `dry_run` count it and keep nothing (200)."""
    if dry_run:
        response.status_code = status.HTTP_200_OK
        told = reach.preview(pipeline.store, pipeline.registry, write)
        return DryRunOut.model_validate(told.as_dict(ids=False))
    with pipeline.store.session() as session:
        posted = write(session)
    return announce(pipeline, posted)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=PostedOut | DryRunOut,
    responses={200: {"description": "dry run: who would be told", "model": DryRunOut}},
)
def open_incident(
    pipeline: PipelineDep, body: IncidentIn, response: Response, dry_run: DryRun = False
) -> Any:
    """Open an incident (investigating) and notify everyone it concerns (`affects`: only the
    subscribers with those attributes)."""
    return _post(pipeline, lambda session: lifecycle.create(session, body), dry_run, response)


@router.post(
    "/{incident_id}/updates",
    status_code=status.HTTP_201_CREATED,
    response_model=PostedOut | DryRunOut,
    responses={200: {"description": "dry run: who would be told", "model": DryRunOut}},
)
def post_update(
    pipeline: PipelineDep,
    incident_id: IncidentId,
    body: UpdateIn,
    response: Response,
    dry_run: DryRun = False,
) -> Any:
    """Post an update; state `resolved` resolves the incident (with the feedback survey, and the
    credit note for subscribers only), as `outage incident update` and `resolve` do."""
    extras = replace(Extras.of(body), scope=body.affects, public=body.public, notes=body.notes)

    def write(session: Session) -> Posted:
        if body.state is IncidentState.RESOLVED:
            return lifecycle.resolve_in(session, incident_id, body.message, extras)
        return lifecycle.update_in(session, incident_id, body.state, body.message, extras)

    return _post(pipeline, write, dry_run, response)


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
