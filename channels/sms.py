"""SMS through Twilio's Programmable Messaging API, with the official SDK's asyncio calls.

Twilio says whether to retry through the HTTP status (429 and 5xx: yes; 400 with e.g. 21211
"invalid number" or 21610 "unsubscribed": no), so classification is the shared status table.
Beware: a 500 or a read timeout on a send is ambiguous (the SMS may have gone out); Twilio has no
idempotency key for messages, so a retry can duplicate a text. We accept that for outage notices.

The SDK hard-codes Twilio's host; its one seam is the HTTP client object, filled here by
`TwilioSeamClient` (in sandbox mode rebased on the sandbox), which also keeps the last response's
headers, where `Retry-After` lives.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Self
from urllib.parse import urlencode

import aiohttp
from multidict import CIMultiDict
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http import AsyncHttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.rest import Client

from channels import aio
from channels.base import (
    Channel,
    ChannelError,
    Limits,
    Message,
    PermanentError,
    RetryPolicy,
    TransientError,
    error_for_status,
    parse_retry_after,
)
from channels.transport import (
    SANDBOX_CREDENTIAL,
    credential,
    rebase,
    sandbox_base,
    sandbox_stamp,
)
from dispatcher.models import FailureReason, SuppressionReason
from dispatcher.settings import Settings

TWILIO_UNSUBSCRIBED = 21610  # "Attempt to send to unsubscribed recipient"
SANDBOX_TWILIO_ACCOUNT_SID = "AC" + "0" * 32  # a dummy shaped like a real SID: "AC", 32 hex digits


def auth_token(settings: Settings) -> str:
    """The account's auth token: what the adapter authenticates with and what Twilio signs its
    webhooks with (in sandbox mode the harmless dummy, which the sandbox signs with too)."""
    return credential(settings, "twilio_auth_token", "TWILIO_AUTH_TOKEN", SANDBOX_CREDENTIAL)


class SmsChannel(Channel):
    """One Twilio `messages.create_async` per message; the base sends a batch concurrently."""

    name = "sms"
    address_field = "phone"
    # A marker: the renderer fits the text into `settings.sms_max_segments` segments.
    limits = Limits(max_sms_segments=1)
    max_batch = 100

    def __init__(
        self,
        client: Any,
        http: TwilioSeamClient,
        sender: str,
        retry: RetryPolicy,
        concurrency: int = 8,
        status_callback: str | None = None,
    ) -> None:
        super().__init__(retry, concurrency)
        self._client = client
        # The SDK imports its REST API on first use (70 ms here): done now, not inside the first
        # send, where it would hold up the whole sending loop past the chunk's rate grant.
        self._messages = client.messages
        self._http = http
        self._sender = sender
        # Twilio POSTs delivery receipts here (dispatcher/web/callbacks.py); the message's key
        # rides in the URL, which Twilio signs, so a receipt finds its delivery at once.
        self._status_callback = status_callback

    @classmethod
    def from_settings(cls, settings: Settings, retry: RetryPolicy) -> Self:
        """Build the Twilio client once; in sandbox mode it talks to `settings.sandbox_url`."""
        base = sandbox_base(settings)
        account_sid = credential(
            settings, "twilio_account_sid", "TWILIO_ACCOUNT_SID", SANDBOX_TWILIO_ACCOUNT_SID
        )
        token = auth_token(settings)
        http = TwilioSeamClient(base, settings.provider_timeout_s, settings.send_concurrency)
        client = Client(account_sid, token, http_client=http)
        callback = f"{settings.public_url.rstrip('/')}/callbacks/twilio/status"
        return cls(client, http, settings.sms_from, retry, settings.send_concurrency, callback)

    async def send_one_async(self, message: Message) -> str:
        """Create the message; the id is Twilio's message SID ("SM...")."""
        receipts = (
            {"status_callback": f"{self._status_callback}?delivery_id={message.key}"}
            if self._status_callback
            else {}
        )
        with self._translated_errors():
            created = await self._messages.create_async(
                to=message.to, from_=self._sender, body=message.text, **receipts
            )
        return str(created.sid)

    def check_account(self) -> str:
        """GET the account itself: Twilio's harmless check of the SID and auth token."""
        with self._translated_errors():
            account = aio.run(self._client.api.accounts(self._client.account_sid).fetch_async())
        if account.status != "active":
            raise PermanentError(self.name, f"the Twilio account is {account.status}")
        return f"Twilio account {account.friendly_name or account.sid} is active"

    @contextmanager
    def _translated_errors(self) -> Iterator[None]:
        """Twilio's and aiohttp's exceptions as ChannelErrors, for sends and checks alike."""
        try:
            yield
        except TwilioRestException as exc:
            raise self._rejected(exc.status, exc.code, exc.msg) from exc
        except TwilioServiceException as exc:
            raise self._rejected(exc.status, exc.code, exc.detail or exc.title) from exc
        except TwilioException as exc:  # raised by the SDK itself, e.g. a bad argument
            raise PermanentError(self.name, f"Twilio SDK error ({type(exc).__name__})") from exc
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors too
            raise TransientError(
                self.name, "Twilio did not answer in time", failure_reason=FailureReason.TIMEOUT
            ) from exc
        except aiohttp.ClientError as exc:
            reason = f"could not reach Twilio ({type(exc).__name__})"
            raise TransientError(self.name, reason, ambiguous=aio.may_have_arrived(exc)) from exc
        except ValueError as exc:  # a 2xx whose body is not JSON
            raise TransientError(
                self.name,
                "unreadable answer from Twilio",
                failure_reason=FailureReason.SERVER_ERROR,
            ) from exc

    def _rejected(self, status: int, code: int | None, detail: str | None) -> ChannelError:
        reason = f"Twilio error {code}" if code else "Twilio refused the message"
        if code == TWILIO_UNSUBSCRIBED:  # the number texted STOP to our sender
            return PermanentError(
                self.name, reason, status_code=int(status), suppress=SuppressionReason.STOP
            )
        return error_for_status(
            self.name,
            int(status),
            reason,
            response_excerpt=detail,
            retry_after_s=parse_retry_after(self._http.last_header("Retry-After")),
        )

    def close(self) -> None:
        self._http.close()


