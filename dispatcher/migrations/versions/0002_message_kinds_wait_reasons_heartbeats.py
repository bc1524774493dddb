"""message kinds, wait reasons, heartbeats

Revision ID: 0002
Revises: 0001
Create Date: 2026-01-02

One send path for every message: a delivery says what kind of message it carries, and one that
belongs to no update (a confirmation) has no update_id; rows of 0.1.0 were all updates. A delivery
says why it waits (pacing, quiet hours) when it does. Runners leave a heartbeat, so `outage
doctor` tells "nothing is running" from "the queue is empty".
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as deliveries:
        deliveries.add_column(
            sa.Column("kind", sa.String(16), nullable=False, server_default="update")
        )
        deliveries.alter_column("update_id", existing_type=sa.Integer(), nullable=True)
        deliveries.add_column(sa.Column("wait_reason", sa.String(16), nullable=True))

    op.create_table(
        "heartbeats",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
    )
    op.create_index("ix_heartbeats_at", "heartbeats", ["at"])
