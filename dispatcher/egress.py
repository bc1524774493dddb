"""Where the dispatcher may connect on a subscriber's behalf: public addresses only, unless the
operator allows an internal network (`OUTAGE_WEBHOOK_ALLOW_NETWORKS`).

Why: a webhook URL is typed by whoever adds the subscriber, and the dispatcher POSTs to it from
inside the company's network. Unchecked, a URL naming 127.0.0.1, 10.0.0.1 or the cloud's
metadata service (169.254.169.254) makes the dispatcher call internal services for whoever typed
it (server-side request forgery). So an address is refused when it is loopback, private, shared
(carrier-grade NAT), link-local, multicast, reserved or unspecified, in IPv4 and IPv6, including
IPv4 carried inside IPv6 (::ffff:127.0.0.1, 6to4); and so is a name that only means something
inside a network (localhost, *.internal, *.local, a name without a dot).

It is checked twice. When the URL is added (`url_refusal`): a literal address in any spelling
(2130706433, 0x7f000001, 127.1, [::ffff:127.0.0.1]), an internal name, and a name that already
resolves to a refused address; a name that does not resolve yet is accepted. When it is sent
(channels/webhook.py): every address the name resolves to then is checked, and the connection
goes to an address that was checked, so a DNS answer that changed in between (DNS rebinding)
cannot slip past.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from dispatcher.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOW_SETTING = "OUTAGE_WEBHOOK_ALLOW_NETWORKS"
# Names that only resolve inside a network: RFC 6761 (localhost), RFC 6762 (local), RFC 8375
# (home.arpa), ICANN's private-use "internal" (2024), and the pseudo top-level names most often
# used on company networks.
INTERNAL_SUFFIXES = (
    "localhost",
    "local",
    "internal",
    "home.arpa",
    "localdomain",
    "lan",
    "home",
    "corp",
    "intranet",
    "private",
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: neither private nor public
# What the C resolver reads as an IPv4 address (inet_aton): decimal, hex and octal parts, 1-4.
_INET_ATON = re.compile(r"(?i)(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}")
RESOLVE_TIMEOUT_S = 2.0  # adding a subscriber never waits longer than this for DNS
_resolver = ThreadPoolExecutor(max_workers=2, thread_name_prefix="egress-dns")


class AddressRefused(OSError):
    """A connection the policy does not allow. An OSError, because that is what aiohttp lets a
    resolver raise (it wraps it in ClientConnectorDNSError, whose `os_error` this is)."""


def literal_address(host: str) -> IPAddress | None:
    """`host` as an IP address if it is one in any spelling the network stack accepts (with or
    without brackets, an IPv6 zone, IPv4 in decimal, hex, octal or short form), else None."""
    text = host.strip().strip("[]").rstrip(".")
    try:
        return ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        pass
    if _INET_ATON.fullmatch(text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def _kind(address: IPAddress) -> str | None:
    """Why `address` is not a public one ("a loopback address"), or None when it is."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return _kind(embedded)
    checks = (
        (address.is_unspecified, "an unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address in _SHARED, "a shared (carrier-grade NAT) address"),
        (address.is_private, "a private address"),
        (address.is_reserved, "a reserved address"),
        (
            isinstance(address, ipaddress.IPv6Address) and address.is_site_local,
            "a site-local address",
        ),
    )
    for refused, kind in checks:
        if refused:
            return kind
    return None if address.is_global else "a special-purpose address"


def _shown(address: IPAddress) -> str:
    """The address as a person reads it: IPv4 inside IPv6 shown as IPv4 too."""
    embedded = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return f"{address} ({embedded})" if embedded is not None else str(address)


def internal_name(host: str) -> bool:
    """A name that means something only inside a network: no dot, or an internal suffix."""
    name = host.lower().rstrip(".")
    if "." not in name:
        return True
    return any(name == suffix or name.endswith("." + suffix) for suffix in INTERNAL_SUFFIXES)


_HINT = f"(to allow an internal receiver, add its network to {ALLOW_SETTING})"


@dataclass(frozen=True)
class EgressPolicy:
    """Which addresses may be connected to: public ones, those in `networks`, and the exact
    host names in `hosts` (the sandbox's own, in sandbox mode)."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings) -> EgressPolicy:
        return cls(networks=tuple(settings.webhook_allow_networks))

    def with_host(self, host: str | None) -> EgressPolicy:
        """The policy that also allows `host` itself, whatever it resolves to."""
        if not host:
            return self
        return EgressPolicy(self.networks, self.hosts | {host.lower().rstrip(".")})

    def allows_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def refused_kind(self, address: IPAddress) -> str | None:
        """What `address` is when a connection to it is refused ("a loopback address"), or
        None when it may be made: a public address, or one in an allowed network."""
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        if any(a in network for a in candidates for network in self.networks):
            return None
        return _kind(address)

    def refusal(self, address: IPAddress) -> str | None:
        """Why a connection to `address` is refused, as a sentence, or None."""
        kind = self.refused_kind(address)
        return None if kind is None else f"{_shown(address)} is {kind}, not a public one {_HINT}"

    def resolved_refusal(self, host: str, addresses: Iterable[IPAddress]) -> str | None:
        """Why `host`, resolving to `addresses`, is refused: when any of them is (at add time;
        at send time the refused ones are left out, and only none left is a refusal)."""
        if self.allows_host(host):
            return None
        for address in addresses:
            kind = self.refused_kind(address)
            if kind is not None:
                return f"{host} resolves to {_shown(address)}, {kind}, not a public one {_HINT}"
        return None

    def url_refusal(self, url: str) -> str | None:
        """Why a webhook URL may not be added, or None. A literal address is checked as it is;
        an internal name passes only when it resolves, entirely, into an allowed network; any
        other name passes unless it already resolves to a refused address."""
        host = urlsplit(url).hostname or ""
        if not host:
            return "the URL names no host"
        if self.allows_host(host):
            return None
        address = literal_address(host)
        if address is not None:
            return self.refusal(address)
        addresses = lookup(host)
        if internal_name(host) and not addresses:
            return f"{host} is an internal name, not a public one {_HINT}"
        return self.resolved_refusal(host, addresses or ())


def lookup(host: str) -> list[IPAddress] | None:
    """The addresses `host` resolves to now; None when it does not resolve (yet), or DNS does
    not answer within RESOLVE_TIMEOUT_S (the send-time check still applies then)."""
    future = _resolver.submit(socket.getaddrinfo, host, None, type=socket.SOCK_STREAM)
    try:
        found = future.result(timeout=RESOLVE_TIMEOUT_S)
    except (OSError, UnicodeError, FutureTimeout):
        return None
    addresses = {literal_address(str(info[4][0])) for info in found}
    return [address for address in addresses if address is not None] or None
