"""Where an adapter chooses between the real provider and the local sandbox, in one place.

The provider SDKs hard-code their hosts; each offers one seam (see the team note
`provider-seams.md`): Twilio an HTTP client object, SendGrid a `host=` argument, tweepy a
replaceable `requests.Session`. The classes here fill those seams. They are installed in live mode
too, because they also do what the SDKs do not: default timeouts, a connection pool as large as our
concurrency, and (for Twilio) the last response's headers, where `Retry-After` lives. Twilio's
seam is asynchronous (the SDK's `*_async` calls over aiohttp): see channels/aio.py for why.

Credentials: in sandbox mode the adapters always use harmless dummies, so a real key found in the
environment is never sent to a sandbox (which records request headers); in live mode a missing
credential is a `ValueError` that names the variable and never shows a value.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp
import requests
from multidict import CIMultiDict
from pydantic import SecretStr
from requests.adapters import HTTPAdapter
from twilio.http import AsyncHttpClient
from twilio.http.response import Response as TwilioResponse

from channels import aio

if TYPE_CHECKING:
    from dispatcher.settings import Settings

SANDBOX_CREDENTIAL = "sandbox-dummy-credential"
SANDBOX_TWILIO_ACCOUNT_SID = "AC" + "0" * 32
# The public half of the sandbox's fixed SendGrid event-signing key (base64 DER): a callback in
# sandbox mode verifies the sandbox's events with it. Public by design, it signs nothing real.
SANDBOX_EVENT_PUBLIC_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAER1+9RBPsowaGda6Kwu7Jw5MAhlwIvjG1WCloSGVhBN6NPGl0Wx8V3p8W"
    "pQeiUbQJIL0CPG5QSzpTKrV/5D1ITQ=="
)

# The providers' own header names on the callbacks they sign.
TWILIO_SIGNATURE = "X-Twilio-Signature"
TWILIO_IDEMPOTENCY = "I-Twilio-Idempotency-Token"
SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"


def sandbox_base(settings: Settings) -> str | None:
    """The sandbox's base URL in sandbox mode, None in live mode (talk to the real provider)."""
    if settings.providers != "sandbox":
        return None
    if not settings.sandbox_url:
        raise ValueError(
            "OUTAGE_SANDBOX_URL is not set: sandbox providers need a running sandbox "
            "(start one, or set OUTAGE_PROVIDERS=live)"
        )
    return settings.sandbox_url.rstrip("/")


def credential(settings: Settings, attribute: str, env_name: str, dummy: str) -> str:
    """A credential's value: `dummy` in sandbox mode; required (by variable name) in live mode."""
    if settings.providers == "sandbox":
        return dummy
    value = getattr(settings, attribute)
    text = value.get_secret_value() if isinstance(value, SecretStr) else (value or "")
    if not str(text).strip():
        raise ValueError(
            f"{env_name} is not set: live providers need it "
            "(set the environment variable, or use OUTAGE_PROVIDERS=sandbox)"
        )
    return str(text)


def rebase(url: str, base: str | None) -> str:
    """`url` with its scheme and host replaced by `base`'s (unchanged when `base` is None)."""
    if base is None:
        return url
    target, origin = urlsplit(url), urlsplit(base)
    path = origin.path.rstrip("/") + target.path
    return urlunsplit((origin.scheme, origin.netloc, path, target.query, target.fragment))


def _pooled(session: requests.Session, pool_size: int) -> None:
    """Room for `pool_size` parallel requests per host, or urllib3 drops and reopens sockets."""
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(pool_size, 1))
    session.mount("https://", adapter)
    session.mount("http://", adapter)


class TwilioSeamClient(AsyncHttpClient):  # type: ignore[misc]  # twilio ships no type hints
    """Twilio's asynchronous HTTP client seam, on aiohttp, rebased on the sandbox when asked,
    remembering the response headers.

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
        sent = dict(headers or {})
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


class SeamSession(requests.Session):
    """A `requests.Session` with a default timeout that rebases one provider prefix.

    tweepy builds every URL from a fixed "https://api.twitter.com" and passes no timeout; this
    session rewrites that prefix to the sandbox (when given) and applies our timeout.
    """

    def __init__(
        self, prefix: str, base_url: str | None, timeout: float, pool_size: int = 4
    ) -> None:
        super().__init__()
        self._prefix = prefix
        self._base_url = base_url
        self._timeout = timeout
        _pooled(self, pool_size)

    def request(
        self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any
    ) -> requests.Response:
        text_url = url.decode() if isinstance(url, bytes) else url
        if self._base_url is not None and text_url.startswith(self._prefix):
            text_url = self._base_url + text_url[len(self._prefix) :]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().request(method, text_url, *args, **kwargs)
