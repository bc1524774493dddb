"""Where an adapter chooses between the real provider and the local sandbox: what every
adapter shares.

The provider SDKs hard-code their hosts; each offers one seam (see the team note
`provider-seams.md`): Twilio an HTTP client object, SendGrid a `host=` argument, tweepy a
replaceable `requests.Session`. Here are the pieces every seam is made of: the sandbox's base URL
(`sandbox_base`), a URL moved onto it (`rebase`), and `SeamSession` for an SDK that takes a
`requests.Session`; a seam only one provider has lives beside its adapter (Twilio's HTTP client in
channels/sms.py). Seams are installed in live mode too, because they also do what the SDKs do not:
default timeouts and a connection pool as large as our concurrency.

Credentials: in sandbox mode the adapters always use harmless dummies, so a real key found in the
environment is never sent to a sandbox (which records request headers); in live mode a missing
credential is a `ValueError` that names the variable and never shows a value.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import requests
from pydantic import SecretStr
from requests.adapters import HTTPAdapter

if TYPE_CHECKING:
    from dispatcher.settings import Settings

SANDBOX_CREDENTIAL = "sandbox-dummy-credential"
# The public half of the sandbox's fixed SendGrid event-signing key (base64 DER): a callback in
# sandbox mode verifies the sandbox's events with it. Public by design, it signs nothing real.
SANDBOX_EVENT_PUBLIC_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAER1+9RBPsowaGda6Kwu7Jw5MAhlwIvjG1WCloSGVhBN6NPGl0Wx8V3p8W"
    "pQeiUbQJIL0CPG5QSzpTKrV/5D1ITQ=="
)


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


SENT_AT_HEADER = "X-Sandbox-Sent-At"


def sandbox_stamp(base_url: str | None) -> dict[str, str]:
    """In sandbox mode, a header saying when the request left this process (Unix time): the
    sandbox logs it, so a test or benchmark measures the rate where it is enforced, at the
    sender, not when the sandbox's thread got round to the request. Nothing in live mode."""
    return {} if base_url is None else {SENT_AT_HEADER: repr(time.time())}


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
