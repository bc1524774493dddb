"""`outage demo`: the whole pipeline on the embedded default, shown to a new user in one command.

It uses its own SQLite file so it never mixes with real data, and the in-process sandbox so
nothing leaves the machine. Two faults are injected on purpose, so the table shows a retry and a
fallback rather than only the happy path.
"""

from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from dispatcher.delivery.bootstrap import connect, own_sandbox
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.incidents import lifecycle, reports
from dispatcher.models import IncidentIn, IncidentState, Severity, SubscriberIn
from dispatcher.settings import get_settings
from dispatcher.subscribers import records

if TYPE_CHECKING:
    from dispatcher.sandbox.server import Sandbox

DETAIL_CHARS = 30  # keeps the table within an 80-column terminal
UNREACHABLE_PHONE = "+14155550123"  # the sandbox rejects it as a provider would a dead number

SUBSCRIBERS = [
    SubscriberIn(
        name="Ada",
        phone="+14155550100",
        email="ada@example.org",
        channels=["sms", "email"],
        confirmed=True,
    ),
    SubscriberIn(
        name="Ben",
        email="ben@example.org",
        channels=["email"],
        components=["checkout"],
        confirmed=True,
    ),
    SubscriberIn(
        name="Chen",
        webhook="http://sandbox/hooks/chen",
        channels=["webhook"],
        confirmed=True,
    ),
    SubscriberIn(
        name="Dana",
        phone=UNREACHABLE_PHONE,
        email="dana@example.org",
        channels=["sms", "email"],
        confirmed=True,
    ),
    SubscriberIn(
        name="Eli",
        email="eli@example.org",
        channels=["email"],
        min_severity=Severity.CRITICAL,
        confirmed=True,
    ),
    SubscriberIn(
        name="Fay",
        phone="+14155550101",
        channels=["sms"],
        components=["search"],
        confirmed=True,
    ),
]


def run_demo(console: Console, database: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    settings = get_settings().model_copy(
        update={
            "database_url": f"sqlite:///{database}",
            "broker_url": "embedded",
            "providers": "sandbox",
            "sandbox_url": None,
            "delivery_backoff_s": 0.5,
            "send_backoff_s": 0.05,
            # The demo's updates come seconds apart; a real deployment waits a couple of
            # minutes between messages to one person and sends only the newest (pacing.py).
            "coalesce_window_s": 0,
            # Chen's webhook is the sandbox's receiver, on loopback: an internal receiver.
            "webhook_allow_networks": [ip_network("127.0.0.0/8")],
        }
    )
    settings, sandbox = own_sandbox(settings)
    assert sandbox is not None  # the demo always runs its own
    pipeline = connect(settings)
    try:
        _run(console, pipeline, sandbox)
    finally:
        pipeline.close()
        sandbox.stop()


def _run(console: Console, pipeline: Pipeline, sandbox: Sandbox) -> None:
    console.rule("[bold]outage-dispatcher demo[/] (embedded: SQLite, in-process sandbox)")
    for data in SUBSCRIBERS:
        if data.webhook is not None:
            data = data.model_copy(update={"webhook": f"{sandbox.url}/hooks/chen"})
        records.add(pipeline.store, pipeline.registry, data)
    seeded = Table("subscriber", "channels (in order)", "follows", "threshold", title="subscribers")
    for data in SUBSCRIBERS:
        seeded.add_row(
            data.name,
            " > ".join(data.channels),
            ", ".join(data.components) or "everything",
            data.min_severity,
        )
    console.print(seeded)
    sandbox.inject_recipient_failure(UNREACHABLE_PHONE)
    sandbox.inject_failures(2, "503", channel="email")
    console.print("sandbox told to reject one phone number and to answer two email requests 503")

    def announce(posted: lifecycle.Posted) -> int:
        pipeline.announce(posted.update_id, wait_s=30)
        return posted.incident_id

    incident_id = announce(
        lifecycle.open_incident(
            pipeline.store,
            IncidentIn(
                title="Checkout errors",
                severity=Severity.MAJOR,
                components=["checkout", "payments"],
                message="Some card payments fail at checkout; no order is charged twice.",
            ),
        )
    )
    announce(
        lifecycle.post_update(
            pipeline.store,
            incident_id,
            IncidentState.IDENTIFIED,
            "A faulty release of the payment service; we are rolling it back.",
        )
    )
    announce(
        lifecycle.resolve(
            pipeline.store,
            incident_id,
            "The rollback is complete and payments work normally again.",
        )
    )

    found, updates = reports.incident(pipeline.store, incident_id)
    console.print(
        f"\n[bold]Incident #{found.id}: {found.title}[/] ({found.severity}), "
        f"{len(updates)} updates, now {found.state}"
    )
    table = Table()
    for column, width in (("update", 13), ("subscriber", 10), ("channel", 7), ("status", 9)):
        table.add_column(column, no_wrap=True, min_width=width)
    table.add_column("tries", justify="right")
    table.add_column("provider id / error")
    for line in reports.deliveries(pipeline.store, incident_id):
        detail = line.provider_id or line.last_error or ""
        if line.fallback_of:
            detail = f"(fallback) {detail}"
        table.add_row(
            line.update_state,
            line.subscriber,
            line.channel,
            line.status.replace("_", " "),
            str(line.attempts),
            detail if len(detail) <= DETAIL_CHARS else detail[: DETAIL_CHARS - 1] + "…",
        )
    console.print(table)

    received = sandbox.messages()
    console.print(f"\nthe sandbox accepted {len(received)} messages; one of each channel:")
    shown: set[str] = set()
    for message in received:
        if message["channel"] in shown:
            continue
        shown.add(message["channel"])
        to = message["to"] or "the company's public account"
        subject = f" — {message['subject']}" if message.get("subject") else ""
        console.print(f"\n[bold]{message['channel']}[/] to {to}{subject}", highlight=False)
        console.print(str(message["body"])[:600], highlight=False, markup=False)
    console.print("\nNot notified: Eli (major < critical threshold), Fay (follows search only).")
