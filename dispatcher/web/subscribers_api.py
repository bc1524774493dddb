"""`/api/subscribers`: public sign-up, and the operator's subscriber API for integrators.

    POST   /api/subscribers             without a token: public sign-up (pending until each
                                        address is confirmed); with the operator token: add
    GET    /api/subscribers             list (operator)        ?limit=&offset=
    GET    /api/subscribers/export      CSV or JSON (operator) ?format=csv|json
    GET    /api/subscribers/{id}        one (operator)
    PATCH  /api/subscribers/{id}        change preferences and attributes (operator)
    DELETE /api/subscribers/{id}        erase the person (operator); statistics stay anonymous

The public sign-up answers the same whether the address is new or already known, so it cannot
be used to find out who subscribes; a known address is not subscribed twice, and gets its
pending confirmation again instead, within the throttle's limits (per client, per address, and
the budget of confirmation texts: 429 or 503 with Retry-After, dispatcher/web/throttling.py).
Confirmations are sent after the answer (a background task), because a request never waits for
a provider. Every change is validated by the same rules as the CLI (`SubscriberIn`, merged over
the stored subscriber for a PATCH), and bad input is a 422 whose `loc` names the field. An
unknown id is a 404, answered by the app's OutageError handler.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Body, HTTPException, Path, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.models import Severity, SubscriberIn
from dispatcher.store import Subscriber
from dispatcher.subscribers import confirmations, preferences, records
from dispatcher.subscribers.records import SubscriberError
from dispatcher.web import throttling
from dispatcher.web.deps import OperatorDep, PipelineDep, require_operator

router = APIRouter(prefix="/api/subscribers", tags=["subscribers"])

# Fields only an operator may set: vouching for addresses, the team, key accounts, webhooks,
# and attributes (which decide the incidents a subscriber hears of).
OPERATOR_ONLY = ("confirmed", "internal", "tier", "webhook", "attributes")
PATCHABLE = (*SubscriberIn.model_fields, "unsubscribed")
EXPORT_COLUMNS = (
    "id",
    "name",
    "email",
    "phone",
    "webhook",
    "channels",
    "components",
    "min_severity",
    "locale",
    "internal",
    "tier",
    "quiet_start",
    "quiet_end",
    "timezone",
    "email_confirmed",
    "phone_confirmed",
    "unsubscribed",
    "created_at",
)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
MAX_ID = 2**31 - 1  # ids are INTEGER on PostgreSQL; a larger number is a 422, not a driver error
SubscriberId = Annotated[int, Path(ge=1, le=MAX_ID)]


class SubscriberOut(BaseModel):
    """A subscriber with their preferences and consent, as the API and the export show it."""

    id: int
    name: str
    email: str | None
    phone: str | None
    webhook: str | None
    channels: list[str]
    components: list[str]
    min_severity: Severity
    locale: str
    internal: bool
    tier: int
    quiet_start: str | None
    quiet_end: str | None
    timezone: str
    attributes: dict[str, str]
    email_confirmed: bool
    phone_confirmed: bool
    pending_email: str | None = None  # a new address the subscriber gave, not yet confirmed
    pending_phone: str | None = None
    unsubscribed: bool
    created_at: datetime
    webhook_secret: str | None = None  # only in the answer that made the webhook's secret


class SignupAccepted(BaseModel):
    status: Literal["pending"] = "pending"
    message: str = "Check your messages: confirm each address to start receiving updates."


def _invalid(errors: list[tuple[tuple[str | int, ...], str, str]]) -> RequestValidationError:
    """A 422 in FastAPI's own shape: each error's `loc` starts with "body" and names the field."""
    return RequestValidationError(
        [{"type": kind, "loc": ("body", *loc), "msg": msg} for loc, kind, msg in errors]
    )


def _from_pydantic(exc: ValidationError) -> RequestValidationError:
    return _invalid(
        [
            (tuple(e["loc"]), e["type"], e["msg"])
            for e in exc.errors(include_url=False, include_context=False, include_input=False)
        ]
    )


def _from_subscriber_error(exc: SubscriberError) -> RequestValidationError:
    field, _, message = str(exc).partition(": ")
    return _invalid([((field,), "value_error", message)])


def _out(subscriber: Subscriber, *, with_secret: bool = False) -> SubscriberOut:
    return SubscriberOut.model_validate(records.as_dict(subscriber, with_secret=with_secret))


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=None)
def sign_up(
    request: Request,
    pipeline: PipelineDep,
    background: BackgroundTasks,
    body: SubscriberIn,
    response: Response,
) -> SignupAccepted | SubscriberOut | Response:
    """Sign up (public; 202, pending double opt-in), or add a subscriber (operator token; 201).

    The public form takes name, email, phone, channels, components, min_severity, locale and
    quiet hours; `confirmed`, `internal`, `tier` and `webhook` need the operator token.
    """
    if request.headers.get("authorization"):
        require_operator(request, pipeline.settings)
        return _operator_add(pipeline, background, body, response)
    if not pipeline.settings.signup_enabled:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="public sign-up is switched off")
    forbidden = [name for name in OPERATOR_ONLY if name in body.model_fields_set]
    if forbidden:
        raise _invalid(
            [((name,), "forbidden", "only an operator may set this") for name in forbidden]
        )
    offered = preferences.known_components(pipeline.store, pipeline.settings)
    try:
        records.check_sign_up(pipeline.registry, body, offered)
        refused = throttling.ask(request, pipeline, background, throttling.given(body))
        if refused is not None:
            return throttling.refusal(refused, background)
        known_id = records.sign_up(pipeline.store, pipeline.registry, body, offered)
    except SubscriberError as exc:
        raise _from_subscriber_error(exc) from None
    background.add_task(confirmations.request, pipeline, known_id)
    return SignupAccepted()


def _operator_add(
    pipeline: Pipeline, background: BackgroundTasks, body: SubscriberIn, response: Response
) -> SubscriberOut:
    try:
        added = records.add(pipeline.store, pipeline.registry, body)
    except SubscriberError as exc:
        raise _from_subscriber_error(exc) from None
    if not body.confirmed:
        background.add_task(confirmations.request, pipeline, added.id)
    response.status_code = status.HTTP_201_CREATED
    return _out(added, with_secret=True)


@router.get("", dependencies=[OperatorDep])
def list_subscribers(
    pipeline: PipelineDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> list[SubscriberOut]:
    """Subscribers in id order, a page at a time."""
    return [_out(s) for s in records.list_all(pipeline.store, limit=limit, offset=offset)]


@router.get("/export", dependencies=[OperatorDep], response_model=None)
def export(
    pipeline: PipelineDep, fmt: Annotated[Literal["csv", "json"], Query(alias="format")] = "json"
) -> Response:
    """Every subscriber with their preferences; the CSV imports back with `outage subscriber
    import` (export-only columns are ignored there)."""
    rows = [_out(s) for s in records.list_all(pipeline.store)]
    stamp = f"subscribers-{datetime.now().date().isoformat()}"
    if fmt == "json":
        body = json.dumps([row.model_dump(mode="json", exclude={"webhook_secret"}) for row in rows])
        return Response(
            body,
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="{stamp}.json"'},
        )
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    keys = sorted({key for row in rows for key in row.attributes})
    writer.writerow([*EXPORT_COLUMNS, *(f"{records.CSV_ATTRIBUTE_PREFIX}{key}" for key in keys)])
    for row in rows:
        data = row.model_dump(mode="json")
        writer.writerow(
            [_csv_cell(name, data[name]) for name in EXPORT_COLUMNS]
            + [row.attributes.get(key, "") for key in keys]
        )
    return Response(
        buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{stamp}.csv"'},
    )


def _csv_cell(name: str, value: Any) -> str:
    """Lists joined by ';' (as the import reads them); free text that a spreadsheet would run
    as a formula is quoted with a leading apostrophe. Phone numbers are validated E.164, whose
    leading '+' is no formula, so they are left as they are for the import."""
    if value is None:
        return ""
    if isinstance(value, list):
        value = ";".join(str(item) for item in value)
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if name != "phone" and text.startswith(FORMULA_STARTS):
        return "'" + text
    return text


@router.get("/{subscriber_id}", dependencies=[OperatorDep])
def get_subscriber(pipeline: PipelineDep, subscriber_id: SubscriberId) -> SubscriberOut:
    return _out(preferences.get(pipeline.store, subscriber_id))


@router.patch("/{subscriber_id}", dependencies=[OperatorDep])
def patch_subscriber(
    pipeline: PipelineDep,
    background: BackgroundTasks,
    subscriber_id: SubscriberId,
    body: Annotated[
        dict[str, Any],
        Body(
            description="Any SubscriberIn fields, and `unsubscribed` (true/false); a new email "
            "or phone starts unconfirmed unless `confirmed` is true. `attributes` sets the keys "
            "given and removes those given as null; the others stay.",
            examples=[
                {"channels": ["email", "sms"], "quiet_start": "22:00", "quiet_end": "07:00"},
                {"attributes": {"region": "eu-west", "plan": None}},
            ],
        ),
    ],
) -> SubscriberOut:
    """Change a subscriber; only the fields given change."""
    unknown = [name for name in body if name not in PATCHABLE]
    if unknown:
        raise _invalid([((name,), "extra_forbidden", "unknown field") for name in unknown])
    changes = dict(body)
    unsubscribed = changes.pop("unsubscribed", None)
    if unsubscribed is not None and not isinstance(unsubscribed, bool):
        raise _invalid([(("unsubscribed",), "bool_type", "must be true or false")])
    attributes = changes.pop("attributes", None)
    if attributes is not None and not (
        isinstance(attributes, dict)
        and all(isinstance(v, str) or v is None for v in attributes.values())
    ):
        raise _invalid(
            [(("attributes",), "dict_type", "an object of key: value (null removes the key)")]
        )
    try:
        saved = preferences.update_preferences(
            pipeline.store,
            pipeline.registry,
            subscriber_id,
            changes,
            actor="operator",
            attributes=attributes,
        )
        if unsubscribed is True:
            preferences.unsubscribe_all(pipeline.store, subscriber_id, actor="operator")
        elif unsubscribed is False:
            preferences.resubscribe(pipeline.store, subscriber_id, actor="operator")
        current = preferences.get(pipeline.store, subscriber_id)
    except ValidationError as exc:
        raise _from_pydantic(exc) from None
    except SubscriberError as exc:
        raise _from_subscriber_error(exc) from None
    if saved.to_confirm:
        background.add_task(confirmations.request, pipeline, subscriber_id, saved.to_confirm)
    return _out(current, with_secret=saved.webhook_secret_issued)


@router.delete(
    "/{subscriber_id}", dependencies=[OperatorDep], status_code=status.HTTP_204_NO_CONTENT
)
def delete_subscriber(pipeline: PipelineDep, subscriber_id: SubscriberId) -> None:
    """Erase the subscriber's addresses and preferences; their opt-outs and anonymous delivery
    statistics stay."""
    preferences.erase(pipeline.store, subscriber_id, actor="operator")
