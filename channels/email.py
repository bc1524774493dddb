"""Email through SendGrid's v3 Mail Send API, with the official SDK.

Why `send` is overridden: an outage notice is the same text for thousands of people, and SendGrid
takes up to 1,000 personalizations per request, so identical messages share one request (one
personalization each, with the delivery id in `custom_args` and per-recipient headers such as
List-Unsubscribe). What is each recipient's own in the body (their name, their signed links) is
not rendered into it: the core renders once with placeholders and SendGrid fills them in from
each personalization's `substitutions` (`substitutes = True`), so the texts stay identical.
SendGrid rejects the whole request for one bad address, so a group refused with a 400 is re-sent
one message at a time, and only the bad address fails.

Never run this file as a script: its name would shadow the standard library's `email`.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from channels.base import (
    Channel,
    ChannelError,
    Limits,
    Message,
    NoToken,
    Outcome,
    PermanentError,
    RetryPolicy,
    Tokens,
    TransientError,
    Tries,
    error_for_status,
    parse_retry_after,
)
from channels.transport import SANDBOX_CREDENTIAL, credential, sandbox_base
from dispatcher.models import FailureReason
from dispatcher.settings import Settings

log = logging.getLogger(__name__)

LIVE_HOST = "https://api.sendgrid.com"
MAX_PERSONALIZATIONS = 1000  # SendGrid's limit per request (and 1,000 recipients in total)


class EmailChannel(Channel):
    """Groups identical messages into one SendGrid request; falls back to one per message."""

    name = "email"
    address_field = "email"
    limits = Limits(has_subject=True, has_html=True)
    max_batch = MAX_PERSONALIZATIONS
    substitutes = True

    def __init__(
        self, client: Any, sender: dict[str, str], retry: RetryPolicy, concurrency: int = 8
    ) -> None:
        super().__init__(retry, concurrency)
        self._client = client
        self._sender = sender

    @classmethod
    def from_settings(cls, settings: Settings, retry: RetryPolicy) -> Self:
        """Build the SendGrid client once; in sandbox mode its host is `settings.sandbox_url`."""
        api_key = credential(settings, "sendgrid_api_key", "SENDGRID_API_KEY", SANDBOX_CREDENTIAL)
        client = SendGridAPIClient(api_key=api_key, host=sandbox_base(settings) or LIVE_HOST)
        client.client.timeout = settings.provider_timeout_s  # the SDK's default is no timeout
        sender = {"email": settings.email_from, "name": settings.company_name}
        return cls(client, sender, retry, settings.send_concurrency)

    @property
    def in_flight_limit(self) -> int:
        """Up to `concurrency` requests at once, each for up to 1,000 recipients."""
        return max(1, self.concurrency) * MAX_PERSONALIZATIONS

    def send(self, batch: Sequence[Message], *, tokens: Tokens | None = None) -> list[Outcome]:
        """One outcome per message, in order; identical messages share a request (whose retry
        takes a token per recipient)."""
        groups = _group(batch)
        if len(groups) <= 1 or self.concurrency <= 1:
            results = [self._send_group([batch[i] for i in group], tokens) for group in groups]
        else:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(groups))) as pool:
                results = list(
                    pool.map(lambda g: self._send_group([batch[i] for i in g], tokens), groups)
                )
        outcomes: dict[int, Outcome] = {}
        for group, group_outcomes in zip(groups, results, strict=True):
            outcomes.update(zip(group, group_outcomes, strict=True))
        return [outcomes[index] for index in range(len(batch))]

    def send_one(self, message: Message) -> str:
        """Send one message alone; the id is SendGrid's X-Message-Id."""
        return self._post([message])

    def _send_group(self, messages: list[Message], tokens: Tokens | None) -> list[Outcome]:
        """Send messages sharing one content in one request, retrying it as a whole."""
        if len(messages) == 1:
            return Channel.send(self, messages, tokens=tokens)
        tries = Tries()
        started = time.monotonic()
        try:
            for attempt in self._retrying():
                with attempt:
                    if tokens is not None:  # the chunk's tokens if still fresh, else its own
                        fresh = tokens.fresh_until if tries.last_error is None else None
                        while fresh is None or time.monotonic() > fresh:
                            fresh = self.take_tokens(tokens, len(messages), tries.last_error)
                    tries.start()
                    try:
                        provider_id = self._post(messages)
                    except ChannelError as exc:
                        tries.failed(exc)
                        raise
        except PermanentError as exc:
            if exc.status_code != 400:  # auth, sender or account problem: the same for everyone
                took = time.monotonic() - started
                return [Outcome.failed(m.key, exc, tries, took) for m in messages]
            log.info("email group of %d refused (%s); sending one by one", len(messages), exc)
            return Channel.send(self, messages, tokens=tokens)
        except (ChannelError, NoToken) as exc:
            error = exc.error if isinstance(exc, NoToken) else exc
            took = time.monotonic() - started
            return [Outcome.failed(m.key, error, tries, took) for m in messages]
        took = time.monotonic() - started
        return [Outcome.sent(m.key, provider_id, tries, took) for m in messages]

    def _post(self, messages: Sequence[Message]) -> str:
        try:
            response = self._client.send(self._mail(messages))
        except HTTPError as exc:
            raise self._rejected(exc) from exc
        except TimeoutError as exc:
            raise TransientError(
                self.name, "SendGrid did not answer in time", failure_reason=FailureReason.TIMEOUT
            ) from exc
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, URLError
            reason = f"could not reach SendGrid ({type(exc).__name__})"
            raise TransientError(self.name, reason, ambiguous=_may_have_arrived(exc)) from exc
        message_id = response.headers.get("X-Message-Id")
        return str(message_id) if message_id else f"sendgrid-{response.status_code}"

    def check_account(self) -> str:
        """GET /v3/scopes: accepted keys list what they may do, and we need mail.send."""
        try:
            response = self._client.client.scopes.get()
        except HTTPError as exc:
            raise self._rejected(exc) from exc
        except (OSError, http.client.HTTPException) as exc:
            reason = f"could not reach SendGrid ({type(exc).__name__})"
            raise TransientError(self.name, reason) from exc
        try:
            scopes = json.loads(response.body)["scopes"]
        except (ValueError, KeyError, TypeError):
            scopes = []
        if "mail.send" not in scopes:
            raise PermanentError(self.name, "the API key lacks the mail.send permission")
        return "SendGrid API key accepted, with mail.send"

    def _mail(self, messages: Sequence[Message]) -> dict[str, Any]:
        """The v3 JSON for messages that share subject, text and html (the first one's)."""
        first = messages[0]
        if not first.subject:
            raise PermanentError(self.name, "an email needs a subject")
        content = [{"type": "text/plain", "value": first.text}] if first.text else []
        if first.html:
            content.append({"type": "text/html", "value": first.html})  # after text/plain
        if not content:
            raise PermanentError(self.name, "an email needs a text or html body")
        personalizations: list[dict[str, Any]] = []
        for message in messages:
            personalization: dict[str, Any] = {
                "to": [{"email": message.to}],
                "custom_args": {"delivery_id": str(message.key)},
            }
            headers = dict(message.headers)
            if message.unsubscribe_url:
                # RFC 8058: mail clients show an unsubscribe button that POSTs to the URL.
                headers["List-Unsubscribe"] = f"<{message.unsubscribe_url}>"
                headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
            if headers:
                personalization["headers"] = headers
            if message.substitutions:
                personalization["substitutions"] = message.substitutions
            personalizations.append(personalization)
        return {
            "personalizations": personalizations,
            "from": self._sender,
            "subject": first.subject,
            "content": content,
        }

    def _rejected(self, exc: HTTPError) -> ChannelError:
        body = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else str(exc.body)
        try:
            reason = str(json.loads(body)["errors"][0]["message"])
        except (ValueError, KeyError, IndexError, TypeError):
            reason = "SendGrid refused the request"
        headers = exc.headers
        retry_after = parse_retry_after(headers.get("Retry-After")) if headers else None
        return error_for_status(
            self.name,
            int(exc.status_code),
            reason,
            response_excerpt=body,
            retry_after_s=retry_after,
        )


def _may_have_arrived(error: BaseException) -> bool:
    """Whether a request that failed this way may have reached SendGrid all the same: only a
    connection never made is a clear no (urllib wraps the socket's error in a URLError)."""
    cause = getattr(error, "reason", error)
    return not isinstance(cause, ConnectionRefusedError | socket.gaierror)


def _group(batch: Sequence[Message]) -> list[list[int]]:
    """Indices of messages that can share a request: same content, distinct addresses, <= 1,000.

    Groups come in the order of their first message, and keep the batch order inside.
    """
    open_groups: dict[tuple[str | None, str, str | None], list[tuple[list[int], set[str]]]] = {}
    groups: list[list[int]] = []
    for index, message in enumerate(batch):
        address = message.to.strip().lower()
        candidates = open_groups.setdefault((message.subject, message.text, message.html), [])
        for indices, addresses in candidates:
            if len(indices) < MAX_PERSONALIZATIONS and address not in addresses:
                indices.append(index)
                addresses.add(address)
                break
        else:
            candidates.append(([index], {address}))
            groups.append(candidates[-1][0])
    return groups
