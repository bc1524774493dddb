"""Importing subscribers from the files spreadsheets really write, without adding anyone twice.

A file is read as bytes and its encoding decided, not assumed: a byte order mark says UTF-8 or
UTF-16 (Excel's "Unicode text"); otherwise strict UTF-8 is tried first, then Windows-1252 (what
Excel writes as "CSV" on Windows; it agrees with Latin-1 wherever Latin-1 has printable
characters), then Latin-1, which reads anything. The delimiter is the one of `,` `;` and tab
that splits the header into the most columns we know (`;` is what a German Excel writes), else
csv.Sniffer's guess, else `,`. The header is read loosely (case, spaces and dashes do not matter)
but a column we do not know stops the import before anything is stored: a misspelt
"components" would otherwise give every row every component.

Each row is validated in full, as `records.add` would; a bad row is reported by line and column
and the good ones are stored. An address that is already subscribed (a phone compared as
+E.164, an email case-insensitively, a webhook URL as given), or that an earlier line of the
same file had, is **skipped and reported**, never added a second time (a number imported twice
got every SMS twice) and never changed either: the subscriber's own choices in the preference
centre outrank a spreadsheet. Whether imported addresses are asked to confirm is the caller's
decision (`outage subscriber import --send-confirmations`): the report says who waits.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from pydantic import ValidationError
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from dispatcher.audit import record
from dispatcher.delivery.registry import ChannelRegistry
from dispatcher.models import SubscriberIn
from dispatcher.store import Store, Subscriber
from dispatcher.subscribers.records import (
    CSV_ATTRIBUTE_PREFIX,
    SubscriberError,
    check_channels,
    check_phone,
    check_webhook,
    describe,
    new_row,
    opt_outs,
)

LIST_COLUMNS: Final = ("channels", "components")  # items separated by ';' or ','
BOOLEAN_COLUMNS: Final = ("confirmed", "internal")
# Columns an export adds that an import ignores, so an export can be imported elsewhere.
EXPORT_ONLY: Final = ("id", "email_confirmed", "phone_confirmed", "unsubscribed", "created_at")
COLUMNS: Final = (*(name for name in SubscriberIn.model_fields), *EXPORT_ONLY)
DELIMITERS: Final = (",", ";", "\t")
_DELIMITER_NAMES: Final = {",": "comma", ";": "semicolon", "\t": "tab"}
# Spellings of yes and no that spreadsheets and people write (WAHR/FALSCH: a German Excel's).
_YES: Final = frozenset({"1", "true", "yes", "y", "x", "ja", "j", "wahr"})
_NO: Final = frozenset({"0", "false", "no", "n", "nein", "falsch"})
_BOMS: Final = (
    (codecs.BOM_UTF8, "utf-8-sig", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16", "UTF-16"),
    (codecs.BOM_UTF16_BE, "utf-16", "UTF-16"),
)
_LOOKUP_CHUNK: Final = 500  # addresses per query when looking for existing subscribers


@dataclass(frozen=True)
class Skipped:
    """A row not imported because its address is already subscribed (or on an earlier line)."""

    line: int
    address: str
    subscriber_id: int | None  # who has it; None: an earlier line of this file
    earlier_line: int | None = None


@dataclass
class ImportReport:
    """What an import did, for the operator: how the file was read, what was stored, what was
    skipped and why, and who waits for a confirmation."""

    encoding: str = "UTF-8"
    delimiter: str = ","
    imported: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line number, what is wrong)
    skipped: list[Skipped] = field(default_factory=list)
    still_suppressed: int = 0  # imported, but an address opted out earlier and stays so
    waiting: list[int] = field(default_factory=list)  # imported, with an unconfirmed address

    @property
    def delimiter_name(self) -> str:
        return _DELIMITER_NAMES.get(self.delimiter, repr(self.delimiter))


def import_file(store: Store, registry: ChannelRegistry, path: Path) -> ImportReport:
    """Store the good rows of the file at `path`; report the bad ones by line, the ones already
    subscribed as skipped. Raises SubscriberError (nothing stored) for a file that is not a
    table of subscribers: empty, no name column, or a column we do not know."""
    text, encoding = decode(path.read_bytes())
    report = ImportReport(encoding=encoding)
    reader = _reader(text, report)
    good: list[tuple[int, SubscriberIn]] = []
    for line, row in _rows(reader):
        try:
            data = SubscriberIn.model_validate(_fields(row))
            check_channels(data, registry)
            check_phone(data, registry)
            check_webhook(str(data.webhook) if data.webhook else None, registry)
        except ValidationError as exc:
            report.errors.append((line, describe(exc)))
        except ValueError as exc:
            report.errors.append((line, str(exc)))
        else:
            good.append((line, data))
    with store.session() as session:
        fresh = _without_known(session, good, report)
        rows = [new_row(data) for _, data in fresh]
        session.add_all(rows)
        session.flush()
        for subscriber in rows:
            _audit(session, subscriber, path.name, report)
    report.imported = len(rows)
    return report


def decode(data: bytes) -> tuple[str, str]:
    """The text of a file and the name of its encoding, decided as the module says."""
    for bom, codec, name in _BOMS:
        if data.startswith(bom):
            return data.decode(codec), name
    for codec, name in (("utf-8", "UTF-8"), ("cp1252", "Windows-1252")):
        try:
            return data.decode(codec), name
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1"), "Latin-1"


def delimiter_of(header: str, sample: str) -> str:
    """The delimiter that splits the header into the most known columns; csv.Sniffer's guess
    among ours when none does better than another; "," when it cannot tell."""
    counts = {d: len(set(_header(header.split(d))) & set(COLUMNS)) for d in DELIMITERS}
    best = max(counts.values())
    winners = [d for d, count in counts.items() if count == best]
    if len(winners) == 1:
        return winners[0]
    try:
        return csv.Sniffer().sniff(sample, delimiters="".join(DELIMITERS)).delimiter
    except csv.Error:
        return ","


def _reader(text: str, report: ImportReport) -> csv.DictReader[str]:
    """A reader over the rows, its header checked: every column known, a name column there."""
    header_line = next((line for line in text.splitlines() if line.strip()), "")
    if not header_line:
        raise SubscriberError("the file is empty; its first line names the columns: name,email,…")
    report.delimiter = delimiter_of(header_line, text[:4096])
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=report.delimiter)
    header = _header(reader.fieldnames or [])
    unknown = [
        name
        for name in header
        if name and name not in COLUMNS and not name.startswith(CSV_ATTRIBUTE_PREFIX)
    ]
    if unknown:
        raise SubscriberError(
            f"column {unknown[0]!r}: not a column we know ({', '.join(COLUMNS)}, or "
            f"{CSV_ATTRIBUTE_PREFIX}<key> for an attribute); rename or remove it, nothing was "
            "imported"
        )
    if "name" not in header:
        raise SubscriberError(
            f"the header has no name column (read as {report.delimiter_name}-separated "
            f"{report.encoding}: {header_line[:80]!r})"
        )
    reader.fieldnames = header
    return reader


def _header(names: Iterable[str]) -> list[str]:
    """Column names as we spell them: "Min severity" and "min-severity" are min_severity, and
    "E-Mail" (as German spreadsheets write it) is email. An attribute's column keeps its key as
    written (`attr:data-centre`): the key is checked as a slug with the row."""
    spelled = []
    for raw in names:
        name = raw.strip().lstrip("\ufeff")
        if name.lower().startswith(CSV_ATTRIBUTE_PREFIX):
            spelled.append(CSV_ATTRIBUTE_PREFIX + name[len(CSV_ATTRIBUTE_PREFIX) :].strip())
            continue
        spelled.append("_".join(name.lower().replace("-", " ").split()))
    return ["email" if name == "e_mail" else name for name in spelled]


def _rows(reader: csv.DictReader[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, non-empty cells) of each row with something in it."""
    for row in reader:
        cells = {key: (value or "").strip() for key, value in row.items() if key}
        cells = {key: value for key, value in cells.items() if value}
        if cells:
            yield reader.line_num, cells


