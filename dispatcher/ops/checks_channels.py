"""The doctor's checks of the channels: every template renders, every channel in use has its
provider configured, the provider accepts the credentials, and the senders are real ones."""

from __future__ import annotations

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from channels.base import Channel, ChannelError
from dispatcher.models import FailureReason
from dispatcher.ops.findings import Context, Finding, fail, ok
from dispatcher.render.messages import render
from dispatcher.render.samples import every_topic
from dispatcher.render.templates import RenderError

EXAMPLE_DOMAINS = ("example.com", "example.org", "example.net")
TWILIO_TEST_NUMBER = "+15005550006"  # Twilio's magic test sender: accepted, never delivered


def check_templates(ctx: Context) -> list[Finding]:
    """Every installed channel renders every message topic (each incident state, the review)
    from the sample data."""
    broken: list[str] = []
    for name in ctx.registry.names:
        factory = ctx.registry.factory(name)
        for incident, update, recipient in every_topic():
            try:
                render(
                    name,
                    factory.limits,
                    incident,
                    update,
                    None if factory.address_field is None else recipient,
                    company_name=ctx.settings.company_name,
                    support_url=ctx.settings.support_url,
                    sms_max_segments=ctx.settings.sms_max_segments,
                    feedback_url=ctx.settings.feedback_url,
                )
            except RenderError as exc:
                broken.append(f"{name}/{update.topic}: {exc}")
    if broken:
        return [
            fail(
                "templates",
                "; ".join(broken),
                "fix the template under templates/<channel>/<locale>/ and check it with "
                "`outage template preview --channel <channel> --state <state>`",
            )
        ]
    return [ok("templates", f"{len(ctx.registry.names)} channels render every message")]


def _adapter(ctx: Context, name: str) -> Channel | Finding:
    """The channel's adapter, built as a worker builds it (no request is made)."""
    try:
        return ctx.registry.get(name)
    except ValueError as exc:  # a missing credential: the message names the variable
        return fail(
            f"provider:{name}",
            str(exc).split(":")[0],
            "set it in the environment of every process (web and workers), or use "
            "OUTAGE_PROVIDERS=sandbox",
        )


def check_providers_configured(ctx: Context) -> list[Finding]:
    """Live mode: every channel in use has its credentials (nothing is sent or fetched)."""
    if ctx.settings.providers == "sandbox":
        return [ok("providers", "sandbox: nothing reaches customers (OUTAGE_PROVIDERS=live)")]
    findings = []
    for name in ctx.channels_in_use():
        built = _adapter(ctx, name)
        if isinstance(built, Finding):
            findings.append(built)
    return findings or [
        ok("providers", "live credentials set for " + ", ".join(ctx.channels_in_use()))
    ]


_ACCOUNT_FIXES = {
    FailureReason.REJECTED: "the provider refused the credentials: copy them again from its "
    "console (a rotated key, a test key in live mode, or a missing permission)",
    FailureReason.RATE_LIMITED: "the provider is rate limiting this account: wait, or raise "
    "the account's limits",
}
_UNREACHABLE_FIX = (
    "the provider did not answer: check this host's outbound network, proxy and DNS, and the "
    "provider's status page"
)


def check_provider_accounts(ctx: Context) -> list[Finding]:
    """Each provider accepts our credentials: one harmless authenticated call per channel
    (Twilio: the account; SendGrid: the key's scopes; X: the user), against the sandbox in
    sandbox mode."""
    if ctx.settings.providers == "sandbox" and ctx.settings.sandbox_url is None:
        return [ok("providers", "sandbox started in-process by each process: nothing to check")]
    findings = []
    for name in ctx.channels_in_use():
        check = f"provider:{name}"
        built = _adapter(ctx, name)
        if isinstance(built, Finding):
            findings.append(built)
            continue
        try:
            answer = built.check_account()
        except ChannelError as exc:
            fix = _ACCOUNT_FIXES.get(exc.failure_reason, _UNREACHABLE_FIX)
            findings.append(fail(check, str(exc), fix))
            continue
        if answer is not None:
            findings.append(ok(check, answer))
    return findings


def check_senders(ctx: Context) -> list[Finding]:
    """The SMS sender is a valid number and the email sender a valid address, and in live mode
    neither is left at its example value."""
    settings, findings = ctx.settings, []
    live = settings.providers == "live"
    in_use = ctx.channels_in_use()
    if "sms" in in_use:
        try:
            valid = phonenumbers.is_valid_number(phonenumbers.parse(settings.sms_from, None))
        except phonenumbers.NumberParseException:
            valid = False
        if not valid:
            findings.append(
                fail(
                    "sender:sms",
                    f"OUTAGE_SMS_FROM={settings.sms_from!r} is not a valid number",
                    "set OUTAGE_SMS_FROM to your Twilio number in +E.164 form",
                )
            )
        elif live and settings.sms_from == TWILIO_TEST_NUMBER:
            findings.append(
                fail(
                    "sender:sms",
                    "OUTAGE_SMS_FROM is Twilio's test number: nothing is delivered",
                    "set OUTAGE_SMS_FROM to a number of your Twilio account",
                )
            )
        else:
            findings.append(ok("sender:sms", f"sending from {settings.sms_from}"))
    if "email" in in_use:
        try:
            validate_email(settings.email_from, check_deliverability=False)
            domain = settings.email_from.rpartition("@")[2].lower()
        except EmailNotValidError as exc:
            findings.append(
                fail(
                    "sender:email",
                    f"OUTAGE_EMAIL_FROM is not an address: {exc}",
                    "set OUTAGE_EMAIL_FROM to a sender verified in SendGrid",
                )
            )
        else:
            if live and domain in EXAMPLE_DOMAINS:
                findings.append(
                    fail(
                        "sender:email",
                        f"OUTAGE_EMAIL_FROM is still at {domain}",
                        "set OUTAGE_EMAIL_FROM to a sender verified in SendGrid (Sender "
                        "Authentication), on a domain with SPF and DKIM",
                    )
                )
            else:
                findings.append(ok("sender:email", f"sending from {settings.email_from}"))
    return findings
