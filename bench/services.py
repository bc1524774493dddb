"""Servers of our own for runs that break them: a PostgreSQL cluster that can be stopped and
started, and a RabbitMQ virtual host nobody else's queues share. Used by bench/faults.py and by
tests/test_faults_services.py, so that neither restarts a server other people's runs depend on.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """A PostgreSQL cluster of our own (trust authentication, no fsync) on a free port. initdb
    refuses to run as root: then every command runs as the `postgres` user. `available` is
    False when the binaries are missing (the caller skips, or falls back to SQLite)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.directory = Path(tempfile.mkdtemp(prefix="outage-pg-"))
        self.data = self.directory / "data"
        self.running = False

    @property
    def available(self) -> bool:
        return shutil.which("initdb") is not None and shutil.which("pg_ctl") is not None

    def _run(self, *command: str) -> None:
        as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*as_owner, *command], check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        """Make the cluster and start it (nothing when the binaries are missing)."""
        if not self.available:
            return
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        log = str(self.directory / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")
        self.running = True

    def stop(self) -> None:
        """A fast shutdown: every session is ended at once, as a restart does."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        self.running = False

    def remove(self) -> None:
        if self.running:
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def rabbitmq_available() -> bool:
    return shutil.which("rabbitmqctl") is not None


def _rabbitmqctl(*arguments: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *arguments], check=True, capture_output=True, timeout=60)


@contextmanager
def rabbitmq_vhost(base_url: str) -> Iterator[str]:
    """A virtual host of our own on the RabbitMQ at `base_url` (no trailing vhost), as a broker
    URL, deleted afterwards (needs rabbitmqctl, as the server's administrator)."""
    name = f"outage_{os.getpid()}_{free_port()}"
    _rabbitmqctl("add_vhost", name)
    try:
        _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield f"{base_url.rstrip('/')}/{name}"
    finally:
        _rabbitmqctl("delete_vhost", name)
