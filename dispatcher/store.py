"""SQLAlchemy tables and the engine: the database is the source of truth, SQLite or PostgreSQL.

Every incident update and every delivery is a row before anything is sent; the broker only says
"go look at row N". The unique key on deliveries (update, channel, recipient) is the delivery log
that makes a duplicated task harmless.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    false,
)
from sqlalchemy import Enum as SAEnum
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    attribute_keyed_dict,
    mapped_column,
    relationship,
    sessionmaker,
)

from dispatcher import migrations
from dispatcher.links import new_link_secret
from dispatcher.models import (
    Audience,
    DeliveryStatus,
    FailureReason,
    IncidentState,
    MessageKind,
    Severity,
    SuppressionReason,
    WaitReason,
)

log = logging.getLogger(__name__)
_T = TypeVar("_T")

MAX_ID = 2**63 - 1  # ids are 64-bit: anything larger names no row (and would overflow a bind)
PUBLIC_RECIPIENT = "public"  # the recipient key of a broadcast delivery (the company's account)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both databases (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use dispatcher.store.utcnow()")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _enum_column(enum: type[StrEnum]) -> SAEnum:
    """Enums stored as their values in a VARCHAR (no native type to migrate), read back as
    members."""
    return SAEnum(
        enum,
        native_enum=False,
        create_constraint=False,
        length=16,
        values_callable=lambda members: [member.value for member in members],
    )


class Base(DeclarativeBase):
    type_annotation_map = {
        datetime: UTCDateTime,
        dict[str, Any]: JSON,
        list[str]: JSON,
        IncidentState: _enum_column(IncidentState),
        Severity: _enum_column(Severity),
        DeliveryStatus: _enum_column(DeliveryStatus),
        SuppressionReason: _enum_column(SuppressionReason),
        Audience: _enum_column(Audience),
        FailureReason: _enum_column(FailureReason),
        MessageKind: _enum_column(MessageKind),
        WaitReason: _enum_column(WaitReason),
    }


class Subscriber(Base):
    __tablename__ = "subscribers"
    # Ids are never reused (SQLite would give an erased person's id to the next sign-up).
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    # Bound into every link of theirs (dispatcher/links.py); changed to sign all of them out.
    # NULL for a subscriber stored before there were secrets: their old links keep working.
    link_secret: Mapped[str | None] = mapped_column(String(32), default=new_link_secret)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    phone: Mapped[str | None] = mapped_column(String(32), index=True)
    webhook_url: Mapped[str | None] = mapped_column(Text)
    webhook_secret: Mapped[str | None] = mapped_column(String(64))
    channels: Mapped[list[str]] = mapped_column(JSON)  # in order of preference
    components: Mapped[list[str]] = mapped_column(JSON)  # empty: every component
    min_severity: Mapped[Severity]
    locale: Mapped[str] = mapped_column(String(8), default="en")
    # Double opt-in: nothing is sent to an email address or phone number before it is confirmed.
    email_confirmed_at: Mapped[datetime | None]
    phone_confirmed_at: Mapped[datetime | None]
    # A new address given through a link, waiting for its confirmation while the confirmed one
    # above keeps receiving (dispatcher/subscribers/preferences.py).
    pending_email: Mapped[str | None] = mapped_column(String(320))
    pending_phone: Mapped[str | None] = mapped_column(String(32))
    internal: Mapped[bool] = mapped_column(default=False)  # the team: drafts and internal notes
    tier: Mapped[int] = mapped_column(default=0)  # higher tiers are told first
    quiet_start: Mapped[str | None] = mapped_column(String(5))  # "22:00", in `timezone`
    quiet_end: Mapped[str | None] = mapped_column(String(5))  # "07:00"
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    unsubscribed_at: Mapped[datetime | None]
    # Loaded with the subscriber (one query per load, not per row), removed with it.
    attribute_rows: Mapped[dict[str, SubscriberAttribute]] = relationship(
        collection_class=attribute_keyed_dict("key"),
        cascade="all, delete-orphan",
        lazy="selectin",
        passive_deletes=True,
    )

    @property
    def attributes(self) -> dict[str, str]:
        """The operator's key/value pairs (region=eu-west), in key order."""
        return {key: self.attribute_rows[key].value for key in sorted(self.attribute_rows)}

    def set_attributes(self, values: dict[str, str]) -> None:
        """Make the attributes exactly `values` (validated slugs): rows changed in place, so a
        key that keeps its name keeps its row."""
        kept = dict(self.attribute_rows)
        rows = {}
        for key, value in values.items():
            rows[key] = kept.get(key) or SubscriberAttribute(key=key)
            rows[key].value = value
        self.attribute_rows = rows  # assigned, so that a new subscriber has its collection too


