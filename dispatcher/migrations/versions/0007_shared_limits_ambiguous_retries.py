"""shared rate buckets and circuits, ambiguous retries

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

Provider limits are held on every broker: when Redis is not the broker (RabbitMQ, the embedded
default), a provider account's token bucket and circuit breaker are one row each, shared by
every process. Every message that may have reached the provider twice is counted: a retry
inside a send after a timeout or an ambiguous 5xx adds to `ambiguous_retries`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as deliveries:
        deliveries.add_column(
            sa.Column("ambiguous_retries", sa.Integer(), nullable=False, server_default="0")
        )
    op.create_table(
        "rate_buckets",
        sa.Column("key", sa.String(160), primary_key=True),
        sa.Column("tokens", sa.Double(), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("granted", sa.Integer(), nullable=False),
    )
    op.create_table(
        "breaker_circuits",
        sa.Column("key", sa.String(160), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("until", sa.Double(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("breaker_circuits")
    op.drop_table("rate_buckets")
    with op.batch_alter_table("deliveries") as deliveries:
        deliveries.drop_column("ambiguous_retries")
