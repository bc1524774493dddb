"""monitoring sources' own tests

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

A monitoring source's own test (Grafana's or Uptime Kuma's "Test" button, PagerDuty's ping)
never opens an incident: the last one received per source is kept, for `outage doctor` and
/metrics to show that the set-up works.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "source_tests",
        sa.Column("source", sa.String(32), primary_key=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("source_tests")
