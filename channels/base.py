"""The contract every channel adapter follows, and the sequence they all share.

An adapter knows its provider and nothing of incidents or subscribers. It declares its name and
limits and implements one request: `send_one_async` when its SDK speaks asyncio (Twilio, aiohttp
for webhooks), else the blocking `send_one` (the base runs it in the adapter's threads); or `send`
when its provider batches. The base owns the rest: sending a batch concurrently on the process's
sending loop (channels/aio.py) with at most `concurrency` requests in flight, retrying transient
failures inside one send (tenacity), and turning every failure into an `Outcome` instead of an
exception, so one bad address never sinks a batch.

A timeout is not retried inside the send: the request held a slot for the whole timeout, and
another try would hold it as long again while the rest of the batch waits; the message goes
back to the queue (transient) and is tried later. Where each recipient is a server of its own
(webhooks), a send also does not wait for its slowest answers beyond `patience_s`
(`send_within`): they are handed to the core as they come, so one receiver that hangs costs
only its own delivery.

Exceptions an adapter raises from `send_one`::

    ChannelError                 anything that stopped one message; carries channel, status, excerpt
    ├── TransientError           worth retrying: 429, 5xx, timeouts, refused connections
    └── PermanentError           not worth retrying: invalid number, rejected address, other 4xx

Each also says why, for the operator (`failure_reason`, a FailureReason), derived in one place
(`ChannelError.__init__`): an explicit reason, else from the status code (`reason_for_status`),
else the class default (transient: unreachable, permanent: rejected). Adapters only name the
reason where no status code tells it: their client's timeouts.

And whether the provider may have taken the message all the same (`ambiguous`): after a timeout
or a 5xx, nobody knows, and sending again may deliver it twice (Twilio has no idempotency key).
Every request made after such an answer is counted in the outcome (`ambiguous_retries`), and
the core counts the same across sends through the queue, so that "possibly sent twice" is every
message that may have reached the provider twice, not only those of a worker that died.

Errors never carry credentials: adapters build them from status codes and response bodies only.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

from channels import aio
from dispatcher.models import FailureKind, FailureReason, SuppressionReason

if TYPE_CHECKING:
    from dispatcher.settings import Settings

log = logging.getLogger(__name__)

EXCERPT_CHARS = 300


def printable(text: str) -> str:
    """`text` on one line without control or formatting characters: an answer's excerpt is
    shown by `outage delivery list`, and an escape sequence in it would be run by the terminal."""
    cleaned = "".join(
        " " if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") else char for char in text
    )
    return re.sub(r"\s+", " ", cleaned).strip()


class ChannelError(Exception):
    """One message could not be sent; says where and why, never with a secret in it."""

    kind: ClassVar[FailureKind]
    default_reason: ClassVar[FailureReason]  # without a status code or an explicit reason

    def __init__(
        self,
        channel: str,
        reason: str,
        *,
        status_code: int | None = None,
        response_excerpt: str | None = None,
        retry_after_s: float | None = None,
        suppress: SuppressionReason | None = None,
        failure_reason: FailureReason | None = None,
        ambiguous: bool | None = None,
    ) -> None:
        self.channel = channel
        # `reason` is the human sentence; `failure_reason` the closed set metrics count.
        self.failure_reason = failure_reason or (
            reason_for_status(status_code) if status_code is not None else self.default_reason
        )
        # May the provider have accepted it? By default: after a 5xx, or when no status came
        # back because the answer timed out or could not be read. A refusal (4xx, 429) or a
        # connection never made is a clear no.
        self.ambiguous = (
            ambiguous
            if ambiguous is not None
            else self.kind is FailureKind.TRANSIENT
            and (
                status_code >= 500
                if status_code is not None
                else self.failure_reason in (FailureReason.TIMEOUT, FailureReason.SERVER_ERROR)
            )
        )
        self.suppress = suppress
        self.reason = reason
        self.status_code = status_code
        self.response_excerpt = printable(response_excerpt or "")[:EXCERPT_CHARS] or None
        self.retry_after_s = retry_after_s
        super().__init__(str(self))

    @property
    def timed_out(self) -> bool:
        """No answer came in time (our client's timeout, not a provider's 408)."""
        return self.failure_reason is FailureReason.TIMEOUT and self.status_code is None

    def __str__(self) -> str:
        status = f" (HTTP {self.status_code})" if self.status_code is not None else ""
        excerpt = f": {self.response_excerpt}" if self.response_excerpt else ""
        return f"{self.channel}: {self.reason}{status}{excerpt}"


class TransientError(ChannelError):
    kind = FailureKind.TRANSIENT
    default_reason = FailureReason.UNREACHABLE  # no status: the request never got an answer


class PermanentError(ChannelError):
    kind = FailureKind.PERMANENT
    default_reason = FailureReason.REJECTED


def reason_for_status(status_code: int) -> FailureReason:
    """The operator's reason for an HTTP status: 429 (and 425 Too Early, the same "come back
    later") rate limited, 408 timeout, 5xx server error, any other status rejected."""
    if status_code in (425, 429):
        return FailureReason.RATE_LIMITED
    if status_code == 408:
        return FailureReason.TIMEOUT
    if status_code >= 500:
        return FailureReason.SERVER_ERROR
    return FailureReason.REJECTED