def _fields(row: dict[str, str]) -> dict[str, object]:
    """A row's cells as SubscriberIn fields; a yes/no cell that is neither is an error naming
    its column (an import must not guess whether people agreed)."""
    fields: dict[str, object] = {
        k: v
        for k, v in row.items()
        if k not in EXPORT_ONLY and not k.startswith(CSV_ATTRIBUTE_PREFIX)
    }
    fields["attributes"] = {
        k.removeprefix(CSV_ATTRIBUTE_PREFIX): v
        for k, v in row.items()
        if k.startswith(CSV_ATTRIBUTE_PREFIX)
    }
    for name in LIST_COLUMNS:
        fields[name] = [item for item in row.get(name, "").replace(";", ",").split(",") if item]
    for name in BOOLEAN_COLUMNS:
        if name in row:
            value = row[name].lower()
            if value not in _YES | _NO:
                raise ValueError(
                    f"column {name}: {row[name]!r} is neither yes nor no "
                    "(write yes/no, true/false or 1/0)"
                )
            fields[name] = value in _YES
    return fields


def _keys(data: SubscriberIn) -> list[str]:
    """The addresses that make a subscriber the same person: normalised, compared as given."""
    keys = []
    if data.email:
        keys.append(data.email.lower())
    if data.phone:
        keys.append(data.phone)
    if data.webhook:
        keys.append(str(data.webhook))
    return keys


