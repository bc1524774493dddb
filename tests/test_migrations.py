"""The schema's revisions: replayed, they build what the models describe, and revision 0001 is
what release 0.1.0 created.

The 0.1.0 database is made from tests/fixtures/schema-0.1.0/<dialect>.sql: the statements release
0.1.0's `create_all` ran, so neither the current models nor our revisions build it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Engine

from dispatcher import migrations
from dispatcher.store import Base, make_engine

RELEASE_0_1_0 = Path(__file__).parent / "fixtures" / "schema-0.1.0"


def _reset(engine: Engine) -> None:
    """No table of ours nor a revision stamp (the shared fixture drops the models' tables)."""
    Base.metadata.drop_all(engine)
    with engine.begin() as connection:
        connection.execute(text(f"DROP TABLE IF EXISTS {migrations.VERSION_TABLE}"))


def create_0_1_0(engine: Engine) -> None:
    """The schema exactly as release 0.1.0 created it."""
    script = (RELEASE_0_1_0 / f"{engine.dialect.name}.sql").read_text()
    body = "\n".join(line for line in script.splitlines() if not line.startswith("--"))
    with engine.begin() as connection:
        for statement in body.split(";"):
            if statement.strip():
                connection.exec_driver_sql(statement)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    made = make_engine(database_url)
    _reset(made)
    yield made
    made.dispose()


def _differences(engine: Engine, metadata: MetaData) -> list[Any]:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        return compare_metadata(context, metadata)


def test_the_latest_revision_is_what_the_models_say(engine: Engine) -> None:
    """Replaying every revision on an empty database gives the models' schema (what a fresh
    database gets at once): a column added to a model without a revision fails here."""
    with engine.begin() as connection:
        command.upgrade(migrations.config(connection), "head")
    differences = _differences(engine, Base.metadata)
    assert differences == [], (
        "the models and the revisions differ: add dispatcher/migrations/versions/"
        f"<next>_<what>.py (see dispatcher/migrations/__init__.py) for {differences}"
    )


def test_revision_0001_is_release_0_1_0(engine: Engine) -> None:
    create_0_1_0(engine)
    release = MetaData()
    release.reflect(engine)
    _reset(engine)
    with engine.begin() as connection:
        command.upgrade(migrations.config(connection), migrations.BASELINE)
    assert _differences(engine, release) == []
