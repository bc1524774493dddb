"""The schema's history: Alembic revisions shipped in the package and run from code.

`create_all` makes missing tables but never alters one, so a deployment that upgraded kept its old
tables and failed at the first new column. Every change to the schema is now a revision file in
`versions/`, and a database records the revision it is at (the `alembic_version` table). 0001 is
release 0.1.0's schema written out by hand, so it stays true whatever the models become.

What a process does with it (`dispatcher.store.Store` at start, `ensure`):
- an empty database is created at the latest revision (head) in one step, `create_all` and a
  stamp, not by replaying the history (the test suite makes hundreds of databases);
- a database at head is used as it is;
- any other is refused with one line naming its revision and `outage db upgrade`: an ordinary
  command never alters a schema behind the operator's back. `outage serve` and `outage worker`
  upgrade at start when `OUTAGE_AUTO_MIGRATE=true`.

A 0.1.0 database predates the history: it has the tables and no `alembic_version`. It counts as
the baseline revision, and is stamped so before it is upgraded.

Several processes may start at once (workers with auto-migrate): creating and upgrading take a
lock and read the revision again under it, so the second finds nothing left to do. On PostgreSQL
it is a transaction-scoped advisory lock; on SQLite the database's write lock (BEGIN IMMEDIATE).
Both databases run the DDL inside that transaction, so a failed upgrade leaves the old schema.
Upgrades go forward only: a release is rolled back by restoring the backup taken before.

Adding a column: change the model, then add `versions/<NNNN>_<what>.py` with `revision` the next
number and `down_revision` the previous head, altering tables through `op.batch_alter_table` (on
SQLite an ALTER is a copy of the table). `tests/test_migrations.py` fails until head matches the
models, and names the difference.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, inspect, text
from sqlalchemy.engine import Connection, Engine

from dispatcher.errors import OutageError

BASELINE = "0001"  # release 0.1.0, whose databases carry no revision
VERSION_TABLE = "alembic_version"
# Names our lock among the PostgreSQL server's advisory locks (any constant no other app uses).
ADVISORY_LOCK_KEY = 0x6F75_7461_6765  # "outage"
UPGRADE_HINT = "run `outage db upgrade`"


class SchemaMismatch(OutageError):
    """The database is not at the revision this release needs; the message is one line saying
    what to run. The API answers 503: the service cannot work until the operator upgrades."""

    http_status = 503


@dataclass(frozen=True)
class Schema:
    """Where a database's schema stands against this release."""

    current: str | None  # the revision the database records; None: not stamped
    head: str  # the latest revision this release knows
    empty: bool  # none of our tables exists yet (a stale stamp without them counts as empty)

    @property
    def revision(self) -> str | None:
        """The revision its tables are at: the stamp, or the baseline for an unstamped 0.1.0
        database; None when there are no tables."""
        if self.empty:
            return None
        return self.current or BASELINE

    @property
    def known(self) -> bool:
        """False for a revision of a newer release (it upgraded this database)."""
        return self.revision is None or self.revision in _revisions()

    @property
    def pending(self) -> list[str]:
        """The revisions an upgrade would run, oldest first, each as `id (what it does)`."""
        if self.empty or not self.known:
            return []
        steps = script().iterate_revisions(self.head, self.revision)
        return [f"{step.revision} ({step.doc})" for step in reversed(list(steps))]

    @property
    def up_to_date(self) -> bool:
        return not self.empty and self.current == self.head

    @property
    def where(self) -> str:
        """Its revision as an operator reads it."""
        if self.current is None and not self.empty:
            return f"revision {BASELINE} (release 0.1.0, not stamped)"
        return f"revision {self.revision}"

    def problem(self) -> str | None:
        """The one line a command refusing this database prints; None when it is usable."""
        if self.up_to_date or self.empty:
            return None
        if not self.known:
            return (
                f"the database schema is at {self.where}, which this release does not know (a "
                f"newer release upgraded it): run that release or a later one"
            )
        return (
            f"the database schema is at {self.where}, this release needs {self.head}: "
            f"{UPGRADE_HINT}"
        )

    def status(self) -> str:
        """Where it stands and what an upgrade would run, in one line."""
        if self.empty:
            return f"the database is empty: it is created at revision {self.head} on first use"
        if self.up_to_date:
            return f"revision {self.head}, the latest: no migration pending"
        if not self.known:
            return str(self.problem())
        return f"{self.where}, the latest is {self.head}: pending {', '.join(self.pending)}"


