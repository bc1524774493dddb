"""`outage subscriber …`: add, import, list, show, update and remove subscribers, and print
their links."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from dispatcher.cli.common import (
    JsonOption,
    console,
    open_pipeline,
    print_json,
    say_error,
    timestamp,
    user_errors,
)
from dispatcher.links import LinkPurpose
from dispatcher.models import Severity, SubscriberIn, slug
from dispatcher.policy.scope import ScopeError, pair
from dispatcher.store import Subscriber
from dispatcher.subscribers import confirmations, imports, preferences, records

# Fields of a subscriber that `add` takes as an option of the same name.
OPTION_FIELDS = ("email", "phone", "webhook", "channels")

app = typer.Typer(
    help="Add, import, list, show, update and remove subscribers, and print their links.",
    no_args_is_help=True,
)

AttrOption = Annotated[
    list[str] | None,
    typer.Option(
        "--attr",
        metavar="KEY=VALUE",
        help="An attribute scoped incidents are matched on (region=eu-west); repeat for more.",
    ),
]


def _attributes(items: list[str] | None, option: str = "--attr") -> dict[str, str]:
    """`--attr region=eu-west --attr plan=enterprise` as attributes; a key given twice is an
    error naming the option."""
    found: dict[str, str] = {}
    for item in items or []:
        key, value = pair(item, option)
        if key in found:
            raise ScopeError(f"{option}: {key!r} is given twice")
        found[key] = value
    return found


@app.command("add")
@user_errors
def subscriber_add(
    name: Annotated[str, typer.Option(help="Who this is.")],
    channels: Annotated[
        str, typer.Option(help="Channels in order of preference: sms,email,webhook.")
    ],
    email: Annotated[str | None, typer.Option(help="Email address.")] = None,
    phone: Annotated[
        str | None,
        typer.Option(help="Mobile number in +E.164 form, in a country of OUTAGE_SMS_COUNTRIES."),
    ] = None,
    webhook: Annotated[
        str | None, typer.Option(help="http(s) URL to POST signed updates to.")
    ] = None,
    component: Annotated[
        list[str] | None, typer.Option(help="Only hear of this component; repeat. Default: all.")
    ] = None,
    min_severity: Annotated[
        Severity, typer.Option(help="Hear nothing below this.")
    ] = Severity.MINOR,
    locale: Annotated[str, typer.Option(help="Language of the messages.")] = "en",
    quiet_hours: Annotated[
        str | None,
        typer.Option(help="Hold non-critical updates in this window, e.g. 22:00-07:00."),
    ] = None,
    timezone: Annotated[str, typer.Option(help="Time zone of the quiet hours (IANA).")] = "UTC",
    confirmed: Annotated[
        bool,
        typer.Option(
            help="You vouch that the addresses are theirs: no confirmation is sent (audited). "
            "A vouched --phone may be a landline or from outside OUTAGE_SMS_COUNTRIES; "
            "premium-rate and shared-cost numbers are refused all the same."
        ),
    ] = False,
    internal: Annotated[
        bool,
        typer.Option(help="The team: every update, drafts, reminders and internal notes."),
    ] = False,
    tier: Annotated[
        int, typer.Option(min=0, max=9, help="Priority tier (key accounts higher): told first.")
    ] = 0,
    attr: AttrOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add a subscriber. Unless --confirmed, each email address and phone number is sent a
    confirmation first, and nothing else goes there until it is confirmed. A webhook subscriber
    gets a signing secret, printed once."""
    quiet_start, quiet_end = _quiet_window(quiet_hours)
    try:
        data = SubscriberIn(
            name=name,
            email=email,
            phone=phone,
            webhook=webhook,
            channels=channels.split(","),
            components=component or [],
            min_severity=min_severity,
            locale=locale,
            quiet_start=quiet_start,
            quiet_end=quiet_end,
            timezone=timezone,
            confirmed=confirmed,
            internal=internal,
            tier=tier,
            attributes=_attributes(attr),
        )
    except ValidationError as exc:
        if any(error["loc"][:1] in (("quiet_start",), ("quiet_end",)) for error in exc.errors()):
            raise _bad_window(quiet_hours) from None
        raise
    with open_pipeline() as pipeline:
        try:
            subscriber = records.add(pipeline.store, pipeline.registry, data)
        except records.SubscriberError as exc:  # named as the option that was typed
            field, _, why = str(exc).partition(": ")
            if field not in OPTION_FIELDS:
                raise
            raise records.SubscriberError(f"--{field}: {why}") from None
        requested = [] if data.confirmed else confirmations.request(pipeline, subscriber.id)
        with pipeline.store.session() as session:
            opted_out = sorted(records.opt_outs(session, subscriber))
    if as_json:
        print_json(records.as_dict(subscriber, with_secret=True))
        return
    console.print(f"subscriber [bold]{subscriber.id}[/] added: {subscriber.name}")
    if subscriber.webhook_secret:
        console.print(f"webhook signing secret (shown once): {subscriber.webhook_secret}")
    for item in requested:
        outcome = "sent" if item.sent else "[red]could not be sent[/]"
        console.print(f"confirmation for the {item.field} {outcome} by {item.channel}")
    if requested:
        console.print("[yellow]not confirmed:[/] nothing is sent until the addresses are confirmed")
    if opted_out:
        console.print(
            f"[yellow]opted out earlier, and still:[/] {', '.join(opted_out)} "
            "(only the person can undo that)"
        )


