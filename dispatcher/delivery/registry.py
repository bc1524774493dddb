"""Finds channel adapters through the `outage_dispatcher.channels` entry points and builds them.

A third-party package adds a channel by declaring an entry point in that group; nothing here
changes. Adapters are built lazily and once, since each holds a pooled SDK client.
"""

from __future__ import annotations

import threading
from importlib.metadata import entry_points

from channels.base import Channel, ChannelFactory, RetryPolicy
from dispatcher.errors import OutageError
from dispatcher.settings import Settings

ENTRY_POINT_GROUP = "outage_dispatcher.channels"


def available_channels() -> dict[str, ChannelFactory]:
    """Every installed adapter class by channel name."""
    found: dict[str, ChannelFactory] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        found[entry.name] = entry.load()
    return found


class UnknownChannel(OutageError, ValueError):
    """A channel name no installed adapter answers to. Still a ValueError: `ChannelRegistry.get`
    fails with one whether the name is unknown or the adapter cannot be built (a credential
    missing), and its callers catch ValueError for both."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown channel {name!r}; known channels: {', '.join(sorted(known))}")


class ChannelRegistry:
    """The adapters of one process, built on first use from the settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.factories = available_channels()
        self._built: dict[str, Channel] = {}
        # Batches are sent from more than one thread (the embedded loop's lanes, a web process):
        # two first uses at once must not build two adapters, one of them never closed.
        self._building = threading.Lock()

    @property
    def names(self) -> list[str]:
        return sorted(self.factories)

    def factory(self, name: str) -> ChannelFactory:
        try:
            return self.factories[name]
        except KeyError:
            raise UnknownChannel(name, self.names) from None

    def get(self, name: str) -> Channel:
        built = self._built.get(name)
        if built is not None:
            return built
        with self._building:
            if name not in self._built:
                retry = RetryPolicy(
                    attempts=self.settings.send_attempts,
                    backoff_s=self.settings.send_backoff_s,
                    backoff_max_s=self.settings.send_backoff_max_s,
                )
                self._built[name] = self.factory(name).from_settings(self.settings, retry)
            return self._built[name]

    def subscriber_channels(self) -> list[str]:
        """Channels that send to a subscriber's own address (not broadcast ones)."""
        return [name for name in self.names if self.factories[name].address_field is not None]

    def broadcast_channels(self) -> list[str]:
        """Broadcast channels that are installed and switched on in the settings."""
        return [
            name
            for name in self.settings.broadcast
            if name in self.factories and self.factories[name].address_field is None
        ]

    def close(self) -> None:
        for channel in self._built.values():
            channel.close()
        self._built.clear()
