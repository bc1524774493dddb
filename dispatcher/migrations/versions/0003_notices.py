"""notices to the team

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

A notice to the team (the sign-up budget of confirmation texts is spent) is a delivery row of
its own kind, MessageKind.NOTICE: it carries its text, since it belongs to no update.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as deliveries:
        deliveries.add_column(sa.Column("notice", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as deliveries:
        deliveries.drop_column("notice")