def error_for_status(
    channel: str,
    status_code: int,
    reason: str,
    *,
    response_excerpt: str | None = None,
    retry_after_s: float | None = None,
) -> ChannelError:
    """The one status-code table every HTTP channel uses: 408/429/5xx retry, other 4xx do not."""
    kind: type[ChannelError] = (
        TransientError if status_code in (408, 425, 429) or status_code >= 500 else PermanentError
    )
    return kind(
        channel,
        reason,
        status_code=status_code,
        response_excerpt=response_excerpt,
        retry_after_s=retry_after_s,
    )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta form; the HTTP-date form is rare on these APIs)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


@dataclass(frozen=True)
class Message:
    """One rendered message for one recipient. `key` is the delivery id, echoed in the outcome."""

    key: int
    to: str
    text: str
    subject: str | None = None
    html: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    secret: str | None = field(default=None, repr=False)  # e.g. a webhook's signing secret
    payload: dict[str, object] | None = None  # structured body, for machine channels
    unsubscribe_url: str | None = None  # one-click opt-out (email: RFC 8058 headers)
    # Placeholder -> this recipient's value, for an adapter whose provider fills them in itself
    # (`Channel.substitutes`): then subject, text and html are shared by many recipients.
    substitutions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """What happened to one message: accepted with a provider id, or failed with a kind."""

    key: int
    provider_id: str | None = None
    failure: FailureKind | None = None
    error: str | None = None
    retry_after_s: float | None = None
    attempts: int = 1
    suppress: SuppressionReason | None = None  # the provider says never to send there again
    reason: FailureReason | None = None  # why it failed, for metrics (None when it did not)
    duration_s: float | None = None  # the provider's time, retries inside the send included
    # Requests made after one whose answer left it unknown whether the provider took the
    # message (a timeout, a 5xx): each may have delivered it once more.
    ambiguous_retries: int = 0
    # Failed, but some request of this send may have reached the provider all the same.
    ambiguous: bool = False

    @classmethod
    def failed(
        cls, key: int, error: ChannelError, tries: Tries, duration_s: float | None = None
    ) -> Outcome:
        return cls(
            key=key,
            failure=error.kind,
            reason=error.failure_reason,
            duration_s=duration_s,
            error=str(error),
            retry_after_s=error.retry_after_s,
            attempts=tries.attempts,
            suppress=error.suppress,
            ambiguous_retries=tries.ambiguous_retries,
            ambiguous=tries.unknown,
        )

    @classmethod
    def sent(
        cls, key: int, provider_id: str, tries: Tries, duration_s: float | None = None
    ) -> Outcome:
        return cls(
            key=key,
            provider_id=provider_id,
            attempts=tries.attempts,
            duration_s=duration_s,
            ambiguous_retries=tries.ambiguous_retries,
        )

    @property
    def ok(self) -> bool:
        return self.failure is None


