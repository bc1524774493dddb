"""Audiences by impact: which subscribers an incident's scope (and an update's segment note)
reaches, by the attributes an operator set on them.

A scope names, per key, the values affected: `{"region": ["eu-west", "us-east"], "plan":
["enterprise"]}` reaches a subscriber whose region is either of the two *and* whose plan is
enterprise (OR within a key, AND across keys). A subscriber without one of those attributes is
told or not by `OUTAGE_UNSCOPED`: `include` (the default: when in doubt, tell) or `exclude`. A
segment note is stricter: only a subscriber who has the attribute is in the segment.

The same rule is written twice, once as SQL (`sql_condition`, how the audience is streamed, so
the database picks the subscribers through the (key, value) index rather than Python reading all
of them) and once in Python (`matches`, for the handful of rows a page or a send batch holds).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy import ColumnElement, and_, exists, or_, select, true

from dispatcher.errors import OutageError
from dispatcher.models import Scope, clean_scope, slug
from dispatcher.store import Subscriber, SubscriberAttribute

INCLUDE = "include"  # OUTAGE_UNSCOPED: a subscriber without the attribute is told


class ScopeError(OutageError):
    """A `key=value` that cannot be read; the message starts with the option at fault."""


def pair(text: str, option: str) -> tuple[str, str]:
    """`key=value` as two slugs, or ScopeError naming `option`."""
    key, sign, value = text.partition("=")
    if not sign or not key.strip() or not value.strip():
        raise ScopeError(f"{option}: {text!r} is not key=value (e.g. region=eu-west)")
    try:
        return slug(key, "key"), slug(value, key.strip().lower())
    except ValueError as exc:
        raise ScopeError(f"{option}: {exc}") from None


def scope_of(items: Iterable[str], option: str) -> Scope:
    """`--affects region=eu-west --affects region=us-east --affects plan=x` as a scope."""
    found: dict[str, list[str]] = {}
    for item in items:
        key, value = pair(item, option)
        found.setdefault(key, []).append(value)
    try:
        return clean_scope(found)
    except ValueError as exc:
        raise ScopeError(f"{option}: {exc}") from None


def describe(scope: Mapping[str, Sequence[str]]) -> str:
    """ "region=eu-west,us-east plan=enterprise": a scope as an operator typed it."""
    return " ".join(f"{key}={','.join(values)}" for key, values in sorted(scope.items()))


def matches(
    scope: Mapping[str, Sequence[str]], attributes: Mapping[str, str], unscoped: str = INCLUDE
) -> bool:
    """Whether a subscriber with `attributes` is in `scope` (an empty scope holds everyone)."""
    for key, values in scope.items():
        value = attributes.get(key)
        if value is None:
            if unscoped != INCLUDE:
                return False
        elif value not in values:
            return False
    return True


def in_segment(segment: Mapping[str, Sequence[str]], attributes: Mapping[str, str]) -> bool:
    """Whether a segment note is for this subscriber: every key present and matching."""
    return matches(segment, attributes, unscoped="exclude")


def sql_condition(scope: Mapping[str, Sequence[str]], unscoped: str) -> ColumnElement[bool]:
    """`matches` as a condition on the subscribers table. A value is found through the index on
    (key, value, subscriber_id); "has no such attribute" through the primary key."""
    conditions: list[ColumnElement[bool]] = []
    for key, values in sorted(scope.items()):
        has_value = Subscriber.id.in_(
            select(SubscriberAttribute.subscriber_id).where(
                SubscriberAttribute.key == key, SubscriberAttribute.value.in_(list(values))
            )
        )
        if unscoped == INCLUDE:
            lacks = ~exists().where(
                SubscriberAttribute.subscriber_id == Subscriber.id, SubscriberAttribute.key == key
            )
            conditions.append(or_(has_value, lacks))
        else:
            conditions.append(has_value)
    return and_(true(), *conditions)


def widened(old: Mapping[str, Sequence[str]], new: Mapping[str, Sequence[str]]) -> Scope:
    """The smallest scope holding both (two alerts of one group, in two regions): a key stays
    only where both name it, with the values of either; an empty scope (everyone) stays so."""
    if not old or not new:
        return {}
    return clean_scope({key: [*old[key], *new[key]] for key in old.keys() & new.keys()})
