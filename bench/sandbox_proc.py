"""The provider sandbox in a process of its own, driven over stdin/stdout by the benchmark.

Why a separate process: the sandbox is the "provider" every design talks to. In the benchmark's
own process it would compete for the GIL with whatever is measured and its 100,000 recorded
messages would count in that process's peak memory. Here it has its own interpreter, and the
benchmark asks it (one line in, one JSON line out) for what it needs: statistics, and the
acceptance time of every recorded message, written to a file rather than sent over HTTP.

Commands: ``clear``, ``stats``, ``times PATH``, ``departures PATH``, ``latency MS``,
``outage KIND SECONDS CHANNEL [RETRY_AFTER]``, ``delay SECONDS URL``, ``faults-clear``, ``quit``.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.procstat import peak_rss_mb


def serve(latency_ms: float) -> None:
    """Child side: start the sandbox, print its URL, answer commands until ``quit``."""
    from dispatcher.sandbox.server import Sandbox

    sandbox = Sandbox(latency_ms=latency_ms)
    print(json.dumps({"url": sandbox.start()}), flush=True)
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        answer: dict[str, Any] = {"ok": True}
        if command == "clear":
            sandbox.clear()
        elif command == "stats":
            answer = sandbox.stats()
        elif command == "times":
            # (channel, accepted at, recipient) per message; only what the benchmark needs.
            rows = [
                (m["channel"], datetime.fromisoformat(m["at"]).timestamp(), m["to"])
                for m in sandbox.messages()
            ]
            Path(argument).write_text(json.dumps(rows))
            answer = {"count": len(rows)}
        elif command == "departures":  # when each SMS request left its sender
            stamps = sandbox.departures("sms")
            Path(argument).write_text(json.dumps(stamps))
            answer = {"count": len(stamps)}
        elif command == "latency":
            sandbox.set_latency(float(argument))
        elif command == "faults-clear":
            sandbox.clear_faults()
        elif command == "outage":
            kind, seconds, channel, *retry_after = argument.split()
            later = float(retry_after[0]) if retry_after else None
            sandbox.inject_outage(kind, float(seconds), channel, later)  # type: ignore[arg-type]
        elif command == "delay":
            seconds, url = argument.split(maxsplit=1)
            sandbox.inject_recipient_delay(url, float(seconds))
        elif command == "quit":
            break
        print(json.dumps(answer), flush=True)
    sandbox.stop()


class SandboxProcess:
    """Parent side: the running sandbox process and the few questions the benchmark asks."""

    def __init__(self, latency_ms: float, root: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.sandbox_proc", str(latency_ms)],
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.url: str = self._read()["url"]

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the sandbox process exited")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._read()

    def clear(self) -> None:
        self.ask("clear")

    def requests(self) -> int:
        return sum(self.ask("stats")["requests"].values())

    def recorded(self) -> int:
        return sum(self.ask("stats")["recorded"].values())

    def departures(self, path: Path) -> list[float]:
        """When each SMS request left its sender (Unix time), oldest first."""
        self.ask(f"departures {path}")
        stamps: list[float] = json.loads(path.read_text())
        path.unlink()
        return stamps

    def times(self, path: Path) -> list[tuple[str, float, str | None]]:
        """Every recorded message as (channel, accepted at as a Unix time, recipient)."""
        self.ask(f"times {path}")
        rows = [tuple(row) for row in json.loads(path.read_text())]
        path.unlink()
        return rows  # type: ignore[return-value]

    def peak_rss_mb(self) -> float:
        return peak_rss_mb(self.process.pid)

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError, RuntimeError):
                self.ask("quit")
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


if __name__ == "__main__":
    serve(float(sys.argv[1]) if len(sys.argv) > 1 else 0.0)
