"""Signed, expiring links that let a subscriber act without an account or a password.

A token names the subscriber and what it is for (managing preferences, unsubscribing, confirming
an address); it is signed with the instance's secret key, so it cannot be forged or turned into
another subscriber's, and it expires. Tokens carry no address or other personal data.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

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


@dataclass(frozen=True)
class LinkClaims:
    subscriber_id: int
    detail: str | None = None  # e.g. which address a confirmation is for ("email", "phone")


class Links:
    """Builds and reads the links of one instance (its public URL and secret key)."""

    def __init__(self, public_url: str, secret_key: str) -> None:
        self.public_url = public_url.rstrip("/")
        self._serializer = URLSafeTimedSerializer(secret_key, salt="outage-dispatcher.links")
        # What `dumps` signs with, made once: it makes a new signer for every token, and every
        # message carries two links.
        self._signer = self._serializer.make_signer()

    def token(self, purpose: LinkPurpose, subscriber_id: int, detail: str | None = None) -> str:
        """`self._serializer.dumps` of the claims, with the signer made once."""
        payload = self._serializer.dump_payload(
            {"p": purpose.value, "s": subscriber_id, "d": detail}
        )
        return self._signer.sign(payload).decode("utf-8")

    def url(self, purpose: LinkPurpose, subscriber_id: int, detail: str | None = None) -> str:
        token = self.token(purpose, subscriber_id, detail)
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
        return LinkClaims(subscriber_id=int(data["s"]), detail=data.get("d"))
