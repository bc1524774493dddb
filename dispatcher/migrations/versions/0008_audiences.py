"""subscriber attributes, incident scope, segment notes, private incidents

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

Audiences by impact: an operator sets key/value attributes on subscribers (one row per pair,
indexed on key and value for choosing a scoped incident's audience); an incident has a scope
(who it affects, by attribute) and may be private (only on the private pages of those it
concerns); each update keeps the scope it set and its notes for segments.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subscriber_attributes",
        sa.Column(
            "subscriber_id",
            sa.Integer(),
            sa.ForeignKey("subscribers.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(64), nullable=False),
    )
    op.create_index(
        "ix_subscriber_attributes_key_value",
        "subscriber_attributes",
        ["key", "value", "subscriber_id"],
    )
    with op.batch_alter_table("incidents") as incidents:
        incidents.add_column(
            sa.Column("scope", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )
        incidents.add_column(
            sa.Column("private", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("incidents") as incidents:
        # Old incidents were for everyone they concern; new ones get their scope from the model.
        incidents.alter_column("scope", existing_type=sa.JSON(), server_default=None)
    with op.batch_alter_table("updates") as updates:
        updates.add_column(sa.Column("scope", sa.JSON(), nullable=True))
        updates.add_column(sa.Column("notes", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("updates") as updates:
        updates.drop_column("notes")
        updates.drop_column("scope")
    with op.batch_alter_table("incidents") as incidents:
        incidents.drop_column("private")
        incidents.drop_column("scope")
    op.drop_index("ix_subscriber_attributes_key_value", table_name="subscriber_attributes")
    op.drop_table("subscriber_attributes")
