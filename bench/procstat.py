"""Peak memory of processes, from Linux's /proc (no dependency; elsewhere it reports 0)."""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mb(pid: int) -> float:
    """The process's high-water resident set (VmHWM) in MB; 0.0 if it is gone or unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def own_peak_rss_mb() -> float:
    """This process's peak resident set in MB (Linux reports ru_maxrss in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def children(pid: int) -> list[int]:
    """Direct children of `pid` (a Celery worker's pool processes)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return found
