"""Celery worker processes for the benchmark (ours and the naive design's), started for real.

Started as subprocesses with their settings in the environment, exactly as a deployment would;
`stop()` reads their peak memory before terminating them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.procstat import children, peak_rss_mb

READY_TIMEOUT_S = 60


class Workers:
    """One or more worker commands; ready once `ping()` says each is (how many answered a
    broadcast ping, or logged that they are ready)."""

    def __init__(
        self,
        commands: list[list[str]],
        env: dict[str, str],
        root: Path,
        log: Path,
        ping: Callable[[], int],
    ):
        self.logs = [log.with_suffix(f".{i}.log") for i in range(len(commands))]
        self._files = [path.open("wb") for path in self.logs]
        self.processes = [
            subprocess.Popen(
                command,
                cwd=root,
                env={**os.environ, **env},
                stdout=file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a group of its own: `kill` takes the pool with it
            )
            for command, file in zip(commands, self._files, strict=True)
        ]
        self.wait_ready(ping)

    def wait_ready(self, ping: Callable[[], int]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while ping() < len(self.processes):
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.processes):
                tail = "\n".join(path.read_text(errors="replace")[-2000:] for path in self.logs)
                self.stop()
                raise RuntimeError(f"workers did not start:\n{tail}")

    def kill(self, number: int) -> None:
        """SIGKILL worker `number` and its pool processes, as a crashed host would leave them."""
        process = self.processes[number]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def peak_rss_mb(self) -> dict[str, float]:
        """Peak memory of every process: each worker's main process and its pool children."""
        found: dict[str, float] = {}
        for number, process in enumerate(self.processes):
            found[f"worker{number}-main"] = peak_rss_mb(process.pid)
            for child_number, child in enumerate(children(process.pid)):
                found[f"worker{number}-child{child_number}"] = peak_rss_mb(child)
        return found

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for file in self._files:
            file.close()


def outage_worker(concurrency: int) -> list[str]:
    """Our worker, as the Procfile runs it."""
    return [
        str(Path(sys.executable).parent / "outage"),
        "worker",
        "--concurrency",
        str(concurrency),
    ]


def naive_worker(threads: int, name: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "bench.naive",
        "worker",
        "--pool",
        "threads",
        "--concurrency",
        str(threads),
        "--loglevel",
        "INFO",
        "-n",
        f"{name}@%h",
    ]