@app.command("list")
@user_errors
def subscriber_list(as_json: JsonOption = False) -> None:
    """List subscribers with their channels and filters."""
    with open_pipeline() as pipeline:
        found = records.list_all(pipeline.store)
    if as_json:
        print_json([records.as_dict(s) for s in found])
        return
    table = Table("id", "name", "channels", "addresses", "components", "min")
    table.add_column("attributes", overflow="fold")
    table.add_column("confirmed")
    for s in found:
        addresses = ", ".join(a for a in (s.phone, s.email, s.webhook_url) if a)
        table.add_row(
            str(s.id),
            s.name,
            " > ".join(s.channels),
            addresses,
            ", ".join(s.components) or "all",
            s.min_severity,
            "\n".join(f"{key}={value}" for key, value in s.attributes.items()),
            _confirmation(s),
        )
    console.print(table)


@app.command("show")
@user_errors
def subscriber_show(
    subscriber_id: Annotated[int, typer.Argument(metavar="ID")], as_json: JsonOption = False
) -> None:
    """Show one subscriber: channels, addresses, filters, attributes and consent."""
    with open_pipeline() as pipeline:
        found = preferences.get(pipeline.store, subscriber_id)
    if as_json:
        print_json(records.as_dict(found))
        return
    table = Table("field", "value", show_header=False)
    addresses = ", ".join(a for a in (found.phone, found.email, found.webhook_url) if a)
    quiet = f"{found.quiet_start}-{found.quiet_end} {found.timezone}" if found.quiet_start else ""
    for name, value in (
        ("id", str(found.id)),
        ("name", found.name),
        ("channels", " > ".join(found.channels)),
        ("addresses", addresses),
        ("components", ", ".join(found.components) or "all"),
        ("min severity", found.min_severity),
        ("attributes", _pairs(found.attributes) or "none"),
        ("tier", str(found.tier)),
        ("internal", "yes" if found.internal else "no"),
        ("quiet hours", quiet or "none"),
        ("locale", found.locale),
        ("confirmed", _confirmation(found)),
        ("unsubscribed", timestamp(found.unsubscribed_at) or "no"),
    ):
        table.add_row(name, value)
    console.print(table)