# A chunk's tokens are good for requests that leave within this of their being taken: a request
# that leaves later (a cold process's first chunk left 0.7 s after its grant) takes one of its
# own, or it would go out together with the next chunk's and the provider would see more than
# the account's rate. Shorter, a loaded machine wastes tokens: at 25 ms, two workers on two busy
# cores sent a third below the rate; at 100 ms, 96 % of it, and never above.
GRANT_FRESH_S = 0.1


@dataclass(frozen=True)
class Tokens:
    """The provider account's rate bucket as the core lends it to one send: the chunk's own
    tokens, taken at `taken_at` (time.monotonic, just before they were asked for), and `take(n)`
    for any other request (a retry, one that leaves late): 0.0 once taken, else the seconds
    until there are `n` (blocking)."""

    take: Callable[[int], float]
    taken_at: float | None = None

    @property
    def fresh_until(self) -> float | None:
        return None if self.taken_at is None else self.taken_at + GRANT_FRESH_S


@dataclass
class Tries:
    """The requests of one message (or of one request several messages share) within a send."""

    attempts: int = 0
    ambiguous_retries: int = 0  # requests made after one whose fate is unknown
    unknown: bool = False  # some request may have reached the provider without our knowing
    last_error: ChannelError | None = None

    def start(self) -> None:
        """A request is about to leave."""
        if self.unknown:
            self.ambiguous_retries += 1
        self.attempts += 1

    def failed(self, error: ChannelError) -> None:
        self.unknown = self.unknown or error.ambiguous
        self.last_error = error


