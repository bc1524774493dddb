"""Upgrades keep the data: a 0.1.0 database is upgraded by `outage db upgrade` with every row
intact, no ordinary command alters (or half-uses) an old schema, `outage serve`/`worker` upgrade
at start when told to, even several at once, `outage doctor` names what is pending, and the
latest revision is what the models say.

The 0.1.0 database is made from tests/fixtures/schema-0.1.0/<dialect>.sql: the statements release
0.1.0's `create_all` ran, so neither the current models nor our revisions build it.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, Table, select, text
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from dispatcher import migrations
from dispatcher.cli import app
from dispatcher.cli.process import prepare_schema
from dispatcher.ops.checks_infra import check_schema
from dispatcher.ops.findings import Context, Status
from dispatcher.sandbox.server import Sandbox
from dispatcher.settings import Settings, get_settings
from dispatcher.store import Base, Store, make_engine, read_schema, upgrade_schema

HEAD = migrations.head()  # the latest revision: what an upgrade ends at
# How `outage db current` and the doctor name what is pending after 0001: each revision and the
# first line of its docstring, oldest first.
PENDING = ", ".join(
    f"{script.revision} ({script.doc})"
    for script in reversed(list(migrations.script().walk_revisions()))
    if script.revision != migrations.BASELINE
)

RELEASE_0_1_0 = Path(__file__).parent / "fixtures" / "schema-0.1.0"
AT = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
REFUSAL = "run `outage db upgrade`"

# A row in every table of 0.1.0, every column given (NULLs included), as 0.1.0 wrote them.
ROWS_0_1_0: dict[str, list[dict[str, Any]]] = {
    "subscribers": [
        {
            "id": 7,
            "name": "Ada",
            "email": "ada@example.org",
            "phone": "+14155550100",
            "webhook_url": None,
            "webhook_secret": None,
            "channels": ["sms", "email"],
            "components": ["checkout"],
            "min_severity": "minor",
            "locale": "de",
            "email_confirmed_at": AT,
            "phone_confirmed_at": AT,
            "internal": False,
            "tier": 2,
            "quiet_start": "22:00",
            "quiet_end": "07:00",
            "timezone": "Europe/Berlin",
            "created_at": AT,
            "unsubscribed_at": None,
        }
    ],
    "suppressions": [
        {
            "id": 1,
            "kind": "phone",
            "address": "+14155550199",
            "reason": "stop",
            "created_at": AT,
        }
    ],
    "audit_events": [
        {
            "id": 1,
            "at": AT,
            "actor": "operator",
            "action": "subscriber.added",
            "subscriber_id": 7,
            "incident_id": None,
            "detail": {"channels": ["sms", "email"]},
        }
    ],
    "incidents": [
        {
            "id": 3,
            "title": "Checkout errors",
            "severity": "major",
            "state": "identified",
            "components": ["checkout"],
            "source": "alertmanager",
            "source_key": "group-1",
            "draft": False,
            "started_at": AT,
            "resolved_at": None,
            "resolve_pending_since": None,
            "eta": AT,
            "ends_at": None,
        }
    ],
    "alerts": [
        {
            "id": 1,
            "source": "alertmanager",
            "group_key": "group-1",
            "alert_key": "HighErrorRate",
            "firing": True,
            "component": "checkout",
            "incident_id": 3,
            "changed_at": AT,
            "last_seen_at": AT,
        }
    ],
    "updates": [
        {
            "id": 11,
            "incident_id": 3,
            "state": "identified",
            "message": "A faulty release; rolling back.",
            "internal_note": "payments-db failover",
            "next_update_at": AT,
            "reminded_at": None,
            "audience": "everyone",
            "milestone": None,
            "created_at": AT,
            "fanned_out_at": AT,
        }
    ],
    "deliveries": [
        {
            "id": 21,
            "update_id": 11,
            "subscriber_id": 7,
            "channel": "sms",
            "recipient": "7",
            "status": "failed",
            "priority": 2,
            "attempts": 3,
            "sends": 1,
            "last_error": "number unreachable",
            "error_reason": "unreachable",
            "provider_id": "SM123",
            "fallback_of": None,
            "due_at": AT,
            "lease_until": None,
            "lease_expiries": 0,
            "in_flight_since": None,
            "created_at": AT,
            "sent_at": None,
            "delivered_at": None,
            "receipt_due_at": None,
            "updated_at": AT,
        },
        {
            "id": 22,
            "update_id": 11,
            "subscriber_id": 7,
            "channel": "email",
            "recipient": "7",
            "status": "delivered",
            "priority": 2,
            "attempts": 1,
            "sends": 1,
            "last_error": None,
            "error_reason": None,
            "provider_id": "sg-1",
            "fallback_of": 21,
            "due_at": AT,
            "lease_until": AT,
            "lease_expiries": 1,
            "in_flight_since": None,
            "created_at": AT,
            "sent_at": AT,
            "delivered_at": AT,
            "receipt_due_at": AT,
            "updated_at": AT,
        },
    ],
    "receipts": [
        {
            "id": 1,
            "provider": "sendgrid",
            "event_id": "evt-1",
            "delivery_id": 22,
            "event": "delivered",
            "status": "delivered",
            "received_at": AT,
        }
    ],
    "instance_secrets": [{"name": "links", "value": "kept-across-the-upgrade"}],
}


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


def snapshot(engine: Engine, models: MetaData | None = None) -> dict[str, list[dict[str, Any]]]:
    """Every row of the 0.1.0 tables, in 0.1.0's columns: as the database describes them, or
    read through `models` (the release's own tables: what the dispatcher sees)."""
    reflected = MetaData()
    with engine.connect() as connection:
        found = {}
        for name, rows in ROWS_0_1_0.items():
            table = (
                models.tables[name] if models else Table(name, reflected, autoload_with=connection)
            )
            columns = [table.c[column] for column in rows[0]]
            query = select(*columns).order_by(*table.primary_key.columns)
            found[name] = [dict(row._mapping) for row in connection.execute(query)]
    return found


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    made = make_engine(database_url)
    _reset(made)
    yield made
    made.dispose()


@pytest.fixture
def release_0_1_0(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """A 0.1.0 database with data in every table (no revision stamp, as 0.1.0 left it); the
    rows as read back before any upgrade."""
    create_0_1_0(engine)
    tables = MetaData()
    with engine.begin() as connection:
        for name, rows in ROWS_0_1_0.items():  # in an order that satisfies the references
            connection.execute(Table(name, tables, autoload_with=connection).insert(), rows)
            if engine.dialect.name == "postgresql" and "id" in rows[0]:
                # 0.1.0 let the sequence number its rows: it is past them, as it would be.
                sequence = f"pg_get_serial_sequence('{name}', 'id')"
                connection.execute(text(f"SELECT setval({sequence}, max(id)) FROM {name}"))
    before = snapshot(engine)
    assert {name: len(rows) for name, rows in before.items()} == {
        name: len(rows) for name, rows in ROWS_0_1_0.items()
    }
    return before


@pytest.fixture
def stamped_0001(engine: Engine) -> None:
    """A database at revision 0001, stamped (what this release's history makes of 0.1.0)."""
    with engine.begin() as connection:
        command.upgrade(migrations.config(connection), migrations.BASELINE)


def outage(monkeypatch: pytest.MonkeyPatch, url: str, *args: str) -> tuple[int, str, str]:
    """The CLI as an operator runs it, on `url` through OUTAGE_DATABASE_URL; output unwrapped."""
    monkeypatch.setenv("OUTAGE_DATABASE_URL", url)
    get_settings.cache_clear()
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, " ".join(result.stdout.split()), " ".join(result.stderr.split())


# At noon UTC: outside Ada's quiet hours (22:00-07:00 Berlin), at whatever hour the test runs.
@pytest.mark.time_machine(AT.replace(hour=12), tick=True)
def test_a_0_1_0_database_is_upgraded_keeping_every_row(
    database_url: str,
    engine: Engine,
    release_0_1_0: dict[str, list[dict[str, Any]]],
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, out, _ = outage(monkeypatch, database_url, "db", "upgrade")
    assert (code, out) == (
        0,
        f"upgraded the schema from revision 0001 (release 0.1.0, not stamped) to revision {HEAD}",
    )
    assert snapshot(engine) == release_0_1_0, "every row and every value as before"
    assert snapshot(engine, Base.metadata) == ROWS_0_1_0, "and read by this release as written"
    with engine.connect() as connection:
        kinds = connection.execute(text("SELECT kind, wait_reason FROM deliveries")).all()
        heartbeats = connection.execute(text("SELECT count(*) FROM heartbeats")).scalar()
    assert kinds == [("update", None), ("update", None)], "0.1.0's deliveries were all updates"
    assert heartbeats == 0

    # The release works on it: the old rows read through the models, new ones are added.
    monkeypatch.setenv("OUTAGE_SANDBOX_URL", sandbox.url)
    code, out, _ = outage(monkeypatch, database_url, "delivery", "list", "--json")
    assert code == 0
    assert {(line["channel"], line["status"]) for line in json.loads(out)} == {
        ("sms", "failed"),
        ("email", "delivered"),
    }
    opened = ["--title", "Down", "--severity", "major", "--component", "checkout"]
    code, _, err = outage(monkeypatch, database_url, "incident", "open", *opened)
    assert code == 0, err
    assert [message["to"] for message in sandbox.messages("sms")] == ["+14155550100"]

    code, out, _ = outage(monkeypatch, database_url, "db", "upgrade")
    assert (code, out) == (0, f"the schema is at revision {HEAD} already: nothing to do")


def test_a_failed_upgrade_leaves_the_schema_as_it_was(
    database_url: str,
    engine: Engine,
    release_0_1_0: dict[str, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """0002's last step fails here (its table exists already): its first, which rebuilt
    deliveries on SQLite, is undone with it."""
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE heartbeats (name VARCHAR(128) PRIMARY KEY)"))
    code, _, err = outage(monkeypatch, database_url, "db", "upgrade")
    assert code == 2
    assert err.startswith("error: the database failed, its schema is unchanged (")
    assert read_schema(database_url).current is None
    with engine.connect() as connection:
        columns = Table("deliveries", MetaData(), autoload_with=connection).c.keys()
    assert columns == list(ROWS_0_1_0["deliveries"][0])
    assert snapshot(engine) == release_0_1_0


def test_an_ordinary_command_refuses_an_old_schema_and_changes_nothing(
    database_url: str,
    release_0_1_0: dict[str, list[dict[str, Any]]],
    engine: Engine,
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OUTAGE_SANDBOX_URL", sandbox.url)
    for command_line in (["subscriber", "list"], ["worker"]):
        code, _, err = outage(monkeypatch, database_url, *command_line)
        assert (code, err) == (
            2,
            "error: the database schema is at revision 0001 (release 0.1.0, not stamped), this "
            f"release needs {HEAD}: {REFUSAL}",
        ), command_line
    assert read_schema(database_url).current is None, "not even stamped"
    assert snapshot(engine) == release_0_1_0

    code, out, _ = outage(monkeypatch, database_url, "db", "current")
    assert code == 1
    assert out == (
        f"revision 0001 (release 0.1.0, not stamped), the latest is {HEAD}: pending {PENDING}; "
        f"{REFUSAL}"
    )


def test_a_stamped_older_revision_is_named_as_such(
    database_url: str, stamped_0001: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(migrations.SchemaMismatch) as refused:
        Store(database_url)
    assert str(refused.value) == (
        f"the database schema is at revision 0001, this release needs {HEAD}: {REFUSAL}"
    )
    code, out, _ = outage(monkeypatch, database_url, "db", "upgrade")
    assert (code, out) == (0, f"upgraded the schema from revision 0001 to revision {HEAD}")


def test_a_revision_of_a_newer_release_is_refused_even_by_upgrade(
    database_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    Store(database_url).close()
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    code, _, err = outage(monkeypatch, database_url, "db", "upgrade")
    assert code == 2
    assert err.startswith("error: the database schema is at revision 0099, which this release")
    with pytest.raises(migrations.SchemaMismatch, match="run that release or a later one"):
        Store(database_url)


def test_serve_and_worker_upgrade_at_start_only_when_told(
    database_url: str,
    release_0_1_0: dict[str, list[dict[str, Any]]],
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(typer.Exit) as stopped:
        prepare_schema(Settings(database_url=database_url))
    assert stopped.value.exit_code == 2
    assert REFUSAL in capsys.readouterr().err
    assert read_schema(database_url).current is None

    monkeypatch.setenv("OUTAGE_DATABASE_URL", database_url)
    monkeypatch.setenv("OUTAGE_AUTO_MIGRATE", "true")
    get_settings.cache_clear()
    prepare_schema(get_settings())
    assert "upgraded the schema from revision 0001" in capsys.readouterr().out
    assert read_schema(database_url).up_to_date
    assert snapshot(engine) == release_0_1_0


def test_workers_starting_together_upgrade_once(
    database_url: str, release_0_1_0: dict[str, list[dict[str, Any]]], engine: Engine
) -> None:
    starting = 4
    together = threading.Barrier(starting)
    said: list[str] = []

    def start() -> None:
        together.wait()
        said.append(upgrade_schema(database_url).describe())

    workers = [threading.Thread(target=start) for _ in range(starting)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    upgraded = (
        f"upgraded the schema from revision 0001 (release 0.1.0, not stamped) to revision {HEAD}"
    )
    nothing = f"the schema is at revision {HEAD} already: nothing to do"
    assert sorted(said) == [nothing] * (starting - 1) + [upgraded]
    assert snapshot(engine) == release_0_1_0


def test_doctor_names_the_pending_migration(database_url: str, stamped_0001: None) -> None:
    context = Context.for_doctor(Settings(database_url=database_url))
    try:
        [pending] = check_schema(context)
        assert pending.status is Status.FAIL
        assert pending.detail == (f"revision 0001, the latest is {HEAD}: pending {PENDING}")
        assert REFUSAL in str(pending.fix)
        upgrade_schema(database_url)
        [current] = check_schema(context)
        assert (current.status, current.detail) == (Status.OK, f"all 14 tables at revision {HEAD}")
    finally:
        context.close()


def test_a_fresh_database_is_created_at_the_latest_revision(
    database_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert read_schema(database_url).empty
    Store(database_url).close()
    assert read_schema(database_url).up_to_date
    code, out, _ = outage(monkeypatch, database_url, "db", "current")
    assert (code, out) == (0, f"revision {HEAD}, the latest: no migration pending")


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


def test_a_database_that_does_not_answer_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    url = f"postgresql://postgres:secret@127.0.0.1:{closed}/outage"
    for command_line in (["db", "current"], ["db", "upgrade"]):
        code, _, err = outage(monkeypatch, url, *command_line)
        assert code == 2
        assert err.startswith("error: the database failed, its schema is unchanged (connection")
        assert err.endswith("`outage doctor` checks it")
        assert "secret" not in err
