"""`outage delivery list|retry|stats` as an operator uses them, against its own SQLite file and
a sandbox (configured through the environment, as an operator would)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from dispatcher.models import DeliveryStatus
from dispatcher.sandbox.server import Sandbox
from dispatcher.store import Delivery, Store, utcnow
from tests.test_cli import env, outage

__all__ = ["env"]  # the fixture, shared with tests/test_cli.py

DEAD = "+14155550123"


def open_incident_with_a_failure(sandbox: Sandbox) -> int:
    """Two subscribers; one's only channel is a number that fails for good. The incident id."""
    sandbox.inject_recipient_failure(DEAD)
    for name, phone in (("Dead", DEAD), ("Alive", "+14155550100")):
        code, _, err = outage(
            "subscriber", "add", "--name", name, "--phone", phone, "--channels", "sms",
            "--confirmed",
        )  # fmt: skip
        assert code == 0, err
    code, out, err = outage(
        "incident", "open", "--title", "Login errors", "--severity", "major",
        "--component", "auth", "--json",
    )  # fmt: skip
    assert code == 0, err
    return int(json.loads(out)["incident_id"])


def test_failed_deliveries_are_listed_retried_and_counted(env: Path, sandbox: Sandbox) -> None:
    incident_id = open_incident_with_a_failure(sandbox)

    code, out, _ = outage("delivery", "list", "--status", "failed", "--json")
    assert code == 0
    [failed] = json.loads(out)
    assert (failed["subscriber"], failed["channel"], failed["status"]) == ("Dead", "sms", "failed")

    code, out, _ = outage("delivery", "stats", "--json")
    figures = json.loads(out)
    assert figures["by_channel"]["sms"] == {"sent": 1, "failed": 1}
    assert figures["total"] == 3 and figures["queued"] == 0 and figures["lease_expiries"] == 0

    sandbox.clear_faults()  # the number works again
    code, out, _ = outage("delivery", "retry", str(failed["id"]), "--json")
    assert (code, json.loads(out)) == (0, {"retried": [failed["id"]]})
    code, out, _ = outage("delivery", "list", "--incident", str(incident_id), "--json")
    assert {line["status"] for line in json.loads(out)} == {"sent"}
    assert sorted(m["to"] for m in sandbox.messages("sms")) == ["+14155550100", DEAD]

    code, out, _ = outage("delivery", "stats", "--incident", str(incident_id))
    assert code == 0
    assert "deliveries 3" in out and "queued 0" in out


def test_stats_count_deliveries_left_in_sending_past_their_lease(
    env: Path, sandbox: Sandbox
) -> None:
    open_incident_with_a_failure(sandbox)
    store = Store(f"sqlite:///{env}")
    with store.session() as session:  # a worker claimed one and vanished before it finished
        session.execute(
            update(Delivery)
            .where(Delivery.id == 1)
            .values(status=DeliveryStatus.SENDING, lease_until=utcnow() - timedelta(minutes=1))
        )
    store.close()
    code, out, _ = outage("delivery", "stats", "--json")
    assert code == 0 and json.loads(out)["sending_past_lease"] == 1
    code, out, _ = outage("delivery", "stats")
    assert "sending 1, 1 of them left by a worker that is gone" in " ".join(out.split())


def test_an_incidents_failed_deliveries_are_retried_together(env: Path, sandbox: Sandbox) -> None:
    incident_id = open_incident_with_a_failure(sandbox)
    sandbox.clear_faults()
    code, out, _ = outage("delivery", "retry", "--incident", str(incident_id), "--failed")
    assert code == 0 and "1 deliveries queued again" in out and "Dead" in out
    code, out, _ = outage("delivery", "retry", "--incident", str(incident_id), "--failed")
    assert code == 0 and "no failed deliveries" in out


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ([], "ID"),
        (["1", "--incident", "1"], "not both"),
        (["--incident", "1"], "--failed"),
        (["999"], "no delivery with id 999"),
        (["1"], "only failed deliveries"),  # delivery 1 was sent
        (["--incident", "42", "--failed"], "no incident with id 42"),
        (["abc"], "ID"),
    ],
)
def test_bad_retry_input_names_the_field(
    env: Path, sandbox: Sandbox, args: list[str], field: str
) -> None:
    open_incident_with_a_failure(sandbox)
    code, _, err = outage("delivery", "retry", *args)
    assert code == 2
    assert field in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["stats", "--incident", "42"], "no incident with id 42"),
        (["list", "--incident", "42"], "no incident with id 42"),
        (["list", "--status", "lost"], "--status"),
        (["list", "--limit", "0"], "--limit"),
    ],
)
def test_bad_list_and_stats_input_names_the_field(env: Path, args: list[str], field: str) -> None:
    code, _, err = outage("delivery", *args)
    assert code == 2
    assert field in err