class NoToken(Exception):
    """A retry inside the send found the rate bucket empty for longer than it would wait: the
    message goes back to the queue with the error it had."""

    def __init__(self, error: ChannelError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class RetryPolicy:
    """Tenacity settings for retries inside one send. Tests set the backoff to zero; a provider's
    Retry-After up to `backoff_max_s` is waited out all the same, a longer one left to the queue."""

    attempts: int = 3
    backoff_s: float = 0.5
    backoff_max_s: float = 10.0


@dataclass(frozen=True)
class Limits:
    """What a channel can carry; the renderer fits messages to these."""

    max_text_chars: int | None = None  # plain length limit (None: none)
    max_sms_segments: int | None = None  # SMS: fit the text into this many segments
    max_weighted_chars: int | None = None  # X: weighted length, a link counts 23
    has_subject: bool = False
    has_html: bool = False


class Channel:
    """Base of every adapter: subclasses set the class attributes and implement `send_one_async`
    or `send_one`."""

    name: ClassVar[str]
    address_field: ClassVar[str | None]  # the subscriber field it sends to; None: broadcast
    limits: ClassVar[Limits] = Limits()
    max_batch: ClassVar[int] = 100
    # Whether the provider fills per-recipient placeholders in (SendGrid's `substitutions`):
    # then the core hands over one rendering and `Message.substitutions`; else finished texts.
    substitutes: ClassVar[bool] = False
    # How long a send waits for its slowest answers before leaving them to come on their own
    # (`send_within`); None: it waits for all. Set where every recipient is a server of its own
    # (webhooks): one provider that is slow is slow for everyone, one receiver is not.
    patience_s: float | None = None

    def __init__(self, retry: RetryPolicy, concurrency: int = 8) -> None:
        self.retry = retry
        self.concurrency = concurrency
        self._pool: ThreadPoolExecutor | None = None
        self._in_flight: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    @property
    def in_flight_limit(self) -> int:
        """The most messages one send can have at the provider at once (one request each, at
        most `concurrency` of them). The core hands over no more than this at a time, so that
        every message it marks in flight is really on its way: a crash then counts as
        "possibly sent twice" what may have been, not what was still waiting its turn."""
        return max(1, self.concurrency)

    @property
    def broadcast(self) -> bool:
        """A broadcast channel posts once per update (the public account), not per subscriber."""
        return self.address_field is None

    def send_one(self, message: Message) -> str:
        """Send one message and return the provider's id for it, or raise a ChannelError.
        Blocking; an adapter with an asyncio SDK implements `send_one_async` instead."""
        if type(self).send_one_async is Channel.send_one_async:
            raise NotImplementedError(f"{type(self).__name__} implements no send")
        return aio.run(self.send_one_async(message))

    async def send_one_async(self, message: Message) -> str:
        """`send_one` for the sending loop; by default the blocking one in the adapter's threads."""
        return await asyncio.get_running_loop().run_in_executor(
            self.threads(), self.send_one, message
        )

    def send(self, batch: Sequence[Message], *, tokens: Tokens | None = None) -> list[Outcome]:
        """Send a batch concurrently; one outcome per message, in order, never an exception.
        `tokens`: the provider account's bucket (shared with every worker), so that no request,
        retries included, goes beyond the account's rate (None: not paced)."""
        if not batch:
            return []
        return aio.run(self._send_all(batch, tokens))

    async def _send_all(self, batch: Sequence[Message], tokens: Tokens | None) -> list[Outcome]:
        return list(await asyncio.gather(*(self._send_with_retries(m, tokens) for m in batch)))

    def send_within(
        self,
        batch: Sequence[Message],
        late: Callable[[Outcome], None],
        *,
        tokens: Tokens | None = None,
    ) -> list[Outcome | None]:
        """`send`, waiting at most `patience_s` for the answers: None for a message still
        unanswered then, whose outcome is given to `late` when it comes (on the sending loop's
        thread: `late` must not block)."""
        if not batch:
            return []
        return aio.run(self._send_within(batch, late, tokens))

    async def _send_within(
        self, batch: Sequence[Message], late: Callable[[Outcome], None], tokens: Tokens | None
    ) -> list[Outcome | None]:
        sends = [asyncio.ensure_future(self._send_with_retries(m, tokens)) for m in batch]
        done, _ = await asyncio.wait(sends, timeout=self.patience_s)
        answers: list[Outcome | None] = []
        for sending in sends:
            if sending in done:
                answers.append(sending.result())
                continue
            answers.append(None)
            sending.add_done_callback(
                lambda finished: None if finished.cancelled() else late(finished.result())
            )
        return answers

    def threads(self) -> ThreadPoolExecutor:
        """The blocking adapter's senders, started once: starting 16 threads for every batch
        cost more than the batch's requests. Idle threads end with the adapter (the executor's
        own cleanup when it is collected, or at exit)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                self.concurrency, thread_name_prefix=f"send-{self.name}"
            )
        return self._pool

    def _slots(self) -> asyncio.Semaphore:
        """At most `concurrency` of this adapter's requests in flight in this process, however
        many batches share the loop (a semaphore belongs to one loop: a new one after a fork)."""
        running = asyncio.get_running_loop()
        if self._in_flight is None or self._in_flight[0] is not running:
            self._in_flight = (running, asyncio.Semaphore(max(1, self.concurrency)))
        return self._in_flight[1]

    def check_account(self) -> str | None:
        """Make a harmless authenticated call and say what the provider answered, or raise a
        ChannelError (401/403: the credentials were refused). None: the provider offers no such
        call. `outage doctor` uses it; nothing is sent."""
        return None

    def close(self) -> None:
        """Release pooled connections; adapters with a client override this."""

    async def _send_with_retries(self, message: Message, tokens: Tokens | None) -> Outcome:
        tries = Tries()
        started = time.monotonic()

        async def send() -> str:
            async with self._slots():  # a slot per request, not held while waiting to retry
                if tokens is not None:  # the chunk's token if still fresh, else one of its own
                    fresh = tokens.fresh_until if tries.last_error is None else None
                    while fresh is None or time.monotonic() > fresh:
                        fresh = await asyncio.get_running_loop().run_in_executor(
                            self.threads(), self.take_tokens, tokens, 1, tries.last_error
                        )
                tries.start()
                try:
                    return await self.send_one_async(message)
                except ChannelError as exc:
                    tries.failed(exc)
                    raise

        try:
            try:
                provider_id = await send()  # most sends succeed: no retry machinery for them
            except TransientError as first:
                provider_id = await self._retry(send, first)
        except (ChannelError, NoToken) as exc:
            error = exc.error if isinstance(exc, NoToken) else exc
            log.info("%s send failed for delivery %s: %s", self.name, message.key, error)
            return Outcome.failed(message.key, error, tries, time.monotonic() - started)
        return Outcome.sent(message.key, provider_id, tries, time.monotonic() - started)

    def take_tokens(self, tokens: Tokens, n: int, error: ChannelError | None) -> float:
        """Wait for `n` tokens for one request (blocking); until when they are fresh. Waiting
        longer than the longest backoff raises `NoToken` instead: the queue's retry takes over,
        as for a long Retry-After (`error`: the last failure, for the outcome)."""
        waited = 0.0
        while True:
            asked = time.monotonic()
            wait = tokens.take(n)
            if wait <= 0:
                return asked + GRANT_FRESH_S
            if waited + wait > self.retry.backoff_max_s:
                raise NoToken(
                    error
                    or TransientError(
                        self.name,
                        "no token from the account's rate limit in time",
                        failure_reason=FailureReason.RATE_LIMITED,
                        ambiguous=False,
                    )
                )
            time.sleep(wait)
            waited += wait

    async def _retry(self, send: Callable[[], Awaitable[str]], first: TransientError) -> str:
        """Go on after a first transient failure, under the policy: tenacity is shown that
        failure as its own first attempt, so waits and stops are exactly as if it had made it
        (tenacity costs a third of a request's CPU; paying it only on failure is the point)."""
        replay: list[TransientError] = [first]
        async for attempt in AsyncRetrying(**self._retry_arguments()):
            with attempt:
                if replay:
                    raise replay.pop()
                return await send()
        raise AssertionError("unreachable: tenacity reraises or returns")  # pragma: no cover

    def _retrying(self) -> Retrying:
        """The tenacity policy for one blocking provider request (an adapter's batch request)."""
        return Retrying(**self._retry_arguments())

    def _retry_arguments(self) -> dict[str, Any]:
        """The one tenacity policy, for `Retrying` and `AsyncRetrying` alike."""
        return {
            "retry": retry_if_exception(_worth_retrying_here),
            "stop": stop_after_attempt(self.retry.attempts)
            | _RetryAfterBeyond(self.retry.backoff_max_s),
            "wait": self._wait,
            "reraise": True,
        }

    def _wait(self, state: RetryCallState) -> float:
        """Jittered exponential backoff, but never sooner than the provider's Retry-After, even
        with the backoff taken out (`backoff_s=0`): that is the provider's rule, not our pacing.
        A Retry-After beyond `backoff_max_s` never gets here (`_RetryAfterBeyond` stops first)."""
        retry_after = _retry_after(state) or 0.0
        if self.retry.backoff_s == 0:
            return retry_after
        backoff = wait_exponential_jitter(
            initial=self.retry.backoff_s, max=self.retry.backoff_max_s, jitter=self.retry.backoff_s
        )(state)
        return max(backoff, retry_after)


class _RetryAfterBeyond(stop_base):
    """Stops retrying inside a send when the provider asks for a longer pause than we would
    wait there; the queue's retry takes over, so a worker never sleeps minutes in a call."""

    def __init__(self, max_wait_s: float) -> None:
        self.max_wait_s = max_wait_s

    def __call__(self, retry_state: RetryCallState) -> bool:
        retry_after = _retry_after(retry_state)
        return retry_after is not None and retry_after > self.max_wait_s


def _worth_retrying_here(error: BaseException) -> bool:
    """Transient, and not a timeout: that one is retried through the queue (see above)."""
    return isinstance(error, TransientError) and not error.timed_out


def _retry_after(state: RetryCallState) -> float | None:
    error = state.outcome.exception() if state.outcome else None
    return error.retry_after_s if isinstance(error, ChannelError) else None


class ChannelFactory(Protocol):
    """What the entry point `outage_dispatcher.channels` names: a class that builds an adapter.

    `settings` is the dispatcher's Settings with `sandbox_url` resolved: an adapter points its SDK
    at that URL when `settings.providers == "sandbox"`, and at the real provider otherwise.
    """

    name: ClassVar[str]
    address_field: ClassVar[str | None]
    limits: ClassVar[Limits]
    max_batch: ClassVar[int]

    @classmethod
    def from_settings(cls, settings: Settings, retry: RetryPolicy) -> Channel: ...
