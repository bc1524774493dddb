"""`outage doctor`: what a new operator most often gets wrong, and how to fix each."""

from __future__ import annotations

import typer
from rich.table import Table

from dispatcher.cli.common import JsonOption, console, print_json, settings, user_errors
from dispatcher.ops import doctor as checks
from dispatcher.ops.findings import Context, Status

app = typer.Typer()

_STYLES = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "red"}


@app.command()
@user_errors
def doctor(as_json: JsonOption = False) -> None:
    """Check the set-up and say how to fix what is wrong; exit code 0 only when all is well.

    Database reachable and migrated, broker reachable, workers consuming, templates, provider
    credentials (one harmless authenticated call each), senders, public URL, webhook token."""
    context = Context.for_doctor(settings())
    try:
        findings = checks.doctor(context)
    finally:
        context.close()
    if as_json:
        print_json(checks.summary(findings))
    else:
        table = Table("check", "", "finding", "how to fix", show_lines=True)
        for finding in findings:
            style = _STYLES[finding.status]
            table.add_row(
                finding.check,
                f"[{style}]{finding.status}[/]",
                finding.detail,
                finding.fix or "",
            )
        console.print(table)
        problems = sum(finding.status is not Status.OK for finding in findings)
        console.print(
            "[green]all is well[/]" if not problems else f"[red]{problems} to fix[/]",
            highlight=False,
        )
    raise typer.Exit(0 if checks.all_ok(findings) else 1)
