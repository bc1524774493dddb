"""release 0.1.0

Revision ID: 0001
Revises:
Create Date: 2026-01-01

The schema release 0.1.0 created with `create_all`, written out column by column rather than
generated from the models, so it stays what 0.1.0 databases have whatever the models become.
Enums are VARCHAR(16) of their values, datetimes carry a time zone; the only defaults are the
application's own (none in the database).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "subscribers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("phone", sa.String(32), nullable=True),
        sa.Column("webhook_url", sa.Text(), nullable=True),
        sa.Column("webhook_secret", sa.String(64), nullable=True),
        sa.Column("channels", sa.JSON(), nullable=False),
        sa.Column("components", sa.JSON(), nullable=False),
        sa.Column("min_severity", sa.String(16), nullable=False),
        sa.Column("locale", sa.String(8), nullable=False),
        _timestamp("email_confirmed_at", nullable=True),
        _timestamp("phone_confirmed_at", nullable=True),
        sa.Column("internal", sa.Boolean(), nullable=False),
        sa.Column("tier", sa.Integer(), nullable=False),
        sa.Column("quiet_start", sa.String(5), nullable=True),
        sa.Column("quiet_end", sa.String(5), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=False),
        _timestamp("created_at"),
        _timestamp("unsubscribed_at", nullable=True),
    )
    op.create_index("ix_subscribers_email", "subscribers", ["email"])
    op.create_index("ix_subscribers_phone", "subscribers", ["phone"])

    op.create_table(
        "suppressions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("address", sa.String(500), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        _timestamp("created_at"),
        sa.UniqueConstraint("kind", "address"),
    )

    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        _timestamp("at"),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("incident_id", sa.Integer(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_index("ix_audit_events_incident_id", "audit_events", ["incident_id"])
    op.create_index("ix_audit_events_subscriber_id", "audit_events", ["subscriber_id"])

    op.create_table(
        "incidents",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("components", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("source_key", sa.String(500), nullable=True),
        sa.Column("draft", sa.Boolean(), nullable=False),
        _timestamp("started_at"),
        _timestamp("resolved_at", nullable=True),
        _timestamp("resolve_pending_since", nullable=True),
        _timestamp("eta", nullable=True),
        _timestamp("ends_at", nullable=True),
    )
    op.create_index("ix_incidents_source_key", "incidents", ["source", "source_key"])

    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("group_key", sa.String(500), nullable=False),
        sa.Column("alert_key", sa.String(500), nullable=False),
        sa.Column("firing", sa.Boolean(), nullable=False),
        sa.Column("component", sa.String(200), nullable=False),
        sa.Column("incident_id", sa.Integer(), sa.ForeignKey("incidents.id"), nullable=True),
        _timestamp("changed_at"),
        _timestamp("last_seen_at"),
        sa.UniqueConstraint("source", "group_key", "alert_key"),
    )
    op.create_index("ix_alerts_incident_id", "alerts", ["incident_id"])

    op.create_table(
        "updates",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("incident_id", sa.Integer(), sa.ForeignKey("incidents.id"), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("internal_note", sa.Text(), nullable=True),
        _timestamp("next_update_at", nullable=True),
        _timestamp("reminded_at", nullable=True),
        sa.Column("audience", sa.String(16), nullable=False),
        sa.Column("milestone", sa.String(32), nullable=True),
        _timestamp("created_at"),
        _timestamp("fanned_out_at", nullable=True),
        sa.UniqueConstraint("incident_id", "milestone"),
    )
    op.create_index("ix_updates_fanned_out_at", "updates", ["fanned_out_at"])
    op.create_index("ix_updates_incident_id", "updates", ["incident_id"])

    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("update_id", sa.Integer(), sa.ForeignKey("updates.id"), nullable=False),
        sa.Column(
            "subscriber_id",
            sa.Integer(),
            sa.ForeignKey("subscribers.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("recipient", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("sends", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("error_reason", sa.String(16), nullable=True),
        sa.Column("provider_id", sa.String(128), nullable=True),
        sa.Column("fallback_of", sa.Integer(), sa.ForeignKey("deliveries.id"), nullable=True),
        _timestamp("due_at"),
        _timestamp("lease_until", nullable=True),
        sa.Column("lease_expiries", sa.Integer(), nullable=False),
        _timestamp("in_flight_since", nullable=True),
        _timestamp("created_at"),
        _timestamp("sent_at", nullable=True),
        _timestamp("delivered_at", nullable=True),
        _timestamp("receipt_due_at", nullable=True),
        _timestamp("updated_at"),
        sa.UniqueConstraint("update_id", "channel", "recipient", name="uq_delivery_once"),
    )
    op.create_index("ix_deliveries_provider_id", "deliveries", ["provider_id"])
    op.create_index("ix_deliveries_receipt_due_at", "deliveries", ["receipt_due_at"])
    op.create_index("ix_deliveries_status_due", "deliveries", ["status", "due_at"])
    op.create_index("ix_deliveries_subscriber_id", "deliveries", ["subscriber_id"])
    op.create_index("ix_deliveries_update_id", "deliveries", ["update_id"])

    op.create_table(
        "receipts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("delivery_id", sa.Integer(), nullable=True),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _timestamp("received_at"),
        sa.UniqueConstraint("provider", "event_id", name="uq_receipt_once"),
    )
    op.create_index("ix_receipts_delivery_id", "receipts", ["delivery_id"])

    op.create_table(
        "instance_secrets",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.String(128), nullable=False),
    )