class TwilioSeamClient(AsyncHttpClient):  # type: ignore[misc]  # twilio ships no type hints
    """Twilio's asynchronous HTTP client seam, on aiohttp, rebased on the sandbox when asked,
    remembering the response headers (asynchronous for the SDK's `*_async` calls: see
    channels/aio.py for why).

    Why not the SDK's own `AsyncTwilioHttpClient`: it makes its session outside any loop, passes
    aiohttp a float timeout and a deprecated `auth=`, and logs every request at INFO. Twilio's
    exceptions carry no headers, so the adapter asks `last_header("Retry-After")` after a
    failure; the headers are kept per asyncio task (a context variable), since one client
    serves a whole batch sent concurrently.
    """

    def __init__(self, base_url: str | None, timeout: float, pool_size: int) -> None:
        super().__init__(logging.getLogger("twilio.http_client"), True, timeout)
        self._base_url = base_url
        self._session = aio.LoopSession(pool_size, timeout)

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> TwilioResponse:
        _last_headers.set(None)
        sent = dict(headers or {}) | sandbox_stamp(self._base_url)
        if data is not None:  # the form encoded here: aiohttp's FormData costs more than the rest
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        if auth is not None:
            sent["Authorization"] = aiohttp.encode_basic_auth(auth[0], auth[1])
        # A call's own timeout, else ours (aiohttp would read `timeout=None` as "none").
        limit = aiohttp.ClientTimeout(total=timeout) if timeout else self._session.timeout
        async with self._session.get().request(
            method.upper(),
            rebase(url, self._base_url),
            params=params,
            data=urlencode(data, doseq=True) if data is not None else None,
            headers=sent,
            allow_redirects=allow_redirects,
            timeout=limit,
        ) as response:
            text = await response.text()
        _last_headers.set(CIMultiDict(response.headers))
        return TwilioResponse(response.status, text, response.headers)

    def last_header(self, name: str) -> str | None:
        """A header of the last response this task received, e.g. Retry-After."""
        headers = _last_headers.get()
        return headers.get(name) if headers is not None else None

    def close(self) -> None:
        self._session.close()


_last_headers: ContextVar[CIMultiDict[str] | None] = ContextVar("twilio_headers", default=None)