class SubscriberAttribute(Base):
    """One of a subscriber's attributes. A row per pair rather than JSON on the subscriber, so
    that choosing the audience of a scoped incident is an index lookup on (key, value) on SQLite
    and PostgreSQL alike (the index also holds the subscriber, so the lookup reads nothing else),
    and "has no such attribute" one on the primary key."""

    __tablename__ = "subscriber_attributes"
    __table_args__ = (Index("ix_subscriber_attributes_key_value", "key", "value", "subscriber_id"),)

    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(64))


# The subscriber column behind each adapter's declared `address_field`, and the column that says
# the address is confirmed (None: needs no confirmation, a webhook added by an operator).
ADDRESS_COLUMNS = {"email": "email", "phone": "phone", "webhook": "webhook_url"}
CONFIRMATION_COLUMNS: dict[str, str | None] = {
    "email": "email_confirmed_at",
    "phone": "phone_confirmed_at",
    "webhook": None,
}
# The column holding a new address that waits for its confirmation, for each confirmable field.
PENDING_COLUMNS = {"email": "pending_email", "phone": "pending_phone"}


class Suppression(Base):
    """An address that receives nothing more, whoever it belongs to now or later."""

    __tablename__ = "suppressions"
    __table_args__ = (UniqueConstraint("kind", "address"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # an address field: email, phone, webhook
    address: Mapped[str] = mapped_column(String(500))
    reason: Mapped[SuppressionReason]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEvent(Base):
    """Who changed what about a subscriber or an incident, for the operator's audit trail."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(64))  # operator, subscriber, provider:<name>, system
    action: Mapped[str] = mapped_column(String(64))
    subscriber_id: Mapped[int | None] = mapped_column(index=True)  # kept after deletion
    incident_id: Mapped[int | None] = mapped_column(index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Incident(Base):
    __tablename__ = "incidents"
    __table_args__ = (Index("ix_incidents_source_key", "source", "source_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    severity: Mapped[Severity]
    state: Mapped[IncidentState]
    components: Mapped[list[str]] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(32), default="operator")
    source_key: Mapped[str | None] = mapped_column(String(500))  # a monitoring group's key
    # A draft (opened by a machine) notifies only the internal audience until approved.
    draft: Mapped[bool] = mapped_column(default=False)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None]
    # All of a monitoring group's alerts cleared at this time; announced once it has held.
    resolve_pending_since: Mapped[datetime | None]
    eta: Mapped[datetime | None]  # estimated resolution, shown in every message until changed
    ends_at: Mapped[datetime | None]  # end of a scheduled maintenance window
    # Who it affects, by subscriber attribute: {"region": ["eu-west"]}; empty: everyone it
    # concerns. Widened or changed by later updates (each such update keeps the scope it set).
    # (No server default: PostgreSQL cannot compare JSON defaults; revision 0008 fills old rows.)
    scope: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Scoped and never made public: not on the status page, the feed or the company's X account,
    # only on the private pages of those it concerns. Once public, it stays public.
    private: Mapped[bool] = mapped_column(default=False, server_default=false())


class Alert(Base):
    """One monitoring alert's last known status; the group's alerts decide the incident."""

    __tablename__ = "alerts"
    __table_args__ = (UniqueConstraint("source", "group_key", "alert_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(32))
    group_key: Mapped[str] = mapped_column(String(500))
    alert_key: Mapped[str] = mapped_column(String(500))
    firing: Mapped[bool]
    component: Mapped[str] = mapped_column(String(200))
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"), index=True)
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class SourceTest(Base):
    """The last test a monitoring source sent (a "Test" button, a ping): what `outage doctor` and
    /metrics show, so an operator sees the set-up works end to end."""

    __tablename__ = "source_tests"

    source: Mapped[str] = mapped_column(String(32), primary_key=True)
    received_at: Mapped[datetime]


class Update(Base):
    __tablename__ = "updates"
    # A milestone (a maintenance notice, a post-incident review) is posted once per incident.
    __table_args__ = (UniqueConstraint("incident_id", "milestone"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    state: Mapped[IncidentState]
    message: Mapped[str | None] = mapped_column(Text)
    internal_note: Mapped[str | None] = mapped_column(Text)  # the team sees it; customers never
    # A service credit offered with a resolution: its own paragraph, never in the public post.
    credit_note: Mapped[str | None] = mapped_column(Text)
    review_url: Mapped[str | None] = mapped_column(Text)  # the post-incident review's address
    next_update_at: Mapped[datetime | None]  # the promise of the next update
    reminded_at: Mapped[datetime | None]  # the team was reminded of that promise
    audience: Mapped[Audience] = mapped_column(default=Audience.EVERYONE)
    milestone: Mapped[str | None] = mapped_column(String(32))
    # The incident's scope as this update set it; NULL: the update left the scope as it was.
    scope: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Notes for segments only: [{"segment": {"plan": ["enterprise"]}, "text": "…"}].
    notes: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The outbox marker: NULL until the fan-out has written every delivery row for this update.
    fanned_out_at: Mapped[datetime | None] = mapped_column(index=True)


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("update_id", "channel", "recipient", name="uq_delivery_once"),
        Index("ix_deliveries_status_due", "status", "due_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[MessageKind] = mapped_column(
        default=MessageKind.UPDATE, server_default=MessageKind.UPDATE.value
    )
    # The update it carries; None for a message that belongs to no update (a confirmation).
    update_id: Mapped[int | None] = mapped_column(ForeignKey("updates.id"), index=True)
    notice: Mapped[str | None] = mapped_column(Text)  # a notice's text (MessageKind.NOTICE)
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="SET NULL"), index=True
    )
    channel: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str] = mapped_column(String(32))  # subscriber id, or PUBLIC_RECIPIENT
    status: Mapped[DeliveryStatus] = mapped_column(default=DeliveryStatus.QUEUED)
    priority: Mapped[int] = mapped_column(Integer, default=0)  # higher goes first
    # Provider requests made, retries included: counted as each chunk leaves (a worker killed
    # before recording its answers has still made them).
    attempts: Mapped[int] = mapped_column(default=0)
    sends: Mapped[int] = mapped_column(default=0)  # rounds through the queue (the retry limit)
    last_error: Mapped[str | None] = mapped_column(Text)
    # The latest failed attempt's reason, kept after a later success (metrics count it).
    error_reason: Mapped[FailureReason | None]
    provider_id: Mapped[str | None] = mapped_column(String(128), index=True)
    fallback_of: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id"))
    due_at: Mapped[datetime] = mapped_column(default=utcnow)
    wait_reason: Mapped[WaitReason | None]  # why due_at is later than it was made, if it is
    lease_until: Mapped[datetime | None]
    # Claimed again after a lease expired: the provider may have accepted it the first time.
    lease_expiries: Mapped[int] = mapped_column(default=0)
    # Requests made after one whose answer left it unknown whether the provider took it (a
    # timeout, a 5xx), inside a send or through the queue: each may have delivered it again.
    # With lease_expiries, what "possibly sent twice" counts.
    ambiguous_retries: Mapped[int] = mapped_column(default=0, server_default="0")
    # Handed to the provider at this time and no outcome known yet: set while its chunk is with
    # the provider, and kept after an answer that leaves it unknown (a timeout, a 5xx). If the
    # lease expires while it is set, the reclaim counts a lease expiry; if the row is sent again
    # while it is set, the send counts an ambiguous retry.
    in_flight_since: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]  # from a provider's delivery receipt
    # Sent on a channel that gives receipts: with none by then, the next channel is tried.
    receipt_due_at: Mapped[datetime | None] = mapped_column(index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Receipt(Base):
    """A provider's delivery event, kept by the provider's own event id so a retried or
    duplicated callback changes nothing the second time."""

    __tablename__ = "receipts"
    __table_args__ = (UniqueConstraint("provider", "event_id", name="uq_receipt_once"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(16))  # twilio, sendgrid
    event_id: Mapped[str] = mapped_column(String(128))
    delivery_id: Mapped[int | None] = mapped_column(index=True)  # None: matched no delivery
    event: Mapped[str] = mapped_column(String(32))  # the provider's word, e.g. "undelivered"
    status: Mapped[str] = mapped_column(String(16))  # ours: dispatcher.models.ReceiptStatus
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class Heartbeat(Base):
    """A runner's last pass (the embedded runner, a Celery worker's sweep): how `outage doctor`
    tells "nothing is running" from "the queue is just empty"."""

    __tablename__ = "heartbeats"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)  # host:pid of the runner
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(16))  # embedded, celery


class RateBucket(Base):
    """A provider account's token bucket, shared by every process through the database when
    Redis is not the broker (dispatcher/delivery/ratelimit.py `DatabaseRateLimiter`)."""

    __tablename__ = "rate_buckets"

    key: Mapped[str] = mapped_column(String(160), primary_key=True)  # e.g. "sms:+15005550006"
    tokens: Mapped[float] = mapped_column(Double)
    at: Mapped[float] = mapped_column(Double)  # the database's clock (Unix seconds) last taken
    granted: Mapped[int] = mapped_column(default=0)  # what the last call took: 0, or all it asked


class BreakerCircuit(Base):
    """A provider account's circuit breaker, shared by every process through the database when
    Redis is not the broker (dispatcher/delivery/breaker.py `DatabaseCircuits`)."""

    __tablename__ = "breaker_circuits"

    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))  # a BreakerState's value
    failures: Mapped[int]
    until: Mapped[float] = mapped_column(Double)  # wall clock (Unix seconds), as the breaker's
    version: Mapped[int]  # bumped by every change: updates are optimistic


class InstanceSecret(Base):
    """The signing key of links when OUTAGE_SECRET_KEY is not set: made once, kept with the
    data, so links keep working across restarts without a secret in code or config."""

    __tablename__ = "instance_secrets"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))


# The database went away (restarted, the network dropped a connection): worth trying again
# once it is back, unlike an error in the statement itself.
DATABASE_AWAY = (OperationalError, InterfaceError)


def retrying(work: Callable[[], _T], *, tries: int = 5, wait_s: float = 1.0) -> _T:
    """`work()`, tried again a few times while the database is away: for writes whose data
    exists only in memory until they succeed (a provider's answers), so that a restart of a
    few seconds loses none of them. A pooled connection that died is replaced on the next try
    (`pool_pre_ping`)."""
    for attempt in range(1, tries + 1):
        try:
            return work()
        except DATABASE_AWAY:
            if attempt == tries:
                raise
            log.warning("database away; trying again in %g s (%d of %d)", wait_s, attempt, tries)
            time.sleep(wait_s)
    raise AssertionError("unreachable")  # pragma: no cover


def insert_ignoring_duplicates(session: Session, table: type[Base]) -> Any:
    """An INSERT … ON CONFLICT DO NOTHING for the session's database (SQLite or PostgreSQL):
    how every idempotent write here (deliveries, fallbacks, receipts, suppressions) is made."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(table).on_conflict_do_nothing()


def _normalise_url(url: str) -> str:
    """Let operators write the usual postgresql:// URL; we ship the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str) -> Engine:
    url = _normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection: Any, _record: Any) -> None:
            # WAL lets the CLI read while a worker writes; foreign keys are off by default.
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def read_schema(url: str) -> migrations.Schema:
    """Where the database's schema stands against this release, changing nothing."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return migrations.read(connection, Base.metadata)
    finally:
        engine.dispose()


def upgrade_schema(url: str) -> migrations.Upgrade:
    """Bring the database to this release's schema (`outage db upgrade`, and `outage serve` and
    `outage worker` at start with OUTAGE_AUTO_MIGRATE), keeping every row."""
    engine = make_engine(url)
    try:
        return migrations.upgrade(engine, Base.metadata)
    finally:
        engine.dispose()


class Store:
    """The engine and session factory. An empty database is created at this release's schema;
    one at another revision raises `migrations.SchemaMismatch` (`outage db upgrade` fixes it),
    so no ordinary command alters a schema nor fails later at a missing column."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        try:
            migrations.ensure(self.engine, Base.metadata)
        except BaseException:
            self.engine.dispose()
            raise

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back if it raises."""
        with self._sessions.begin() as session:
            yield session

    @contextmanager
    def rolled_back(self) -> Iterator[Session]:
        """A transaction that is always rolled back: what a write would do, without doing it
        (a dry run writes the incident and reads its audience, then keeps nothing)."""
        with self._sessions() as session:
            try:
                yield session
            finally:
                session.rollback()

    def instance_secret(self, name: str) -> str:
        """The named secret, created on first use (concurrent first uses agree on one)."""
        with self.session() as session:
            found = session.get(InstanceSecret, name)
            if found is not None:
                return found.value
        try:
            with self.session() as session:
                session.add(InstanceSecret(name=name, value=secrets.token_urlsafe(48)))
        except IntegrityError:
            pass  # another process made it first
        with self.session() as session:
            return session.get_one(InstanceSecret, name).value

    def close(self) -> None:
        self.engine.dispose()
