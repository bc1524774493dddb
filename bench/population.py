"""The benchmark's subscribers, defined once so every design sends to exactly the same people.

Subscriber `i` is a pure function of `i` (channels, addresses, tier, locale, zone), so the
alternatives derive their targets from `spec(i)` without asking our database, and ours reads the
same people from rows written in bulk.

The mix (by i % 20): 45% email only, 15% SMS only, 10% SMS then email, 15% webhook only, 10%
email then webhook, 5% webhook then email; so each is told once, on their first channel: 55%
email, 25% SMS, 20% webhook. One in 50 is a key account (tier 1, told first); one in 10 reads
German, one in 8 lives in Berlin time. With `regions`, each also has a region attribute,
`r00`..`r99`, one region per run of 20 (a whole mix) in turn, so that a scope of the first P
regions hits P% of them with the same mix of channels, tiers and languages as everyone (exactly
so when N is a multiple of 2,000).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from more_itertools import chunked
from sqlalchemy import insert

from dispatcher.store import Store, Subscriber, SubscriberAttribute, utcnow

INSERT_CHUNK = 5000
_MIX: tuple[tuple[str, ...], ...] = (
    *[("email",)] * 9,
    *[("sms",)] * 3,
    *[("sms", "email")] * 2,
    *[("webhook",)] * 3,
    *[("email", "webhook")] * 2,
    ("webhook", "email"),
)


@dataclass(frozen=True)
class Spec:
    index: int
    channels: tuple[str, ...]
    tier: int
    locale: str
    timezone: str

    @property
    def name(self) -> str:
        return f"Subscriber {self.index}"

    @property
    def email(self) -> str | None:
        return f"s{self.index}@example.org" if "email" in self.channels else None

    @property
    def phone(self) -> str | None:
        return f"+1555{self.index:07d}" if "sms" in self.channels else None

    @property
    def webhook_url(self) -> str | None:
        if "webhook" not in self.channels:
            return None
        return f"https://hooks.example{self.index % 50}.com/outage/{self.index}"

    @property
    def first_channel(self) -> str:
        return self.channels[0]

    def address(self, channel: str) -> str:
        value = {"email": self.email, "sms": self.phone, "webhook": self.webhook_url}[channel]
        assert value is not None
        return value


def spec(index: int) -> Spec:
    return Spec(
        index=index,
        channels=_MIX[index % len(_MIX)],
        tier=1 if index % 50 == 0 else 0,
        locale="de" if index % 10 == 3 else "en",
        timezone="Europe/Berlin" if index % 8 == 5 else "UTC",
    )


def region(index: int) -> str:
    return f"r{index // len(_MIX) % 100:02d}"


def scope(percent: int) -> dict[str, list[str]]:
    """The scope hitting `percent`% of a population written with `regions`."""
    return {"region": [f"r{bucket:02d}" for bucket in range(percent)]}


def in_scope(n: int, percent: int) -> int:
    """How many of subscribers 0..n-1 that scope hits."""
    return sum(1 for index in range(n) if int(region(index)[1:]) < percent)


def populate(
    store: Store, n: int, first_channel: str | None = None, *, regions: bool = False
) -> None:
    """Write subscribers 0..n-1 in bulk (all confirmed, following every component); with
    `first_channel`, only those told on it (the same people Apprise is given); with `regions`,
    each with their region attribute."""
    now = utcnow()
    for chunk in chunked(range(n), INSERT_CHUNK):
        rows = []
        indices = []
        for index in chunk:
            s = spec(index)
            if first_channel is not None and s.first_channel != first_channel:
                continue
            indices.append(index)
            rows.append(
                {
                    "name": s.name,
                    "email": s.email,
                    "phone": s.phone,
                    "webhook_url": s.webhook_url,
                    "webhook_secret": secrets.token_urlsafe(32) if s.webhook_url else None,
                    "channels": list(s.channels),
                    "components": [],
                    "min_severity": "minor",
                    "locale": s.locale,
                    "email_confirmed_at": now if s.email else None,
                    "phone_confirmed_at": now if s.phone else None,
                    "internal": False,
                    "tier": s.tier,
                    "timezone": s.timezone,
                    "created_at": now,
                }
            )
        if not rows:
            continue
        with store.session() as session:
            if not regions:
                session.execute(insert(Subscriber), rows)
                continue
            ids = session.scalars(
                insert(Subscriber).returning(Subscriber.id, sort_by_parameter_order=True), rows
            ).all()
            session.execute(
                insert(SubscriberAttribute),
                [
                    {"subscriber_id": subscriber_id, "key": "region", "value": region(index)}
                    for subscriber_id, index in zip(ids, indices, strict=True)
                ],
            )


def channel_counts(n: int) -> dict[str, int]:
    """Deliveries per channel for n subscribers (first channels), without the public post."""
    counts: dict[str, int] = {}
    for index in range(n):
        channel = spec(index).first_channel
        counts[channel] = counts.get(channel, 0) + 1
    return counts
