"""Checks of a dispatcher's configuration and surroundings, each with how to fix what it finds.

Two callers share these checks, so they never disagree: `GET /readyz` runs the fast ones that say
whether this process can do its work now (`READINESS`: database, broker, templates, live
provider settings), concurrently, under a deadline well below a second; `outage doctor` runs all
of them (`DOCTOR`), in order, including the slow ones a new operator most often gets wrong:
schema out of date, no worker consuming, provider credentials refused, sender left at its
example value, public URL unreachable, webhook token unset.

A check takes a `Context` and returns findings; it never raises (an unexpected error is a failed
finding naming the exception) and never prints a secret.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from dispatcher.ops.checks_channels import (
    check_provider_accounts,
    check_providers_configured,
    check_senders,
    check_templates,
)
from dispatcher.ops.checks_infra import check_broker, check_database, check_schema, check_workers
from dispatcher.ops.checks_web import check_monitoring, check_public_url, check_webhook_token
from dispatcher.ops.findings import Check, Context, Finding, Status, fail, one_line

READY_DEADLINE_S = 0.8  # /readyz answers by then, whatever is still hanging


READINESS: tuple[tuple[str, Check], ...] = (
    ("database", check_database),
    ("broker", check_broker),
    ("templates", check_templates),
    ("providers", check_providers_configured),
)

DOCTOR: tuple[tuple[str, Check], ...] = (
    ("database", check_database),
    ("schema", check_schema),
    ("broker", check_broker),
    ("workers", check_workers),
    ("templates", check_templates),
    ("providers", check_provider_accounts),
    ("senders", check_senders),
    ("public_url", check_public_url),
    ("webhook_token", check_webhook_token),
    ("monitoring", check_monitoring),
)

# Doctor's checks that only make sense once an earlier one passed.
_NEEDS = {"schema": "database"}


def _guarded(name: str, check: Check, ctx: Context) -> list[Finding]:
    """Run one check; an unexpected exception is a failed finding, never a crash."""
    try:
        return check(ctx)
    except Exception as exc:  # a check's own bug must not hide the other findings
        return [fail(name, f"the check itself failed: {one_line(exc)}", "report this as a bug")]


def doctor(ctx: Context, checks: Sequence[tuple[str, Check]] = DOCTOR) -> list[Finding]:
    """Every check in order; a check whose prerequisite failed is left out."""
    findings: list[Finding] = []
    for name, check in checks:
        if _NEEDS.get(name) in ctx.failed:
            continue
        found = _guarded(name, check, ctx)
        if any(f.status is Status.FAIL for f in found):
            ctx.failed.add(name)
        findings.extend(found)
    return findings


_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="readiness")


def readiness(
    ctx: Context,
    checks: Sequence[tuple[str, Check]] = READINESS,
    deadline_s: float = READY_DEADLINE_S,
) -> list[Finding]:
    """The readiness checks at once, each in a thread; one still running at the deadline is a
    failure ("no answer"), so the caller answers in time even when a server hangs."""
    started = time.monotonic()
    futures = {_POOL.submit(_guarded, name, check, ctx): name for name, check in checks}
    done, _ = wait(futures, timeout=deadline_s)
    findings: list[Finding] = []
    for future, name in futures.items():
        if future in done:
            findings.extend(future.result())
        else:
            waited = time.monotonic() - started
            findings.append(
                fail(name, f"no answer within {waited:.1f} s", "see `outage doctor` for detail")
            )
    return findings


def all_ok(findings: Sequence[Finding]) -> bool:
    return all(finding.status is Status.OK for finding in findings)


def summary(findings: Sequence[Finding]) -> dict[str, Any]:
    """The JSON shape of /readyz and `outage doctor --json`."""
    return {
        "status": "ok" if all_ok(findings) else "fail",
        "checks": [finding.as_dict() for finding in findings],
    }
