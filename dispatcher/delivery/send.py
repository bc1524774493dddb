"""Sending a batch of deliveries, the one send path: claim the rows, prepare the messages, clear
the guards, hand them to the adapter, record the answers.

The order is the guarantee. A row is claimed with one atomic UPDATE (queued and due, or a lease
that expired) before anything is sent, so two workers holding the same task cannot both send it;
the outcome is recorded after each chunk is answered. A worker that dies between the two leaves a
lease that expires and the row is sent again: we err towards a duplicate rather than a customer
never told, and count it (`lease_expiries`, incremented by the claim that takes the row back).

A channel's share of a batch goes out in chunks, each cleared first by the provider's guards
(dispatcher/delivery/guards.py): its circuit breaker, then its account's rate bucket. What they
refuse is put back without counting as a try: due later when paced, and while the circuit is open
either sent on the subscriber's next working channel (recorded as a fallback) or held until the
probe.

Each step has its module, so this one reads as the sequence: the rows under the lease
(dispatcher/delivery/rows.py), the messages and what is skipped just before sending
(messages.py), and what an answer leads to, with the whole retry policy (outcomes.py).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from channels.base import Channel, Message, Outcome
from dispatcher.delivery.batch import Context, SendResult
from dispatcher.delivery.guards import Budget, Gate, Guards
from dispatcher.delivery.leases import Leases
from dispatcher.delivery.messages import Skipped, prepare, unbuildable
from dispatcher.delivery.outcomes import hold, record
from dispatcher.delivery.registry import ChannelRegistry
from dispatcher.delivery.rows import (
    Claimed,
    Loaded,
    Row,
    claim,
    load,
    mark_in_flight,
    recorded_rows,
    write,
)
from dispatcher.links import Links
from dispatcher.logs import log_attempt
from dispatcher.models import FailureKind
from dispatcher.policy.audience import address_of
from dispatcher.settings import Settings
from dispatcher.store import Store, retrying

if TYPE_CHECKING:
    from dispatcher.delivery.late import LateAnswers

# What a batch's caller needs (the call and its result), and what records a late answer.
__all__ = ["SendResult", "record_answers", "send_batch"]


def send_batch(
    store: Store,
    registry: ChannelRegistry,
    settings: Settings,
    links: Links,
    delivery_ids: Sequence[int],
    *,
    guards: Guards,
    leases: Leases,
    late: LateAnswers | None = None,
) -> SendResult:
    """Send those of `delivery_ids` that are due and held by no other worker, one channel at a
    time, highest priority first; what is left for the queue to do comes back. The claimed
    rows' leases are kept alive while the batch works on them (dispatcher/delivery/leases.py);
    answers that come after their chunk was recorded go to `late` (a webhook receiver taking
    its time), which records them."""
    claimed = claim(store, delivery_ids, settings.lease_s)
    result = SendResult()
    if not claimed:
        return result
    with leases.holding(claimed):
        budget = Budget(time.monotonic() + settings.lease_s / 2, settings.pace_max_wait_s)
        context = Context(store, registry, settings, links, guards, leases, claimed, late)
        by_channel: dict[str, list[Loaded]] = defaultdict(list)
        for item in load(store, list(claimed)):
            by_channel[item.delivery.channel].append(item)
        for channel_name, items in by_channel.items():
            _send_chunks(context, channel_name, items, budget, result)
    return result


def _send_chunks(
    context: Context,
    channel_name: str,
    items: list[Loaded],
    budget: Budget,
    result: SendResult,
) -> None:
    """Send one channel's share in the chunks its guards allow, recording each chunk as soon as
    it is answered, so a crash leaves at most one chunk's outcome unknown. A chunk is no larger
    than the adapter has in flight at once (`Channel.in_flight_limit`): what a crash leaves
    marked in flight was on its way, or answered and not yet recorded.

    A chunk is prepared (opt-outs checked again, newer updates looked for, messages rendered)
    before the guards are asked, so its requests leave as soon as the rate bucket grants them:
    asked first, a cold process's first chunk (templates compiled, the adapter built) reached the
    provider a quarter of a second after its grant, together with the next grant's chunk. Only
    messages to send take tokens; what is skipped is recorded with the chunk.

    A channel whose adapter cannot be built (a live credential missing) fails its share at once,
    naming what is missing, and each delivery falls back to the subscriber's next channel: the
    other channels of the batch send as usual."""
    try:
        channel = context.registry.get(channel_name)
    except ValueError as exc:
        _record_chunk(
            context, items, unbuildable(items, str(exc)), circuit_open=False, result=result
        )
        return
    pending = items
    revisited: set[int] = set()
    while pending:
        most = min(context.guards.chunk_size(channel_name, len(pending)), channel.in_flight_limit)
        window = pending[:most]
        outcomes, messages = prepare(context, channel, window)
        # Behind a newer update that may be in this very batch: looked at once more after the
        # rest of the channel's share, when that one has been sent (this one is superseded then).
        again = [
            item
            for item in window
            if _behind_newer(outcomes.get(item.delivery.id)) and item.delivery.id not in revisited
        ]
        for item in again:
            del outcomes[item.delivery.id]
            revisited.add(item.delivery.id)
        sending: list[Message] = []
        gate = Gate(0)
        if messages:
            gate = context.guards.gate(channel_name, len(messages), budget)
            if not gate.take:
                hold(context, pending, gate, result)
                return
            sending = messages[: gate.take]
        decided = {message.key for message in sending} | outcomes.keys()
        chunk = [item for item in window if item.delivery.id in decided]
        later = {item.delivery.id for item in again}
        pending = [
            *(i for i in window if i.delivery.id not in decided and i.delivery.id not in later),
            *pending[len(window) :],
            *again,
        ]
        if sending:
            ours = mark_in_flight(context.store, {m.key: context.claims[m.key] for m in sending})
            sending = [message for message in sending if message.key in ours]  # else taken back
            if sending:
                outcomes.update(_hand_over(context, channel, channel_name, gate, sending, chunk))
            # What is left: answers still to come (late), rows another worker took back.
            chunk = [item for item in chunk if item.delivery.id in outcomes]
        record_answers(context, channel_name, chunk, outcomes, result)


def _hand_over(
    context: Context,
    channel: Channel,
    channel_name: str,
    gate: Gate,
    sending: list[Message],
    chunk: list[Loaded],
) -> dict[int, Outcome]:
    """The adapter's answers to `sending`, on the tokens `gate` took. A channel with patience
    (webhooks) answers what came within it; the rest are recorded by `context.late` as they
    come, their rows' leases held until then."""
    tokens = context.guards.tokens(channel_name, gate)
    if channel.patience_s is None or context.late is None:
        return {answer.key: answer for answer in channel.send(sending, tokens=tokens)}
    keys = [message.key for message in sending]
    context.leases.hold(keys)  # before any answer can come, so a late one always has its hold
    awaited = context.late.awaiter(context, channel_name, chunk)
    answered = {a.key: a for a in channel.send_within(sending, awaited, tokens=tokens) if a}
    context.leases.release(answered)
    context.late.expect(len(keys) - len(answered))
    return answered


