"""The doctor's checks of the public face: the links in messages reach this dispatcher, and the
monitoring webhooks are protected by a token."""

from __future__ import annotations

import httpx

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
