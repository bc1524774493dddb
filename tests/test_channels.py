"""Every channel adapter, through its real SDK, against a real Sandbox.

Nothing of ours is patched: failures are injected in the sandbox, and the adapters are built the
way the dispatcher builds them (`from_settings`), with the backoff taken out (RetryPolicy with
`backoff_s=0`) so retries cost no waiting but what a provider's Retry-After asks. The status-code
table is shared by every channel.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from channels.base import Channel, Message, RetryPolicy
from channels.email import EmailChannel
from channels.sms import SmsChannel
from channels.social import SocialChannel
from channels.webhook import WebhookChannel, sign, verify
from dispatcher.models import FailureKind
from dispatcher.sandbox.server import Sandbox
from dispatcher.settings import Settings

RETRY = RetryPolicy(attempts=3, backoff_s=0)
TIMEOUT_S = 0.3
SECRET = "whsec_test_only"
TRANSIENT, PERMANENT = FailureKind.TRANSIENT, FailureKind.PERMANENT

MessageFactory = Callable[[int, str], Message]

FACTORIES: dict[str, tuple[type[Channel], MessageFactory]] = {
    "sms": (SmsChannel, lambda key, url: Message(key, f"+1415555{key:04d}", f"API down ({key})")),
    "email": (
        EmailChannel,
        lambda key, url: Message(
            key,
            f"user{key}@example.com",
            "The API is down.",
            subject="API outage",
            html="<p>The API is down.</p>",
            headers={"List-Unsubscribe": f"<https://status.example.com/u/{key}>"},
        ),
    ),
    "social": (SocialChannel, lambda key, url: Message(key, "", f"API outage, update {key}")),
    "webhook": (
        WebhookChannel,
        lambda key, url: Message(
            key, f"{url}/hooks/ops", "", secret=SECRET, payload={"state": "down", "n": key}
        ),
    ),
}


@pytest.fixture(scope="module")
def running_sandbox() -> Iterator[Sandbox]:
    with Sandbox(timeout_hold_s=1.0) as running:
        yield running


@pytest.fixture
def provider_sandbox(running_sandbox: Sandbox) -> Sandbox:
    """One server for the module, reset to a blank state for every test."""
    running_sandbox.clear()
    running_sandbox.clear_faults()
    running_sandbox.set_latency(0)
    return running_sandbox


def settings_for(url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "providers": "sandbox",
        "sandbox_url": url,
        "provider_timeout_s": TIMEOUT_S,
        "webhook_timeout_s": TIMEOUT_S,
        "send_concurrency": 4,
        "webhook_concurrency": 4,
    }
    return Settings(**(values | overrides))  # type: ignore[arg-type]


def build(name: str, url: str, **overrides: object) -> Channel:
    return FACTORIES[name][0].from_settings(settings_for(url, **overrides), RETRY)


def message(name: str, key: int, sandbox: Sandbox) -> Message:
    return FACTORIES[name][1](key, sandbox.url)


def requests_made(sandbox: Sandbox, name: str) -> int:
    return int(sandbox.stats()["requests"][name])


@pytest.fixture(params=list(FACTORIES))
def adapter(request: pytest.FixtureRequest, provider_sandbox: Sandbox) -> Iterator[Channel]:
    channel = build(request.param, provider_sandbox.url)
    yield channel
    channel.close()


# -- every channel --------------------------------------------------------------------------


def test_a_message_is_recorded_with_its_provider_id(
    adapter: Channel, provider_sandbox: Sandbox
) -> None:
    sent = message(adapter.name, 1, provider_sandbox)
    [outcome] = adapter.send([sent])
    assert outcome.ok, outcome.error
    assert outcome.attempts == 1
    [record] = provider_sandbox.messages(adapter.name)
    assert record["provider_id"] == outcome.provider_id
    assert record["headers"]["Authorization" if adapter.name != "webhook" else "User-Agent"]


@pytest.mark.parametrize(
    ("kind", "injected", "failure", "attempts"),
    [
        pytest.param("429", 1, None, 2, id="429-once-retried-to-success"),
        pytest.param("429", 3, TRANSIENT, 3, id="429-always"),
        pytest.param("500", 1, None, 2, id="500-once"),
        pytest.param("500", 3, TRANSIENT, 3, id="500-always"),
        pytest.param("503", 3, TRANSIENT, 3, id="503-always"),
        # A timeout is tried again through the queue, not inside the send: one try each.
        pytest.param("timeout", 1, TRANSIENT, 1, id="timeout-left-to-the-queue"),
    ],
)
def test_status_table(
    adapter: Channel,
    provider_sandbox: Sandbox,
    kind: str,
    injected: int,
    failure: FailureKind | None,
    attempts: int,
) -> None:
    provider_sandbox.inject_failures(injected, kind, channel=adapter.name)  # type: ignore[arg-type]
    [outcome] = adapter.send([message(adapter.name, 1, provider_sandbox)])
    assert outcome.failure == failure, outcome.error
    assert outcome.attempts == attempts
    assert requests_made(provider_sandbox, adapter.name) == attempts
    assert len(provider_sandbox.messages(adapter.name)) == (1 if failure is None else 0)


def test_permanent_failure_is_not_retried(adapter: Channel, provider_sandbox: Sandbox) -> None:
    sent = message(adapter.name, 1, provider_sandbox)
    if adapter.broadcast:  # no recipient to reject: X refuses a repeated post for good
        assert adapter.send([sent])[0].ok
    else:
        provider_sandbox.inject_recipient_failure(sent.to)
    before = requests_made(provider_sandbox, adapter.name)
    [outcome] = adapter.send([sent])
    assert outcome.failure is PERMANENT
    assert outcome.attempts == 1
    assert requests_made(provider_sandbox, adapter.name) - before == 1


def test_long_retry_after_is_left_to_the_queue(adapter: Channel, provider_sandbox: Sandbox) -> None:
    """A Retry-After beyond backoff_max_s stops the retries inside the send and is reported."""
    provider_sandbox.inject_failures(1, "429", channel=adapter.name, retry_after_s=60)
    [outcome] = adapter.send([message(adapter.name, 1, provider_sandbox)])
    assert outcome.failure is TRANSIENT
    assert outcome.attempts == 1
    assert outcome.retry_after_s is not None
    assert 55 <= outcome.retry_after_s <= 61


def test_short_retry_after_is_waited_out_in_the_send(
    adapter: Channel, provider_sandbox: Sandbox
) -> None:
    """A Retry-After within backoff_max_s is honoured inside the send even with the backoff
    taken out: the second request reaches the provider no sooner than it asked, by the
    provider's own clock. (X's rate window resets on a whole second: it may wait up to 1 s.)"""
    asked_s = 0.25
    provider_sandbox.inject_failures(1, "429", channel=adapter.name, retry_after_s=asked_s)
    [outcome] = adapter.send([message(adapter.name, 1, provider_sandbox)])
    assert outcome.ok, outcome.error
    assert outcome.attempts == 2
    (first, refused), (second, accepted) = provider_sandbox.request_log(adapter.name)
    assert refused == 429 and 200 <= accepted < 300
    assert second - first >= asked_s


@pytest.mark.parametrize("name", list(FACTORIES))
def test_unreachable_provider_is_transient(name: str, provider_sandbox: Sandbox) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed_url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    channel = build(name, closed_url)
    try:
        [outcome] = channel.send([message(name, 1, provider_sandbox)])
    finally:
        channel.close()
    assert outcome.failure is TRANSIENT
    assert outcome.attempts == RETRY.attempts


@pytest.mark.parametrize("name", ["sms", "email", "webhook"])
def test_a_batch_is_sent_concurrently_in_order(name: str, provider_sandbox: Sandbox) -> None:
    channel = build(name, provider_sandbox.url)
    batch = [message(name, key, provider_sandbox) for key in range(10)]
    if name == "email":  # distinct content, so that nothing is grouped
        batch = [Message(m.key, m.to, f"text {m.key}", subject="S") for m in batch]
    try:
        outcomes = channel.send(batch)
    finally:
        channel.close()
    assert [o.key for o in outcomes] == list(range(10))
    assert all(o.ok for o in outcomes)
    assert len({o.provider_id for o in outcomes}) == 10
    assert len(provider_sandbox.messages(name)) == 10


@pytest.mark.parametrize("name", list(FACTORIES))
def test_sandbox_mode_needs_a_sandbox_url(name: str) -> None:
    with pytest.raises(ValueError, match="OUTAGE_SANDBOX_URL"):
        FACTORIES[name][0].from_settings(Settings(providers="sandbox", sandbox_url=None), RETRY)


# -- SMS ------------------------------------------------------------------------------------


def test_sms_fields(provider_sandbox: Sandbox) -> None:
    channel = build("sms", provider_sandbox.url, sms_from="+15005550001")
    try:
        [outcome] = channel.send([Message(7, "+14155550100", "API down since 10:02 UTC")])
    finally:
        channel.close()
    [record] = provider_sandbox.messages("sms")
    assert (record["to"], record["body"]) == ("+14155550100", "API down since 10:02 UTC")
    assert record["meta"]["from"] == "+15005550001"
    assert outcome.provider_id is not None
    assert outcome.provider_id.startswith("SM")


def test_sms_invalid_number_is_permanent(provider_sandbox: Sandbox) -> None:
    channel = build("sms", provider_sandbox.url)
    try:
        [outcome] = channel.send([Message(1, "0415555", "x")])
    finally:
        channel.close()
    assert outcome.failure is PERMANENT
    assert outcome.error is not None
    assert "21211" in outcome.error


# -- email ----------------------------------------------------------------------------------


@pytest.fixture
def email(provider_sandbox: Sandbox) -> Iterator[Channel]:
    channel = build("email", provider_sandbox.url, email_from="status@example.com")
    yield channel
    channel.close()


def test_email_fields(email: Channel, provider_sandbox: Sandbox) -> None:
    [outcome] = email.send([message("email", 3, provider_sandbox)])
    assert outcome.ok, outcome.error
    [record] = provider_sandbox.messages("email")
    assert record["to"] == "user3@example.com"
    assert record["subject"] == "API outage"
    assert (record["body"], record["html"]) == ("The API is down.", "<p>The API is down.</p>")
    assert record["meta"]["from"] == "status@example.com"
    assert record["meta"]["custom_args"] == {"delivery_id": "3"}
    assert record["meta"]["mail_headers"] == {
        "List-Unsubscribe": "<https://status.example.com/u/3>"
    }


def test_identical_emails_share_one_request(email: Channel, provider_sandbox: Sandbox) -> None:
    batch = [message("email", key, provider_sandbox) for key in (5, 3, 9)]
    outcomes = email.send(batch)
    assert requests_made(provider_sandbox, "email") == 1
    assert [o.key for o in outcomes] == [5, 3, 9]
    assert all(o.ok for o in outcomes)
    assert len({o.provider_id for o in outcomes}) == 1
    records = provider_sandbox.messages("email")
    assert [r["to"] for r in records] == [m.to for m in batch]  # personalizations in order
    assert [r["meta"]["custom_args"]["delivery_id"] for r in records] == ["5", "3", "9"]
    assert [r["meta"]["mail_headers"]["List-Unsubscribe"] for r in records] == [
        m.headers["List-Unsubscribe"] for m in batch
    ]


def test_different_content_and_repeated_addresses_split_requests(
    email: Channel, provider_sandbox: Sandbox
) -> None:
    same = message("email", 1, provider_sandbox)
    other = Message(2, "user2@example.com", "Resolved.", subject="API outage resolved")
    again = Message(3, same.to, same.text, subject=same.subject, html=same.html)
    outcomes = email.send([same, other, again])
    assert all(o.ok for o in outcomes)
    assert requests_made(provider_sandbox, "email") == 3
    assert outcomes[0].provider_id != outcomes[2].provider_id


def test_one_bad_address_does_not_sink_the_group(email: Channel, provider_sandbox: Sandbox) -> None:
    batch = [message("email", key, provider_sandbox) for key in range(3)]
    provider_sandbox.inject_recipient_failure(batch[1].to)
    outcomes = email.send(batch)
    assert [o.failure for o in outcomes] == [None, PERMANENT, None]
    assert requests_made(provider_sandbox, "email") == 1 + 3  # the group, then one by one
    # Resent one by one, concurrently: in either order.
    assert sorted(r["to"] for r in provider_sandbox.messages("email")) == sorted(
        [batch[0].to, batch[2].to]
    )


def test_a_group_is_retried_as_a_whole(email: Channel, provider_sandbox: Sandbox) -> None:
    provider_sandbox.inject_failures(1, "503", channel="email")
    outcomes = email.send([message("email", key, provider_sandbox) for key in range(3)])
    assert all(o.ok and o.attempts == 2 for o in outcomes)
    assert requests_made(provider_sandbox, "email") == 2


def test_a_group_failing_transiently_fails_every_message(
    email: Channel, provider_sandbox: Sandbox
) -> None:
    provider_sandbox.inject_failures(3, "500", channel="email")
    outcomes = email.send([message("email", key, provider_sandbox) for key in range(3)])
    assert [(o.failure, o.attempts) for o in outcomes] == [(TRANSIENT, 3)] * 3


def test_more_than_a_thousand_recipients_take_two_requests(
    email: Channel, provider_sandbox: Sandbox
) -> None:
    outcomes = email.send([message("email", key, provider_sandbox) for key in range(1001)])
    assert all(o.ok for o in outcomes)
    assert requests_made(provider_sandbox, "email") == 2
    assert len(provider_sandbox.messages("email")) == 1001


# -- social ---------------------------------------------------------------------------------


def test_social_duplicate_and_too_long(provider_sandbox: Sandbox) -> None:
    channel = build("social", provider_sandbox.url)
    try:
        [first] = channel.send([Message(1, "", "API down")])
        [duplicate] = channel.send([Message(2, "", "API down")])
        [too_long] = channel.send([Message(3, "", "x" * 281)])
    finally:
        channel.close()
    assert first.ok
    assert duplicate.failure is PERMANENT
    assert "duplicate content" in (duplicate.error or "")
    assert too_long.failure is PERMANENT
    assert [r["body"] for r in provider_sandbox.messages("social")] == ["API down"]


# -- webhook --------------------------------------------------------------------------------


@pytest.fixture
def webhook(provider_sandbox: Sandbox) -> Iterator[Channel]:
    channel = build("webhook", provider_sandbox.url)
    yield channel
    channel.close()


def test_webhook_is_signed(webhook: Channel, provider_sandbox: Sandbox) -> None:
    [outcome] = webhook.send([message("webhook", 4, provider_sandbox)])
    assert outcome.ok, outcome.error
    [record] = provider_sandbox.messages("webhook")
    body = record["body"].encode()
    assert json.loads(body) == {"state": "down", "n": 4}
    assert b" " not in body  # compact JSON
    headers = record["headers"]
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == "outage-dispatcher"
    assert headers["X-Outage-Delivery"] == "4"
    signature = headers["X-Outage-Signature"]
    assert verify(SECRET, signature, body)
    assert not verify("another secret", signature, body)
    assert not verify(SECRET, signature, body + b" ")
    assert not verify(SECRET, signature, body, now=time.time() + 3600)  # a replay, later


def test_sign_and_verify() -> None:
    header = sign("s", 1_700_000_000, b"{}")
    assert header.startswith("t=1700000000,v1=")
    assert verify("s", header, b"{}", now=1_700_000_100)
    assert verify("s", f"{header},v1=00ff", b"{}", now=1_700_000_000)  # rotation: any v1
    assert not verify("s", "v1=abc", b"{}")
    assert not verify("s", "garbage", b"{}")


def test_webhook_text_only_payload(webhook: Channel, provider_sandbox: Sandbox) -> None:
    url = f"{provider_sandbox.url}/hooks/chat"
    [outcome] = webhook.send([Message(1, url, "API down", secret=SECRET)])
    assert outcome.ok
    assert provider_sandbox.messages("webhook")[0]["body"] == '{"text":"API down"}'


def test_webhook_never_sends_unsigned(webhook: Channel, provider_sandbox: Sandbox) -> None:
    [outcome] = webhook.send([Message(1, f"{provider_sandbox.url}/hooks/x", "x")])
    assert outcome.failure is PERMANENT
    assert requests_made(provider_sandbox, "webhook") == 0


def test_webhook_gone(webhook: Channel, provider_sandbox: Sandbox) -> None:
    sent = message("webhook", 1, provider_sandbox)
    provider_sandbox.inject_recipient_failure(sent.to)
    [outcome] = webhook.send([sent])
    assert outcome.failure is PERMANENT
    assert "endpoint gone" in (outcome.error or "")


def test_webhook_in_sandbox_mode_never_leaves_the_sandbox(
    webhook: Channel, provider_sandbox: Sandbox
) -> None:
    customer = "https://hooks.example.com:8443/outage?team=ops"
    [outcome] = webhook.send([Message(1, customer, "x", secret=SECRET)])
    assert outcome.ok, outcome.error
    [record] = provider_sandbox.messages("webhook")
    assert record["to"] == "/hooks/hooks.example.com:8443/outage?team=ops"


def test_webhook_bad_url_is_permanent() -> None:
    channel = WebhookChannel.from_settings(Settings(providers="live"), RETRY)
    try:
        [outcome] = channel.send([Message(1, "ftp://example.com/hook", "x", secret=SECRET)])
    finally:
        channel.close()
    assert outcome.failure is PERMANENT
    assert outcome.attempts == 1


# -- live mode ------------------------------------------------------------------------------

LIVE_SECRET = "live-secret-value-must-not-leak"


@pytest.mark.parametrize(
    ("factory", "present", "missing"),
    [
        (SmsChannel, {"TWILIO_AUTH_TOKEN": LIVE_SECRET}, "TWILIO_ACCOUNT_SID"),
        (SmsChannel, {"TWILIO_ACCOUNT_SID": "AC123"}, "TWILIO_AUTH_TOKEN"),
        (EmailChannel, {}, "SENDGRID_API_KEY"),
        (
            SocialChannel,
            {"X_API_KEY": LIVE_SECRET, "X_API_SECRET": LIVE_SECRET, "X_ACCESS_TOKEN": LIVE_SECRET},
            "X_ACCESS_TOKEN_SECRET",
        ),
    ],
)
def test_live_mode_requires_credentials(
    monkeypatch: pytest.MonkeyPatch,
    factory: type[Channel],
    present: dict[str, str],
    missing: str,
) -> None:
    for name, value in present.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=missing) as raised:
        factory.from_settings(Settings(providers="live"), RETRY)  # type: ignore[attr-defined]
    assert LIVE_SECRET not in str(raised.value)


def test_live_adapters_do_not_show_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    names = ["TWILIO_AUTH_TOKEN", "SENDGRID_API_KEY", "X_API_KEY", "X_API_SECRET"]
    for name in [*names, "X_ACCESS_TOKEN", "X_ACCESS_TOKEN_SECRET"]:
        monkeypatch.setenv(name, LIVE_SECRET)
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC123")
    settings = Settings(providers="live")
    for factory in (SmsChannel, EmailChannel, SocialChannel, WebhookChannel):
        channel = factory.from_settings(settings, RETRY)
        try:
            assert LIVE_SECRET not in repr(channel)
            assert LIVE_SECRET not in str(vars(channel))
        finally:
            channel.close()
