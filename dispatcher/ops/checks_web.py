"""The doctor's checks of the public face: the links in messages reach this dispatcher, the
monitoring webhooks are protected by a token, and which monitoring sources have sent a test."""

from __future__ import annotations

import httpx
from sqlalchemy.orm import Session

from dispatcher.ingest.source_tests import last_received
from dispatcher.ops.findings import PROBE_TIMEOUT_S, Context, Finding, fail, ok, one_line, warn


def check_public_url(ctx: Context) -> list[Finding]:
    """Links in every message (manage, unsubscribe, the incident page) start with the public URL:
    it must answer, and in live mode must not be this machine's loopback address."""
    base = ctx.settings.public_url.rstrip("/")
    if ctx.settings.providers == "live" and ("//127." in base or "//localhost" in base):
        return [
            fail(
                "public_url",
                f"OUTAGE_PUBLIC_URL={base} is this machine: customers' links fail",
                "set OUTAGE_PUBLIC_URL to the address customers reach `outage serve` at",
            )
        ]
    try:
        response = httpx.get(f"{base}/healthz", timeout=PROBE_TIMEOUT_S, follow_redirects=True)
    except httpx.HTTPError as exc:
        return [
            fail(
                "public_url",
                f"{base} did not answer: {one_line(exc)}",
                "start `outage serve` there, or set OUTAGE_PUBLIC_URL to where it runs",
            )
        ]
    if response.status_code != 200:
        return [
            fail(
                "public_url",
                f"{base}/healthz answered {response.status_code}",
                "point OUTAGE_PUBLIC_URL at `outage serve` (something else answers there)",
            )
        ]
    return [ok("public_url", f"{base} answers")]


def check_webhook_token(ctx: Context) -> list[Finding]:
    settings = ctx.settings
    if settings.webhook_token is None and not settings.webhook_tokens:
        return [
            fail(
                "webhook_token",
                "no token: every monitoring webhook is refused (401)",
                "set OUTAGE_WEBHOOK_TOKEN to a long random value (`openssl rand -hex 32`) and "
                "send it from Alertmanager/Grafana as `Authorization: Bearer …`",
            )
        ]
    tokens = [t for t in [settings.webhook_token, *settings.webhook_tokens.values()] if t]
    if any(len(token.get_secret_value()) < 16 for token in tokens):
        return [
            warn(
                "webhook_token",
                "a webhook token is shorter than 16 characters",
                "use a long random value (`openssl rand -hex 32`)",
            )
        ]
    return [ok("webhook_token", "set")]


# -- running them ------------------------------------------------------------------------------


def check_monitoring(ctx: Context) -> list[Finding]:
    """When each monitoring source last sent its own test (Grafana's "Test" button, Uptime
    Kuma's, PagerDuty's ping), so a new set-up can be seen working from our side; and PagerDuty
    services mapped with no secret to check PagerDuty's signature."""
    findings: list[Finding] = []
    if ctx.settings.ingest.pagerduty_services and ctx.settings.pagerduty_webhook_secret is None:
        findings.append(
            warn(
                "monitoring",
                "PagerDuty services are mapped but PAGERDUTY_WEBHOOK_SECRET is unset: every "
                "PagerDuty webhook is refused (401)",
                "set PAGERDUTY_WEBHOOK_SECRET to the webhook subscription's signing secret",
            )
        )
    if "database" in ctx.failed or "schema" in ctx.failed:
        return findings
    with Session(ctx.engine) as session:
        tests = last_received(session)
    detail = "; ".join(
        f"{source}: last test {at:%Y-%m-%d %H:%M:%S} UTC" for source, at in sorted(tests.items())
    )
    findings.append(ok("monitoring", detail or "no monitoring source has sent a test yet"))
    return findings
