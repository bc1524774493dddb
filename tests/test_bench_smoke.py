"""A tiny run of the fan-out benchmark: it must keep working, and ours must record every delivery.

Asserts correctness only (the figures' keys, every delivery recorded, one provider request per
SMS or webhook); never a timing, which on a shared machine would fail at random.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import fanout
from bench.population import channel_counts, in_scope

N = 300
REQUIRED_KEYS = {
    "deliveries_per_s",
    "first_delivery_s",
    "last_delivery_s",
    "naive_deliveries_per_s",
    "apprise_deliveries_per_s",
    "ceiling_deliveries_per_s",
    "peak_rss_mb",
    "provider_requests",
}


def test_small_benchmark_records_every_delivery(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "figures.json"
    plot = tmp_path / "timeline.png"
    arguments = ["-n", str(N), "--latency-ms", "0", "--skip", "naive,apprise"]
    fanout.main([*arguments, "--json", str(out), "--plot", str(plot)])
    figures = json.loads(out.read_text())
    assert figures.keys() >= REQUIRED_KEYS
    ours = figures["designs"]["ours"]
    assert ours["deliveries"] == N + 1  # every subscriber and the public post
    assert ours["note"] == f"sent={N + 1}"
    assert figures["ceiling_deliveries_per_s"] is not None
    assert figures["naive_deliveries_per_s"] is None  # skipped
    counts = channel_counts(N)
    # Every SMS and webhook is its own request; email shares requests (at most one per message).
    minimum = counts["sms"] + counts["webhook"] + 1
    assert minimum < figures["provider_requests"] <= N + 1
    assert plot.stat().st_size > 0
    assert "ours" in capsys.readouterr().out


def test_a_scoped_run_tells_only_its_share_and_is_compared_with_the_unscoped_one(
    tmp_path: Path,
) -> None:
    out = tmp_path / "scoped.json"
    arguments = ["-n", str(N), "--latency-ms", "0", "--skip", "naive,apprise,ceiling"]
    fanout.main([*arguments, "--scope", "10", "--json", str(out)])
    figures = json.loads(out.read_text())
    scoped = figures["designs"]["ours-scoped"]
    hit = in_scope(N, 10)  # a tenth of a multiple of 2,000; of 300, the first 10 runs of 20
    assert scoped["deliveries"] == hit, "and no public post: a scoped incident is private"
    assert scoped["note"] == f"sent={hit}"
    assert figures["designs"]["ours"]["deliveries"] == N + 1
    assert figures["scope"].keys() == {
        "percent",
        "deliveries",
        "first_delivery_s",
        "last_delivery_s",
        "unscoped_last_delivery_s",
        "shorter",
    }
    with pytest.raises(SystemExit):
        fanout.main([*arguments, "--scope", "0"])
