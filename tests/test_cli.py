"""The `outage` command as an operator uses it: output, exit codes, and clear errors on bad input.

Each test points the CLI at its own SQLite file and at a sandbox through the environment, exactly
as an operator would configure it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dispatcher.cli import app
from dispatcher.sandbox.server import Sandbox

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Path:
    db = tmp_path / "cli.sqlite3"
    monkeypatch.setenv("OUTAGE_DATABASE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("OUTAGE_SANDBOX_URL", sandbox.url)
    monkeypatch.setenv("OUTAGE_SEND_BACKOFF_S", "0")
    monkeypatch.setenv("OUTAGE_DELIVERY_BACKOFF_S", "0")
    monkeypatch.setenv("OUTAGE_COALESCE_WINDOW_S", "0")
    return db


def outage(*args: str) -> tuple[int, str, str]:
    from dispatcher.settings import get_settings

    get_settings.cache_clear()
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_add_subscriber_open_and_resolve_incident(env: Path, sandbox: Sandbox) -> None:
    code, out, _ = outage(
        "subscriber",
        "add",
        "--name",
        "Ada",
        "--phone",
        "+1 415 555 0100",
        "--email",
        "ada@example.org",
        "--channels",
        "sms,email",
        "--confirmed",
        "--json",
    )
    assert code == 0
    subscriber = json.loads(out)
    assert subscriber["phone"] == "+14155550100", "numbers are stored in E.164"
    assert subscriber["channels"] == ["sms", "email"]

    code, out, _ = outage(
        "incident",
        "open",
        "--title",
        "Checkout errors",
        "--severity",
        "major",
        "--component",
        "checkout",
        "--message",
        "Card payments fail.",
        "--json",
    )
    assert code == 0
    incident_id = json.loads(out)["incident_id"]
    assert [m["to"] for m in sandbox.messages("sms")] == ["+14155550100"]

    code, out, _ = outage(
        "incident",
        "update",
        str(incident_id),
        "--state",
        "identified",
        "--message",
        "Rolling back.",
    )
    assert code == 0 and "accepted" in out
    code, out, _ = outage("incident", "resolve", str(incident_id), "--message", "Fixed.")
    assert code == 0

    code, out, _ = outage("incident", "show", str(incident_id), "--json")
    shown = json.loads(out)
    assert shown["state"] == "resolved"
    assert [u["state"] for u in shown["updates"]] == ["investigating", "identified", "resolved"]
    # SMS carries the opening and the end; the update in between goes by email instead.
    assert shown["deliveries"]["sms"] == {"sent": 2}
    assert shown["deliveries"]["email"] == {"sent": 1}
    assert shown["deliveries"]["social"] == {"sent": 3}

    code, out, _ = outage("incident", "list", "--json")
    assert [i["id"] for i in json.loads(out)] == [incident_id]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--phone", "+1 555", "--channels", "sms"], "phone"),
        (["--email", "not-an-address", "--channels", "email"], "email"),
        (["--webhook", "ftp://example.org/x", "--channels", "webhook"], "webhook"),
        (["--email", "a@example.org", "--channels", "pigeon"], "pigeon"),
        (["--email", "a@example.org", "--channels", "sms"], "phone"),
        (["--email", "a@example.org", "--channels", "email", "--min-severity", "dire"], "dire"),
    ],
)
def test_bad_subscriber_input_names_the_field_and_stores_nothing(
    env: Path, args: list[str], field: str
) -> None:
    code, _, err = outage("subscriber", "add", "--name", "X", *args)
    assert code == 2
    assert field in err
    assert "Traceback" not in err
    code, out, _ = outage("subscriber", "list", "--json")
    assert json.loads(out) == []


def test_unknown_incident_is_exit_2_with_the_id(env: Path) -> None:
    code, _, err = outage("incident", "resolve", "99")
    assert code == 2
    assert "no incident with id 99" in err


OPEN = ("incident", "open", "--title", "T", "--severity", "minor", "--component", "api")
SCHEDULE = ("maintenance", "schedule", "--title", "T", "--component", "api")
ADD = ("subscriber", "add", "--name", "X", "--email", "x@example.org", "--channels", "email")


@pytest.mark.parametrize(
    ("args", "said"),
    [
        ((*SCHEDULE, "--start", "2h", "--end", "1h"), "--end: the maintenance must end after"),
        (("incident", "show", "99"), "no incident with id 99"),
        (("subscriber", "link", "1", "--purpose", "confirm"), "purpose: confirmation links are"),
        (("subscriber", "link", "99"), "no subscriber with id 99"),
        (("delivery", "retry", "99"), "ID: no delivery with id 99"),
        (("template", "preview", "--channel", "fax", "--state", "monitoring"), "channel 'fax'"),
        ((*OPEN, "--next-update", "soon"), "--next-update: 'soon' is not a duration"),
        ((*OPEN, "--eta", "soon"), "--eta: 'soon' is neither a time"),
        ((*SCHEDULE, "--start", "soon", "--end", "1h"), "--start: 'soon' is neither"),
        ((*SCHEDULE, "--start", "1h", "--end", "then"), "--end: 'then' is neither"),
        ((*OPEN, "--next-update", "[/x]"), "'[/x]' is not a duration"),  # shown, not markup
        # Quiet hours are checked as the subscriber is validated, before any are stored.
        ((*ADD, "--quiet-hours", "25:00-07:00"), "--quiet-hours: '25:00-07:00' is not a window"),
        ((*ADD, "--quiet-hours", "22:00"), "--quiet-hours: '22:00' is not a window"),
        ((*ADD, "--locale", "klingon"), "--locale: 'klingon' is not a locale: give a language"),
        ((*ADD[:-1], "pigeon"), "--channels: unknown channel 'pigeon'"),
        # Nothing careless reaches the public: blank text, an estimate already past, no channel.
        (
            ("incident", "open", "--title", "  ", "--severity", "minor", "--component", "api"),
            "--title: must not be blank",
        ),
        (
            ("incident", "open", "--title", "T", "--severity", "minor", "--component", ""),
            "--component: must not be blank",
        ),
        ((*OPEN, "--message", " "), "--message: must not be blank"),
        (
            ("incident", "update", "1", "--state", "identified", "--message", ""),
            "--message: must not be blank",
        ),
        ((*OPEN, "--eta", "2020-01-01T10:00Z"), "--eta: 2020-01-01 10:00 UTC is in the past"),
        (("incident", "approve", "1", "--title", " "), "--title: must not be blank"),
        ((*ADD[:-1], ""), "--channels: give at least one channel"),
        ((*ADD[:-1], " , "), "--channels: give at least one channel"),
        ((*ADD, "--component", ""), "--component: a component must not be blank"),
        (("incident", "reopen", "1", "--message", " "), "--message: must not be blank"),
        (("incident", "reopen", "7", "--message", "Again."), "no incident with id 7"),
        (("maintenance", "cancel", "7"), "no incident with id 7"),
        # Click's own usage errors, in the same one line (not Rich's box), naming the option.
        (
            ("incident", "open", "--title", "T", "--severity", "dire", "--component", "api"),
            "--severity: 'dire' is not one of 'minor', 'major', 'critical'",
        ),
        (("incident", "open", "--severity", "minor", "--component", "api"), "--title: missing"),
        (("incident", "opn"), "No such command 'opn'. Did you mean 'open'"),
        (("incident", "show", "abc"), "ID: "),
        (("delivery", "list", "--limit", "0"), "--limit: "),
        ((*OPEN, "--tittle", "T"), "No such option: --tittle"),
    ],
)
def test_a_user_error_is_one_red_line_and_exit_2(
    env: Path, args: tuple[str, ...], said: str
) -> None:
    code, out, err = outage(*args)
    assert code == 2
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert said in err
    for internal in ("quiet_start", "quiet_end", "components", "Value error", "╭"):
        assert internal not in err


def test_a_refused_incident_stores_and_sends_nothing(env: Path, sandbox: Sandbox) -> None:
    outage(*ADD, "--confirmed")
    code, _, err = outage("incident", "open", "--title", " ", "--severity", "major",
                          "--component", "api")  # fmt: skip
    assert code == 2 and "--title" in err
    assert outage("incident", "list", "--json")[1].strip() == "[]"
    assert sandbox.messages("social") == [] and sandbox.messages("email") == []


def test_the_credit_note_and_internal_note_never_reach_the_public(
    env: Path, sandbox: Sandbox
) -> None:
    outage(*ADD, "--confirmed")
    code, out, err = outage(*OPEN, "--message", "Logins fail.", "--json")
    assert code == 0, err
    incident_id = json.loads(out)["incident_id"]
    credit = "Affected accounts get a 10% credit on this month's invoice."
    code, _, err = outage("incident", "resolve", str(incident_id), "--message", "Fixed.",
                          "--credit-note", credit, "--internal-note", "db-7 down")  # fmt: skip
    assert code == 0, err
    [_, email_resolved] = [m["body"] for m in sandbox.messages("email")]
    assert credit in email_resolved, "the subscribers told are offered the credit"
    assert "Fixed." in email_resolved and "db-7" not in email_resolved
    posts = [m["body"] for m in sandbox.messages("social")]
    assert len(posts) == 2 and "Fixed." in posts[1]
    assert all(credit not in post and "credit" not in post for post in posts)
    assert all("db-7" not in post for post in posts)
    code, out, _ = outage("incident", "show", str(incident_id), "--json")
    assert json.loads(out)["updates"][-1]["credit_note"] == credit


def test_maintenance_is_moved_and_called_off_from_the_cli(env: Path, sandbox: Sandbox) -> None:
    outage(*ADD, "--confirmed")
    code, out, err = outage(*SCHEDULE, "--start", "3d", "--end", "3d2h", "--json")
    assert code == 0, err
    maintenance_id = str(json.loads(out)["incident_id"])
    code, _, err = outage("incident", "update", maintenance_id, "--state", "identified",
                          "--message", "A fix is in place.")  # fmt: skip
    assert code == 2 and "is a planned maintenance, not an incident" in err
    [listed] = json.loads(outage("maintenance", "list", "--json")[1])
    assert (listed["id"], listed["state"]) == (int(maintenance_id), "scheduled")

    code, out, err = outage("maintenance", "reschedule", maintenance_id, "--start", "4d",
                            "--end", "4d1h")  # fmt: skip
    assert code == 0 and f"maintenance {maintenance_id} moved to" in out, err
    code, out, err = outage("maintenance", "cancel", maintenance_id, "--message", "Not needed.")
    assert code == 0 and "cancelled" in out, err
    code, _, err = outage("maintenance", "cancel", maintenance_id)
    assert code == 2 and "was cancelled" in err

    assert json.loads(outage("maintenance", "list", "--json")[1]) == []
    [listed] = json.loads(outage("maintenance", "list", "--all", "--json")[1])
    assert listed["state"] == "cancelled"
    bodies = [m["body"] for m in sandbox.messages("email")]
    assert len(bodies) == 3 and "rescheduled" in bodies[1] and "Not needed." in bodies[2]


def test_reopen_tells_those_who_heard_of_the_resolution(env: Path, sandbox: Sandbox) -> None:
    outage(*ADD, "--confirmed")
    code, out, _ = outage(*OPEN, "--json")
    incident_id = str(json.loads(out)["incident_id"])
    assert outage("incident", "resolve", incident_id, "--message", "Fixed.")[0] == 0
    outage("subscriber", "add", "--name", "Late", "--email", "late@example.org",
           "--channels", "email", "--confirmed")  # fmt: skip

    code, out, err = outage("incident", "reopen", incident_id, "--message", "Logins fail again.")
    assert code == 0 and "accepted" in out, err
    told = [m["body"] for m in sandbox.messages("email") if m["to"] == "x@example.org"]
    assert len(told) == 3 and "Logins fail again." in told[2]
    assert [m for m in sandbox.messages("email") if m["to"] == "late@example.org"] == []
    assert "Logins fail again." in sandbox.messages("social")[-1]["body"]
    assert json.loads(outage("incident", "show", incident_id, "--json")[1])["state"] == (
        "investigating"
    )
    code, _, err = outage("incident", "reopen", incident_id, "--message", "Again.")
    assert code == 2 and "is not resolved" in err


def test_show_follow_ends_by_itself_with_a_plain_summary(
    env: Path, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTAGE_COALESCE_WINDOW_S", "120")  # the default: a second update waits
    outage(*ADD, "--confirmed")
    code, out, _ = outage(*OPEN, "--json")
    incident_id = str(json.loads(out)["incident_id"])
    outage("incident", "update", incident_id, "--state", "identified", "--message", "Rolling back.")

    code, out, err = outage("incident", "show", incident_id, "--follow")
    assert code == 0, err
    after = out.split("following ended: nothing more is due in the next 30 s\n")[1]
    lines = after.splitlines()
    assert lines[:2] == ["email: 1 queued, 1 sent", "social: 2 sent"], "plain off a terminal"
    assert "1 waiting until" in lines[2] and "(coalescing" in lines[2]
    assert "nothing is running to send them" in lines[3]
    code, out, _ = outage("incident", "show", incident_id, "--follow", "--json")
    [held] = json.loads(out)["waiting"]
    assert (held["count"], held["reason"]) == (1, "coalescing")


def test_import_reports_bad_rows_by_line_and_keeps_the_good(env: Path, tmp_path: Path) -> None:
    csv_file = tmp_path / "subs.csv"
    csv_file.write_text(
        "name,email,phone,webhook,channels,components,min_severity,locale,confirmed\n"
        "Ada,ada@example.org,,,email,checkout,major,en,yes\n"
        "Bad phone,,+1 555,,sms,,minor,en,yes\n"
        "Ben,ben@example.org,+14155550100,,sms;email,,minor,en,no\n"
        "No channel,c@example.org,,,,,minor,en,yes\n"
    )
    code, out, err = outage("subscriber", "import", str(csv_file))
    assert code == 1
    assert "imported 2" in out
    assert "line 3:" in err and "phone" in err
    assert "line 5:" in err and "channels" in err
    code, out, _ = outage("subscriber", "list", "--json")
    assert [s["name"] for s in json.loads(out)] == ["Ada", "Ben"]


def test_an_import_problem_quoting_the_file_is_shown_as_it_is(env: Path, tmp_path: Path) -> None:
    csv_file = tmp_path / "subs.csv"
    csv_file.write_text("name,email,channels\nAda,ada@example.org,[/x]\n")
    code, _, err = outage("subscriber", "import", str(csv_file))
    assert code == 1
    assert err.startswith("line 2: channels: unknown channel '[/x]'") and err.count("\n") == 1


def test_remove_subscriber(env: Path) -> None:
    outage("subscriber", "add", "--name", "Ada", "--email", "a@example.org", "--channels", "email")
    code, _, _ = outage("subscriber", "remove", "1")
    assert code == 0
    code, _, err = outage("subscriber", "remove", "1")
    assert code == 2 and "no subscriber with id 1" in err


def test_template_preview_shows_the_sms_and_its_segments(env: Path) -> None:
    code, out, _ = outage("template", "preview", "--channel", "sms", "--state", "investigating")
    assert code == 0
    assert "SMS segment" in out and "GSM-7" in out


def test_delivery_list_shows_fallbacks(env: Path, sandbox: Sandbox) -> None:
    sandbox.inject_recipient_failure("+14155550123")
    outage(
        "subscriber",
        "add",
        "--name",
        "Dana",
        "--phone",
        "+14155550123",
        "--email",
        "d@example.org",
        "--channels",
        "sms,email",
        "--confirmed",
    )
    outage("incident", "open", "--title", "T", "--severity", "minor", "--component", "api")
    code, out, _ = outage("delivery", "list", "--incident", "1", "--json")
    assert code == 0
    rows = {(row["channel"], row["status"]) for row in json.loads(out)}
    assert ("sms", "fell_back") in rows and ("email", "sent") in rows


def test_approve_publishes_a_draft_and_refuses_a_public_incident(env: Path) -> None:
    from dispatcher.delivery.bootstrap import connect
    from dispatcher.incidents import correlate
    from dispatcher.ingest.events import AlertEvent, AlertStatus
    from dispatcher.settings import get_settings

    get_settings.cache_clear()
    pipeline = connect(get_settings())
    try:
        event = AlertEvent(
            source="generic",
            group_key="g",
            alert_key="a",
            status=AlertStatus.FIRING,
            title="Slow API",
            severity="major",
            components=["api"],
        )
        [incident_id] = correlate.ingest(pipeline.store, pipeline.settings, [event]).incident_ids
    finally:
        pipeline.close()
    code, out, _ = outage("incident", "list")
    assert "(draft)" in out
    code, out, _ = outage("incident", "approve", str(incident_id), "--title", "API is slow")
    assert code == 0
    code, out, _ = outage("incident", "show", str(incident_id), "--json")
    assert json.loads(out)["title"] == "API is slow"
    assert json.loads(out)["draft"] is False
    code, _, err = outage("incident", "approve", str(incident_id))
    assert code == 2 and "not a draft" in err