@app.command("update")
@user_errors
def subscriber_update(
    subscriber_id: Annotated[int, typer.Argument(metavar="ID")],
    attr: AttrOption = None,
    unset_attr: Annotated[
        list[str] | None,
        typer.Option("--unset-attr", metavar="KEY", help="Remove this attribute; repeat."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Set or remove a subscriber's attributes (the others stay as they are)."""
    changes: dict[str, str | None] = dict(_attributes(attr))
    for item in unset_attr or []:
        try:
            key = slug(item, "key")
        except ValueError as exc:
            raise ScopeError(f"--unset-attr: {exc}") from None
        if key in changes:
            raise ScopeError(f"--unset-attr: {key!r} is also given to --attr")
        changes[key] = None
    if not changes:
        raise ScopeError("--attr or --unset-attr: say what to change")
    with open_pipeline() as pipeline:
        saved = preferences.update_preferences(
            pipeline.store,
            pipeline.registry,
            subscriber_id,
            {},
            actor="operator",
            attributes=changes,
        )
    if as_json:
        print_json(records.as_dict(saved.subscriber))
        return
    shown = _pairs(saved.subscriber.attributes) or "none"
    console.print(f"subscriber [bold]{subscriber_id}[/] attributes: {shown}", highlight=False)


@app.command("remove")
@user_errors
def subscriber_remove(subscriber_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Remove a subscriber and their addresses (delivery statistics stay, anonymous)."""
    with open_pipeline() as pipeline:
        preferences.erase(pipeline.store, subscriber_id, actor="operator")
    console.print(f"subscriber {subscriber_id} removed")


@app.command("link")
@user_errors
def subscriber_link(
    subscriber_id: Annotated[int, typer.Argument(metavar="ID")],
    purpose: Annotated[
        LinkPurpose,
        typer.Option(
            help="manage: the preference centre; unsubscribe: one click; page: their private "
            "status page."
        ),
    ] = LinkPurpose.MANAGE,
    page: Annotated[
        bool, typer.Option("--page", help="Their private status page (the same as --purpose page).")
    ] = False,
) -> None:
    """Print a subscriber's signed link (built on OUTAGE_PUBLIC_URL), e.g. to answer a support
    request. Anyone holding a preference link can change that subscriber's preferences until it
    expires; a page link shows the incidents that concern them, and their Atom feed."""
    if page:
        purpose = LinkPurpose.PAGE
    if purpose is LinkPurpose.CONFIRM:
        raise records.SubscriberError("purpose: confirmation links are sent, not printed")
    with open_pipeline() as pipeline:
        url = pipeline.links.url(purpose, preferences.get(pipeline.store, subscriber_id))
    print(url)  # plain, unwrapped: rich would break a long link across lines


@app.command("import")
@user_errors
def subscriber_import(
    file: Annotated[Path, typer.Argument(help="CSV: name,email,phone,webhook,channels,...")],
    send_confirmations: Annotated[
        bool,
        typer.Option(
            "--send-confirmations",
            help="Ask each unconfirmed address to confirm now. Without it they wait, and are "
            "sent nothing.",
        ),
    ] = False,
) -> None:
    """Import subscribers from a spreadsheet's CSV (UTF-8, UTF-16 or Windows-1252; comma,
    semicolon or tab): good rows are stored, bad rows reported by line, and an address already
    subscribed is skipped, never added twice nor changed."""
    with open_pipeline() as pipeline:
        report = imports.import_file(pipeline.store, pipeline.registry, file)
        asked: list[confirmations.Requested] = []
        if send_confirmations:
            known = [s.subscriber_id for s in report.skipped if s.subscriber_id is not None]
            to_ask = report.waiting + confirmations.never_asked(pipeline.store, known)
            for subscriber_id in to_ask:
                asked.extend(confirmations.request(pipeline, subscriber_id))
    _print_import(file, report, asked, send_confirmations)
    if report.errors:
        raise typer.Exit(1)


_SKIPS_LISTED = 20  # an import of 10,000 known customers lists a few, then counts the rest


def _print_import(
    file: Path,
    report: imports.ImportReport,
    asked: list[confirmations.Requested],
    send_confirmations: bool,
) -> None:
    """What the import did, and what the operator may want to do next."""
    console.print(
        f"read {file.name} as {report.encoding}, {report.delimiter_name}-separated", highlight=False
    )
    console.print(f"imported {report.imported} subscribers")
    if report.skipped:
        console.print(
            f"[yellow]skipped {len(report.skipped)} already subscribed[/] "
            "(an import never adds an address twice, nor changes a subscriber):"
        )
        for skipped in report.skipped[:_SKIPS_LISTED]:
            where = (
                f"subscriber {skipped.subscriber_id}"
                if skipped.subscriber_id is not None
                else f"line {skipped.earlier_line} of this file"
            )
            console.print(f"  line {skipped.line}: {skipped.address} is {where}", highlight=False)
        if len(report.skipped) > _SKIPS_LISTED:
            console.print(f"  and {len(report.skipped) - _SKIPS_LISTED} more")
    if report.still_suppressed:
        console.print(
            f"[yellow]{report.still_suppressed} of them opted out earlier:[/] "
            "those addresses stay suppressed"
        )
    if send_confirmations:
        sent = sum(item.sent for item in asked)
        console.print(
            f"asked for {len(asked)} confirmation(s): {sent} sent, {len(asked) - sent} queued "
            "(paced, or retried; `outage delivery list` shows them)"
        )
    elif report.waiting:
        waiting = len(report.waiting)
        console.print(
            f"[yellow]{waiting} of them {'has' if waiting == 1 else 'have'} addresses waiting "
            "for confirmation:[/] "
            "nothing is sent to them until they confirm, and nothing has asked them yet. "
            "Run the import again with --send-confirmations to ask them, or mark people who "
            "agreed already with confirmed=yes."
        )
    for line, problem in report.errors:
        say_error(f"[red]line {line}:[/]", problem)


def _quiet_window(text: str | None) -> tuple[str | None, str | None]:
    """--quiet-hours as the two times the subscriber's fields hold: "22:00-07:00"."""
    if text is None:
        return None, None
    start, dash, end = (part.strip() for part in text.partition("-"))
    if not (dash and start and end):
        raise _bad_window(text)
    return start, end


def _bad_window(text: str | None) -> records.SubscriberError:
    return records.SubscriberError(
        f"--quiet-hours: {text!r} is not a window of 24-hour times like 22:00-07:00"
    )


def _pairs(attributes: dict[str, str]) -> str:
    return " ".join(f"{key}={value}" for key, value in attributes.items())


def _confirmation(subscriber: Subscriber) -> str:
    """Which of the subscriber's addresses still wait for their double opt-in."""
    waiting = [
        field
        for field, confirmed in (
            ("email", subscriber.email_confirmed_at),
            ("phone", subscriber.phone_confirmed_at),
        )
        if getattr(subscriber, field) and confirmed is None
    ]
    return "yes" if not waiting else "waiting: " + ", ".join(waiting)
