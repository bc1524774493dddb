"""Signed, expiring links that let a subscriber act without an account or a password.

A token names the subscriber and what it is for (managing preferences, unsubscribing, confirming
an address); it is signed with the instance's secret key, so it cannot be forged or turned into
another subscriber's, and it expires. Tokens carry no address or other personal data.

A token also carries a fingerprint of its subscriber's own random secret (`link_secret`), and a
link works only while that secret is the subscriber's: so a link names the person, not only the
number (an id that came back after an erasure, from a restored backup say, opens nobody's page),
and changing the secret ("send me a new link") signs out every link sent before (410). A
subscriber stored before secrets existed has none, and their links, which carry no fingerprint,
keep working until they ask for a new one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Protocol

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from dispatcher.errors import OutageError


class LinkPurpose(StrEnum):
    MANAGE = "manage"  # the preference centre
    UNSUBSCRIBE = "unsubscribe"  # one click, everything
    CONFIRM = "confirm"  # double opt-in of one address
    PAGE = "page"  # the subscriber's private status page and its Atom feed (read only)


# How long a link works. Unsubscribing must keep working for as long as old emails are read.
MAX_AGE_S = {
    LinkPurpose.MANAGE: 30 * 86400,
    LinkPurpose.UNSUBSCRIBE: 365 * 86400,
    LinkPurpose.CONFIRM: 7 * 86400,
    # Read only, linked from every email and kept in feed readers: as long as unsubscribing.
    LinkPurpose.PAGE: 365 * 86400,
}


# Where each link leads (dispatcher/web).
_PATHS = {
    LinkPurpose.MANAGE: "preferences",
    LinkPurpose.UNSUBSCRIBE: "unsubscribe",
    LinkPurpose.CONFIRM: "confirm",
    LinkPurpose.PAGE: "account",
}


class LinkError(OutageError):
    """A link that does not work; `expired` tells 410 (ask for a new one) from 403 (forged)."""

    http_status = 403

    def __init__(self, message: str, *, expired: bool) -> None:
        super().__init__(message)
        self.expired = expired
        if expired:
            self.http_status = 410


class LinkRevoked(LinkError):
    """A good link whose subscriber has changed their secret since (or is someone else now)."""

    http_status = 410

    def __init__(self) -> None:
        super().__init__(
            "this link no longer works; use the link in our latest message", expired=False
        )


class LinkHolder(Protocol):
    """What a link is made for: a subscriber's id and secret (an ORM row or a claimed one)."""

    @property
    def id(self) -> int: ...
    @property
    def link_secret(self) -> str | None: ...


def new_link_secret() -> str:
    """A subscriber's link secret: made with the row, and again when they ask for a new link."""
    return secrets.token_urlsafe(16)


@lru_cache(maxsize=65_536)  # every message carries two or three links of one subscriber
def _fingerprint(link_secret: str | None) -> str | None:
    """What a token carries of the secret: 48 bits of its digest, enough that an old link
    matches a new secret by chance once in 2**48 (the signature already stops forgeries)."""
    if link_secret is None:
        return None
    digest = hashlib.sha256(link_secret.encode()).digest()[:6]
    return base64.urlsafe_b64encode(digest).decode()


@dataclass(frozen=True)
class LinkClaims:
    subscriber_id: int
    detail: str | None = None  # e.g. which address a confirmation is for ("email", "phone")
    fingerprint: str | None = None  # of the subscriber's link secret when it was made

    def check_holder(self, holder: LinkHolder) -> None:
        """LinkRevoked unless the link was made for `holder` as it is now (its secret)."""
        expected = _fingerprint(holder.link_secret) or ""
        if not hmac.compare_digest(expected, self.fingerprint or ""):
            raise LinkRevoked


class Links:
    """Builds and reads the links of one instance (its public URL and secret key)."""

    def __init__(self, public_url: str, secret_key: str) -> None:
        self.public_url = public_url.rstrip("/")
        self._serializer = URLSafeTimedSerializer(secret_key, salt="outage-dispatcher.links")
        # What `dumps` signs with, made once: it makes a new signer for every token, and every
        # message carries two links.
        self._signer = self._serializer.make_signer()

    def token(self, purpose: LinkPurpose, holder: LinkHolder, detail: str | None = None) -> str:
        """`self._serializer.dumps` of the claims, with the signer made once."""
        claims: dict[str, object] = {"p": purpose.value, "s": holder.id, "d": detail}
        fingerprint = _fingerprint(holder.link_secret)
        if fingerprint is not None:
            claims["k"] = fingerprint
        payload = self._serializer.dump_payload(claims)
        return self._signer.sign(payload).decode("utf-8")

    def url(self, purpose: LinkPurpose, holder: LinkHolder, detail: str | None = None) -> str:
        token = self.token(purpose, holder, detail)
        return f"{self.public_url}/{_PATHS[purpose]}/{token}"

    def read(self, purpose: LinkPurpose, token: str) -> LinkClaims:
        try:
            data = self._serializer.loads(token, max_age=MAX_AGE_S[purpose])
        except SignatureExpired:
            raise LinkError("this link has expired; ask for a new one", expired=True) from None
        except BadSignature:
            raise LinkError("this link is not valid", expired=False) from None
        if not isinstance(data, dict) or data.get("p") != purpose.value:
            raise LinkError("this link is not valid here", expired=False)
        return LinkClaims(
            subscriber_id=int(data["s"]), detail=data.get("d"), fingerprint=data.get("k")
        )
