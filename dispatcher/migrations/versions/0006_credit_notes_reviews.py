"""credit notes and review links

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

The credit note offered with a resolution is its own paragraph in every message (never in the
public post), and a post-incident review is a message of its own kind with its link: both are
kept on the update rather than folded into its message text.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("updates") as updates:
        updates.add_column(sa.Column("credit_note", sa.Text(), nullable=True))
        updates.add_column(sa.Column("review_url", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("updates") as updates:
        updates.drop_column("review_url")
        updates.drop_column("credit_note")