def record_answers(
    context: Context,
    channel_name: str,
    chunk: list[Loaded],
    outcomes: dict[int, Outcome | Skipped],
    result: SendResult,
) -> None:
    """Tell the provider's breaker how it answered, then record the chunk (its messages that
    never left included: opted out, unrenderable)."""
    context.guards.report(channel_name, outcomes.values())
    circuit_open = any(
        isinstance(o, Outcome) and o.failure is FailureKind.TRANSIENT for o in outcomes.values()
    ) and not context.guards.usable(channel_name)
    _record_chunk(context, chunk, outcomes, circuit_open=circuit_open, result=result)


def _behind_newer(outcome: Outcome | Skipped | None) -> bool:
    """Put back behind a newer update still on its way (messages.py `Skipped.until`)."""
    return isinstance(outcome, Skipped) and outcome.until is not None


def _record_chunk(
    context: Context,
    chunk: list[Loaded],
    outcomes: dict[int, Outcome | Skipped],
    *,
    circuit_open: bool,
    result: SendResult,
) -> None:
    """Record a chunk's answers in one transaction (one SELECT, one UPDATE per shape), tried
    again while the database is away: the answers exist nowhere else, and lost they would be
    sent again after the lease."""

    def attempt() -> list[tuple[Loaded, Row, Outcome | Skipped]]:
        attempted = SendResult()
        logged = []
        with context.store.session() as session:
            rows = recorded_rows(session, chunk, context.claims)  # those still ours
            for item in chunk:
                if (row := rows.get(item.delivery.id)) is None:
                    continue
                outcome = outcomes[item.delivery.id]
                record(session, context, row, item, outcome, circuit_open, attempted)
                logged.append((item, row, outcome))
            write(session, rows.values())
        result.add(attempted)  # only once the transaction committed
        return logged

    for item, row, outcome in retrying(attempt):
        _log(context, item, row, outcome)


def _log(context: Context, item: Loaded, recorded: Row, outcome: Outcome | Skipped) -> None:
    """One structured line per delivery attempt (dispatcher/logs.py masks the address)."""
    field = context.registry.factory(recorded.channel).address_field
    log_attempt(
        incident_id=item.incident.id if isinstance(item, Claimed) else None,
        update_id=item.delivery.update_id,
        delivery_id=recorded.id,
        channel=recorded.channel,
        status=recorded.status,
        to=address_of(item.subscriber, field) if item.subscriber and field else None,
        provider_id=recorded.provider_id,
        duration_s=outcome.duration_s if isinstance(outcome, Outcome) else None,
        attempts=recorded.attempts,
        reason=None if isinstance(outcome, Skipped) or outcome.ok else outcome.reason,
        error=recorded.last_error,
    )
