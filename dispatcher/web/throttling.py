"""The public routes' side of the sign-up throttle (dispatcher/subscribers/throttle.py): who the
client is, and what a refusal sets off.

The client is the peer that connected (`request.client.host`), unless that peer is one of
OUTAGE_TRUSTED_PROXIES: then it is the last address in X-Forwarded-For that is not one of them
(each proxy appends the peer it saw, so everything left of the first stranger is the client's own
say and is ignored). Without trusted proxies the header is never read: anyone can send one.

A refusal is counted (`outage_signups_refused_total{reason}`), answered by the route (429 for
this client or address, 503 while sign-up by text is paused, both with Retry-After), and the
budget's first refusal in its window posts the team's notice after the answer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import timedelta
from ipaddress import ip_address, ip_network

from fastapi import BackgroundTasks, Request
from fastapi.responses import JSONResponse

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.models import SubscriberIn
from dispatcher.ops import metrics
from dispatcher.policy import notices
from dispatcher.policy.promises import clock
from dispatcher.store import utcnow
from dispatcher.subscribers.throttle import Refused, Throttle

log = logging.getLogger(__name__)


def client_ip(request: Request, trusted_proxies: Sequence[str]) -> str:
    """The client's address, believing X-Forwarded-For only from a trusted proxy."""
    peer = request.client.host if request.client else ""
    if not _trusted(peer, trusted_proxies):
        return peer
    hops = [
        hop.strip()
        for header in request.headers.getlist("x-forwarded-for")
        for hop in header.split(",")
        if hop.strip()
    ]
    for hop in reversed(hops):
        if not _trusted(hop, trusted_proxies):
            return hop
    return hops[0] if hops else peer


def _trusted(address: str, networks: Sequence[str]) -> bool:
    try:
        parsed = ip_address(address)
    except ValueError:
        return False
    return any(parsed in ip_network(network) for network in networks)


def ask(
    request: Request,
    pipeline: Pipeline,
    background: BackgroundTasks,
    addresses: Mapping[str, str],
    *,
    client: str | None = None,
) -> Refused | None:
    """Count the confirmations to `addresses` this request asks for, or say why not now.
    `client`: the client's address when the caller has worked it out already."""
    throttle: Throttle = request.app.state.throttle
    who = client if client is not None else client_ip(request, pipeline.settings.trusted_proxies)
    refused = throttle.take(who, addresses)
    if refused is None:
        return None
    metrics.SIGNUPS_REFUSED.labels(refused.reason.value).inc()
    log.info("sign-up refused: %s, retry after %d s", refused.reason, refused.retry_after_s)
    if refused.tell_team:
        background.add_task(notices.tell_team, pipeline, budget_notice(pipeline, refused))
    return refused


def given(data: SubscriberIn) -> dict[str, str]:
    """The addresses a sign-up asks confirmations for, known or not (the throttle counts them
    alike, so its answer does not tell a known address from a new one either)."""
    addresses = {"email": data.email, "phone": data.phone}
    return {field: address for field, address in addresses.items() if address}


def budget_notice(pipeline: Pipeline, refused: Refused) -> str:
    """What the team is told when the confirmation texts' budget is spent."""
    resumes = clock(utcnow() + timedelta(seconds=refused.retry_after_s))
    return (
        "Sign-up by text paused: the confirmation budget is spent\n"
        f"The budget of {pipeline.settings.sms_confirmation_budget} confirmation texts is "
        f"spent; sign-up by text resumes by {resumes}, sign-up by email goes on. An attack "
        "(SMS pumping)? Nothing to do. Real demand? Raise OUTAGE_SMS_CONFIRMATION_BUDGET."
    )


def retry_after(refused: Refused) -> dict[str, str]:
    return {"Retry-After": str(refused.retry_after_s)}


def refusal(refused: Refused, background: BackgroundTasks) -> JSONResponse:
    """A refusal as the JSON API answers it: an answer, not a raised HTTPException, so that
    what it set off (the team's notice) still runs after it."""
    return JSONResponse(
        {"detail": refused.message},
        status_code=refused.http_status,
        headers=retry_after(refused),
        background=background,
    )
