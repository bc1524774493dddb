"""`outage subscriber import` with the files spreadsheets really write: UTF-8 with and without a
byte order mark, Excel's UTF-16 "Unicode text", Windows-1252 and Latin-1; comma, semicolon and
tab; yes/no cells that are neither; addresses already subscribed; and who is asked to confirm.
Every file is written here as bytes, in its encoding."""

from __future__ import annotations

import codecs
import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dispatcher.cli import app
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents import lifecycle
from dispatcher.models import IncidentIn, Severity, SubscriberIn
from dispatcher.sandbox.server import Sandbox
from dispatcher.subscribers import imports, records
from dispatcher.subscribers.records import SubscriberError

runner = CliRunner()
ROWS = [
    ("name", "email", "phone", "channels", "locale", "confirmed"),
    ("Jürgen Müller", "juergen@example.de", "+49 151 23456789", "sms;email", "de", "yes"),
    ("Zoë Côté", "zoe@example.fr", "", "email", "en", "no"),
]


def table(delimiter: str, rows: list[tuple[str, ...]] = ROWS) -> str:
    """The rows as a spreadsheet writes them: a cell holding the delimiter is quoted."""
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter).writerows(rows)
    return buffer.getvalue()


def written(tmp_path: Path, data: bytes, name: str = "subscribers.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def names(pipeline: Pipeline) -> list[str]:
    return [s.name for s in records.list_all(pipeline.store)]


@pytest.mark.parametrize(
    ("data", "encoding", "delimiter"),
    [
        (table(",").encode("utf-8"), "UTF-8", ","),
        (codecs.BOM_UTF8 + table(",").encode("utf-8"), "UTF-8", ","),
        (codecs.BOM_UTF16_LE + table("\t").encode("utf-16-le"), "UTF-16", "\t"),
        (codecs.BOM_UTF16_BE + table(";").encode("utf-16-be"), "UTF-16", ";"),
        (table(";").encode("cp1252"), "Windows-1252", ";"),
        # Latin-1 bytes that Windows-1252 leaves undefined (0x81): read as Latin-1, not refused.
        (
            table(";").encode("latin-1") + b"Ann\x81;ann@example.org;;email;en;yes\r\n",
            "Latin-1",
            ";",
        ),
    ],
    ids=["utf8", "utf8-bom", "utf16le-tab", "utf16be-semicolon", "cp1252-semicolon", "latin1"],
)
def test_every_encoding_and_delimiter_reads_the_same_people(
    pipeline: Pipeline, tmp_path: Path, data: bytes, encoding: str, delimiter: str
) -> None:
    report = imports.import_file(pipeline.store, pipeline.registry, written(tmp_path, data))
    assert (report.encoding, report.delimiter) == (encoding, delimiter)
    assert names(pipeline)[:2] == ["Jürgen Müller", "Zoë Côté"]
    juergen = records.list_all(pipeline.store)[0]
    assert (juergen.phone, juergen.channels, juergen.locale) == (
        "+4915123456789",
        ["sms", "email"],
        "de",
    )


def test_a_header_written_loosely_is_understood(pipeline: Pipeline, tmp_path: Path) -> None:
    data = "Name;E-Mail;Channels;Min severity\nAda;ada@example.org;email;major\n"
    report = imports.import_file(
        pipeline.store, pipeline.registry, written(tmp_path, data.encode())
    )
    assert report.imported == 1 and report.errors == []
    assert records.list_all(pipeline.store)[0].min_severity == "major"


def test_a_yes_or_no_that_is_neither_is_refused_naming_line_and_column(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    rows = [*ROWS, ("Maybe", "maybe@example.org", "", "email", "en", "maybe")]
    path = written(tmp_path, table(",", rows).encode())
    report = imports.import_file(pipeline.store, pipeline.registry, path)
    assert report.imported == 2
    assert report.errors == [
        (4, "column confirmed: 'maybe' is neither yes nor no (write yes/no, true/false or 1/0)")
    ]
    assert "Maybe" not in names(pipeline)


def test_a_german_excels_wahr_and_falsch_are_yes_and_no(pipeline: Pipeline, tmp_path: Path) -> None:
    data = (
        "name;email;channels;confirmed\nA;a@example.org;email;WAHR\nB;b@example.org;email;FALSCH\n"
    )
    imports.import_file(pipeline.store, pipeline.registry, written(tmp_path, data.encode("cp1252")))
    a, b = records.list_all(pipeline.store)
    assert a.email_confirmed_at is not None and b.email_confirmed_at is None


def test_an_unknown_column_stops_the_import_before_anything_is_stored(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    data = "name,email,channels,componets\nAda,ada@example.org,email,checkout\n"
    with pytest.raises(SubscriberError, match="column 'componets': not a column we know"):
        imports.import_file(pipeline.store, pipeline.registry, written(tmp_path, data.encode()))
    assert names(pipeline) == []


def test_an_address_already_subscribed_is_skipped_and_gets_one_sms(
    pipeline: Pipeline, sandbox: Sandbox, tmp_path: Path
) -> None:
    records.add(
        pipeline.store,
        pipeline.registry,
        SubscriberIn(name="Ada", phone="+14155550100", email="ada@example.org", channels=["sms"]),
    )
    data = (
        "name,email,phone,channels,confirmed\n"
        "Ada again,,+1 415-555-0100,sms,yes\n"  # the same number, written another way
        "ADA,Ada@Example.ORG,,email,yes\n"  # the same email, in other case
        "Ben,ben@example.org,+14155550199,sms,yes\n"
        "Ben twice,BEN@example.org,,email,yes\n"  # an earlier line of this file
    )
    path = written(tmp_path, data.encode())
    report = imports.import_file(pipeline.store, pipeline.registry, path)
    assert report.imported == 1
    assert [(s.line, s.address, s.subscriber_id, s.earlier_line) for s in report.skipped] == [
        (2, "+14155550100", 1, None),
        (3, "ada@example.org", 1, None),
        (5, "ben@example.org", None, 4),
    ]
    again = imports.import_file(pipeline.store, pipeline.registry, path)
    assert again.imported == 0 and len(again.skipped) == 4
    assert names(pipeline) == ["Ada", "Ben"]

    with pipeline.store.session() as session:  # Ada confirms her number
        session.get_one(records.Subscriber, 1).phone_confirmed_at = records.utcnow()
    posted = lifecycle.open_incident(
        pipeline.store, IncidentIn(title="API errors", severity=Severity.MAJOR, components=["api"])
    )
    pipeline.announce(posted.update_id, wait_s=5)
    texts = [m["to"] for m in sandbox.messages("sms")]
    assert texts.count("+14155550100") == 1


# --- the command -------------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OUTAGE_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.sqlite3'}")
    monkeypatch.setenv("OUTAGE_SANDBOX_URL", sandbox.url)
    return tmp_path


def outage(*args: str) -> tuple[int, str, str]:
    from dispatcher.settings import get_settings

    get_settings.cache_clear()
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


UNCONFIRMED = (
    "name;email;phone;channels;locale\n"
    'Jürgen;juergen@example.de;+4915123456789;"sms;email";de\n'
    "Zoë;zoe@example.fr;;email;en\n"
)


def test_unconfirmed_addresses_wait_by_default_and_the_import_says_so(
    env: Path, sandbox: Sandbox
) -> None:
    path = written(env, UNCONFIRMED.encode("cp1252"))
    code, out, err = outage("subscriber", "import", str(path))
    assert (code, err) == (0, "")
    assert "read subscribers.csv as Windows-1252, semicolon-separated" in out
    assert "imported 2 subscribers" in out
    assert "2 of them have addresses waiting for confirmation" in " ".join(out.split())
    assert "--send-confirmations" in out
    assert sandbox.messages() == []


def test_send_confirmations_asks_each_address_once_even_when_run_again(
    env: Path, sandbox: Sandbox
) -> None:
    path = written(env, UNCONFIRMED.encode("cp1252"))
    outage("subscriber", "import", str(path))  # the operator first imports without asking
    code, out, _ = outage("subscriber", "import", str(path), "--send-confirmations")
    assert code == 0
    assert "skipped 2 already subscribed" in out
    assert "asked for 3 confirmation(s): 3 sent" in out
    assert sorted(m["to"] for m in sandbox.messages()) == [
        "+4915123456789",
        "juergen@example.de",
        "zoe@example.fr",
    ]
    german = next(m for m in sandbox.messages("email") if m["to"] == "juergen@example.de")
    assert german["subject"] == "Bestätigen Sie Ihre Statusmeldungen von Example Cloud"
    _, out, _ = outage("subscriber", "import", str(path), "--send-confirmations")
    assert "asked for 0 confirmation(s)" in out
    assert len(sandbox.messages()) == 3


def test_a_bad_boolean_is_reported_by_line_and_the_command_exits_1(env: Path) -> None:
    data = (
        "name,email,channels,confirmed\n"
        "Ada,ada@example.org,email,yes\n"
        "Bo,b@example.org,email,maybe\n"
    )
    code, out, err = outage("subscriber", "import", str(written(env, data.encode())))
    assert code == 1
    assert "imported 1 subscribers" in out
    assert err.startswith("line 3: column confirmed: 'maybe' is neither yes nor no")
    _, listed, _ = outage("subscriber", "list", "--json")
    assert [s["name"] for s in json.loads(listed)] == ["Ada"]


def test_an_unknown_column_is_one_red_line_and_exit_2(env: Path) -> None:
    data = "name,email,channels,notes\nAda,ada@example.org,email,VIP\n"
    code, out, err = outage("subscriber", "import", str(written(env, data.encode())))
    assert code == 2 and out == ""
    assert err.startswith("error: column 'notes': not a column we know") and err.count("\n") == 1
