"""SMS through Twilio's Programmable Messaging API, with the official SDK's asyncio calls.

Twilio says whether to retry through the HTTP status (429 and 5xx: yes; 400 with e.g. 21211
"invalid number" or 21610 "unsubscribed": no), so classification is the shared status table.
Beware: a 500 or a read timeout on a send is ambiguous (the SMS may have gone out); Twilio has no
idempotency key for messages, so a retry can duplicate a text. We accept that for outage notices.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
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
    SANDBOX_TWILIO_ACCOUNT_SID,
    TwilioSeamClient,
    credential,
    sandbox_base,
)
from dispatcher.models import FailureReason, SuppressionReason
from dispatcher.settings import Settings

TWILIO_UNSUBSCRIBED = 21610  # "Attempt to send to unsubscribed recipient"


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
        token = credential(settings, "twilio_auth_token", "TWILIO_AUTH_TOKEN", SANDBOX_CREDENTIAL)
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
            raise TransientError(self.name, reason) from exc
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
