"""link secrets, pending addresses, ids never reused

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

Every subscriber link is bound to a random per-subscriber secret (`link_secret`), changed on
erasure and on "send me a new link": a link for an old secret answers 410. An address changed
through a link waits beside the confirmed one (`pending_email`, `pending_phone`) until it is
confirmed. Subscriber ids are never reused: on SQLite the table is rebuilt with AUTOINCREMENT
(PostgreSQL's sequences never reuse ids). Rows of earlier releases keep a NULL secret: the links
already sent to them keep working until the subscriber asks for a new one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels = None
depends_on = None

COLUMNS = (
    ("link_secret", 32),
    ("pending_email", 320),
    ("pending_phone", 32),
)


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    with op.batch_alter_table(
        "subscribers",
        recreate="always" if sqlite else "auto",
        table_kwargs={"sqlite_autoincrement": True} if sqlite else {},
    ) as subscribers:
        for name, length in COLUMNS:
            subscribers.add_column(sa.Column(name, sa.String(length), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscribers") as subscribers:
        for name, _ in COLUMNS:
            subscribers.drop_column(name)
