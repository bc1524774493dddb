"""`/api/incidents`: the CLI's incident operations, for scripts (operator token required).

The core's refusals answer through the app's OutageError handler: an unknown id is 404, a change
the incident's state does not allow 409.

`?dry_run=true` on opening or updating counts who would be told (per channel, per scope value,
held by pacing) and keeps nothing: the same function as `outage incident open|update --dry-run`
(dispatcher/delivery/reach.py). A real open or update answers with the same counts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.orm import Session

from dispatcher.delivery import reach
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents import lifecycle, reports
from dispatcher.incidents.lifecycle import Extras, Posted
from dispatcher.models import IncidentIn, IncidentState, Scope, SegmentNote, Severity, clean_scope
from dispatcher.store import MAX_ID
from dispatcher.web.deps import OperatorDep, PipelineDep

IncidentId = Annotated[int, Path(ge=1, le=MAX_ID, description="the incident's id")]

router = APIRouter(prefix="/api/incidents", tags=["incidents"], dependencies=[OperatorDep])


DryRun = Annotated[
    bool, Query(description="count who would be told, on which channel; keep and send nothing")
]


class UpdateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: IncidentState = Field(description="investigating, identified, monitoring or resolved")
    message: str | None = Field(default=None, max_length=2000)
    affects: Scope | None = Field(
        default=None,
        description="the new scope ({} lifts it: everyone); absent: the scope stays as it was",
    )
    public: bool = Field(default=False, description="show a scoped incident publicly from now")
    notes: list[SegmentNote] = Field(default_factory=list, max_length=20)

    @field_validator("affects", mode="before")
    @classmethod
    def _affects(cls, value: object) -> Scope | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValueError("affects is an object of key: [values]")
        return clean_scope(value)

    def extras(self) -> Extras:
        return Extras(scope=self.affects, public=self.public, notes=self.notes)


class ApproveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, min_length=1, max_length=200)
    message: str | None = Field(default=None, max_length=2000)


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


def _announce(pipeline: Pipeline, posted: Posted) -> PostedOut:
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
    return _announce(pipeline, posted)


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
    """Post an update; state `resolved` resolves the incident."""
    extras = body.extras()

    def write(session: Session) -> Posted:
        if body.state is IncidentState.RESOLVED:
            return lifecycle.resolve_in(session, incident_id, body.message, extras)
        return lifecycle.update_in(session, incident_id, body.state, body.message, extras)

    return _post(pipeline, write, dry_run, response)


@router.post("/{incident_id}/approve")
def approve(pipeline: PipelineDep, incident_id: IncidentId, body: ApproveIn) -> PostedOut:
    """Publish a draft opened by a monitoring system, optionally reworded first."""
    posted = lifecycle.approve(pipeline.store, incident_id, title=body.title, message=body.message)
    return _announce(pipeline, posted)


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
