"""How often anyone may make us send a confirmation: per client, per address, and a budget of
confirmation texts for everyone together.

A confirmation is a message we pay for, sent to whatever address a stranger types: 200 anonymous
sign-ups were 200 texts. So every public route that leads to one (the sign-up API and form, the
preference centre's "send it again", a new address or a return there) asks here first, for each
confirmation it would ask for (an email address and a number are two), before anything is
stored or sent, and whether the address is known or not (the answer must not tell them apart):

    per client    OUTAGE_SIGNUP_LIMIT_PER_CLIENT   5/hour    by client IP; IPv6 by its /64,
                                                             which one subscriber line gets whole
    per address   OUTAGE_SIGNUP_LIMIT_PER_ADDRESS  3/day     by a keyed digest of the address, so
                                                             the counters hold no personal data
    SMS budget    OUTAGE_SMS_CONFIRMATION_BUDGET   100/hour  confirmation texts, all of them

Past a client's or an address's limit the asker waits (429 with Retry-After). Past the budget,
sign-up by text pauses for everyone (503 with Retry-After; email still works), and the first
refusal of each window says to tell the team (`Refused.tell_team`, posted by
dispatcher/policy/notices.py). Nothing is counted for a refused request.

The counters are the `limits` library's moving windows: in Redis when one is configured
(OUTAGE_LIMITS_URL, else the broker when it is Redis), so every web process shares them; in
this process's memory otherwise (the embedded default is one process). A Redis that does not
answer refuses (503) rather than let sign-ups through uncounted.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv6Address, ip_address, ip_network

import limits
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import MovingWindowRateLimiter

from dispatcher.delivery.ratelimit import SOCKET_TIMEOUT_S, uses_redis
from dispatcher.settings import Settings

UNAVAILABLE_RETRY_S = 30


class Reason(StrEnum):
    """Why a confirmation is not sent now (the `reason` label of the refusals metric)."""

    CLIENT = "client"  # this client asked for its share of confirmations
    ADDRESS = "address"  # this address was sent its share
    SMS_BUDGET = "sms_budget"  # the confirmation texts of everyone: sign-up by text paused
    UNAVAILABLE = "unavailable"  # the shared counters (Redis) did not answer


MESSAGES = {
    Reason.CLIENT: "too many confirmations were asked for from your network; try again in {wait}",
    Reason.ADDRESS: "we sent this address several confirmations already: look for them (and in "
    "your spam folder), or try again in {wait}",
    Reason.SMS_BUDGET: "sign-up by text message is paused for now; sign up with an email address, "
    "or try again in {wait}",
    Reason.UNAVAILABLE: "sign-up is unavailable for a moment; try again in {wait}",
}


@dataclass(frozen=True)
class Refused:
    reason: Reason
    retry_after_s: int
    tell_team: bool = False  # the budget's first refusal in its window

    @property
    def http_status(self) -> int:
        """429 for this asker's own limits; 503 for what pauses everyone."""
        return 429 if self.reason in (Reason.CLIENT, Reason.ADDRESS) else 503

    @property
    def message(self) -> str:
        minutes = math.ceil(self.retry_after_s / 60)
        wait = f"{minutes} minute{'s' if minutes > 1 else ''}"
        if minutes > 90:
            hours = math.ceil(minutes / 60)
            wait = f"{hours} hours"
        return MESSAGES[self.reason].format(wait=wait)


class Throttle:
    """The sign-up counters of one process (shared through Redis when there is one)."""

    def __init__(self, settings: Settings, secret_key: str) -> None:
        self._storage = storage_for(settings)
        self._windows = MovingWindowRateLimiter(self._storage)
        self._secret = secret_key.encode()
        self.per_client = limits.parse(settings.signup_limit_per_client)
        self.per_address = limits.parse(settings.signup_limit_per_address)
        self.sms_budget = limits.parse(settings.sms_confirmation_budget)
        # One team notice per window of the budget.
        self._notice = type(self.sms_budget)(1, self.sms_budget.multiples)

    def take(self, client: str, addresses: Mapping[str, str]) -> Refused | None:
        """Count the confirmations to `addresses` (address field -> address) that `client` asks
        for, or count nothing and say why not."""
        if not addresses:
            return None
        checks: list[tuple[limits.RateLimitItem, tuple[str, ...], int, Reason]] = [
            (self.per_client, ("client", client_key(client)), len(addresses), Reason.CLIENT)
        ]
        for field, address in addresses.items():
            digest = hmac.new(self._secret, f"{field}:{address}".encode(), hashlib.sha256)
            checks.append(
                (self.per_address, ("address", digest.hexdigest()[:32]), 1, Reason.ADDRESS)
            )
        if "phone" in addresses:
            checks.append((self.sms_budget, ("sms",), 1, Reason.SMS_BUDGET))
        try:
            for item, key, cost, reason in checks:
                if not self._windows.test(item, *key, cost=cost):
                    return self._refused(item, key, reason)
            for item, key, cost, _ in checks:
                self._windows.hit(item, *key, cost=cost)
        except StorageError:
            return Refused(Reason.UNAVAILABLE, UNAVAILABLE_RETRY_S)
        return None

    def sms_remaining(self) -> int | None:
        """Confirmation texts left in the budget's window now (None: Redis did not answer)."""
        try:
            return max(0, self._windows.get_window_stats(self.sms_budget, "sms").remaining)
        except StorageError:
            return None

    def _refused(self, item: limits.RateLimitItem, key: tuple[str, ...], reason: Reason) -> Refused:
        reset = self._windows.get_window_stats(item, *key).reset_time
        wait = max(1, math.ceil(reset - time.time()))
        if reason is Reason.SMS_BUDGET:
            return Refused(reason, wait, tell_team=self._windows.hit(self._notice, "notice"))
        return Refused(reason, wait)

    def close(self) -> None:
        if isinstance(self._storage, RedisStorage):
            self._storage.storage.close()


def storage_for(settings: Settings) -> Storage:
    """Redis when configured for the limits or as the broker; this process's memory else."""
    url = settings.limits_url or (settings.broker_url if uses_redis(settings.broker_url) else None)
    if url is None:
        return MemoryStorage()
    return RedisStorage(
        url,
        key_prefix=f"{settings.redis_prefix}:limits",
        wrap_exceptions=True,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
    )


def client_key(client: str) -> str:
    """An IPv4 client by its address; an IPv6 one by its /64 (one subscriber line's share)."""
    try:
        address = ip_address(client)
    except ValueError:
        return client
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ip_network(f"{address}/64", strict=False))
    return str(address)