def _without_known(
    session: Session, good: list[tuple[int, SubscriberIn]], report: ImportReport
) -> list[tuple[int, SubscriberIn]]:
    """The rows whose addresses nobody has yet, in file order; the others go to the report."""
    known = _subscribed(session, [key for _, data in good for key in _keys(data)])
    seen: dict[str, int] = {}  # address -> the line that has it
    fresh = []
    for line, data in good:
        keys = _keys(data)
        owner = next((key for key in keys if key in known), None)
        earlier = next((key for key in keys if key in seen), None)
        if owner is not None:
            report.skipped.append(Skipped(line, owner, known[owner]))
        elif earlier is not None:
            report.skipped.append(Skipped(line, earlier, None, seen[earlier]))
        else:
            fresh.append((line, data))
            seen.update(dict.fromkeys(keys, line))
    return fresh


def _subscribed(session: Session, keys: list[str]) -> dict[str, int]:
    """Which of these addresses a subscriber already has, and whose: a few queries in all."""
    found: dict[str, int] = {}
    unique = list(dict.fromkeys(keys))
    for start in range(0, len(unique), _LOOKUP_CHUNK):
        chunk = unique[start : start + _LOOKUP_CHUNK]
        rows = session.execute(
            select(Subscriber.id, Subscriber.email, Subscriber.phone, Subscriber.webhook_url)
            .where(
                or_(
                    func.lower(Subscriber.email).in_(chunk),
                    Subscriber.phone.in_(chunk),
                    Subscriber.webhook_url.in_(chunk),
                )
            )
            .order_by(Subscriber.id.desc())  # the oldest wins the dict below
        )
        for subscriber_id, email, phone, webhook_url in rows:
            for key in ((email or "").lower(), phone, webhook_url):
                if key:
                    found[key] = subscriber_id
    return found


def _audit(session: Session, subscriber: Subscriber, file: str, report: ImportReport) -> None:
    # Opted-out addresses stay suppressed: an import is not the person's consent.
    blocked = sorted(opt_outs(session, subscriber))
    report.still_suppressed += bool(blocked)
    waits = any(
        getattr(subscriber, address) and confirmed is None and address not in blocked
        for address, confirmed in (
            ("email", subscriber.email_confirmed_at),
            ("phone", subscriber.phone_confirmed_at),
        )
    )
    if waits:
        report.waiting.append(subscriber.id)
    record(
        session,
        "operator",
        "subscriber_imported",
        subscriber_id=subscriber.id,
        file=file,
        confirmed_by_operator=subscriber.email_confirmed_at is not None
        or subscriber.phone_confirmed_at is not None,
        still_suppressed=blocked,
    )