@lru_cache(maxsize=1)
def script() -> ScriptDirectory:
    """The revisions shipped in the package, read once per process."""
    return ScriptDirectory(str(Path(__file__).parent))


@lru_cache(maxsize=1)
def _revisions() -> frozenset[str]:
    return frozenset(step.revision for step in script().walk_revisions())


def head() -> str:
    """The latest revision: the one this release's models describe."""
    latest = script().get_current_head()
    assert latest is not None, "the package ships its revisions"
    return latest


def config(connection: Connection) -> Config:
    """The Alembic configuration, made in code (no alembic.ini at run time): `env.py` runs the
    revisions on `connection`, inside the transaction the caller holds."""
    settings = Config()
    settings.set_main_option("script_location", str(Path(__file__).parent))
    settings.attributes["connection"] = connection
    return settings


def read(connection: Connection, metadata: MetaData) -> Schema:
    """Where the database behind `connection` stands; `metadata` names our tables."""
    tables = set(inspect(connection).get_table_names())
    current = None
    if VERSION_TABLE in tables:  # one row: the history is linear
        current = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return Schema(current=current, head=head(), empty=tables.isdisjoint(metadata.tables))


def ensure(engine: Engine, metadata: MetaData) -> None:
    """What every process does at start: an empty database is created at head; one at another
    revision raises SchemaMismatch (nothing is altered)."""
    with engine.connect() as connection:
        schema = read(connection, metadata)
    if schema.empty:
        with _exclusive(engine) as connection:
            schema = read(connection, metadata)  # another process may have made it meanwhile
            if schema.empty:
                schema = _create(connection, metadata)
    problem = schema.problem()
    if problem is not None:
        raise SchemaMismatch(problem)


@dataclass(frozen=True)
class Upgrade:
    """What `upgrade` did: from where the schema stood to which revision."""

    before: Schema
    after: str

    def describe(self) -> str:
        """One line for the operator: created, upgraded from which revision, or nothing done."""
        if self.before.empty:
            return f"created the schema at revision {self.after}"
        if self.before.current == self.after:
            return f"the schema is at revision {self.after} already: nothing to do"
        return f"upgraded the schema from {self.before.where} to revision {self.after}"


def upgrade(engine: Engine, metadata: MetaData) -> Upgrade:
    """Bring the database to head, whatever it is at: create an empty one, stamp an unstamped
    0.1.0 one at the baseline, then run the pending revisions, all in one locked transaction.
    A revision of a newer release raises SchemaMismatch."""
    with _exclusive(engine) as connection:
        before = read(connection, metadata)
        if before.empty:
            return Upgrade(before, _create(connection, metadata).head)
        if not before.known:
            raise SchemaMismatch(str(before.problem()))
        settings = config(connection)
        if before.current is None:
            command.stamp(settings, BASELINE)
        command.upgrade(settings, "head")
        return Upgrade(before, head())


def _create(connection: Connection, metadata: MetaData) -> Schema:
    """The current models' tables, stamped at head: what replaying every revision would make
    (tests/test_migrations.py holds the two equal), in one step."""
    metadata.create_all(connection)
    MigrationContext.configure(connection).stamp(script(), "head")
    return read(connection, metadata)


@contextmanager
def _exclusive(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that no other process changing the schema can share,
    committed when the block ends; rolled back, with the old schema intact, if it raises."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
            )
            yield connection
        return
    with engine.connect() as connection:
        # SQLite copies a table to alter it: with foreign keys enforced, dropping the old copy
        # would fail (or cascade), so they are off around the transaction (a pragma that is
        # ignored inside one). The driver begins a transaction only before DML: ours is begun
        # here, so the DDL is in it, and IMMEDIATE takes the write lock at once.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield connection
                connection.commit()
            finally:
                connection.rollback()  # after a commit there is nothing left to undo
        finally:
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()
