"""Shared pieces of the benchmarks: statistics, machine description, the results file."""

from __future__ import annotations

import math
import os
import platform
import re
import statistics
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "benchmarks.md"
MIB = 1024 * 1024


# -- statistics ------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarise(values: list[float]) -> dict[str, float]:
    """Median, p90, min, max and spread ((max - min) / median) of one figure's runs."""
    median = statistics.median(values)
    return {
        "n": len(values),
        "median": median,
        "p90": percentile(values, 90),
        "min": min(values),
        "max": max(values),
        "spread_pct": 100.0 * (max(values) - min(values)) / median if median else 0.0,
    }


# -- context -----------------------------------------------------------------------------------
def machine() -> str:
    return f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def tally(calls: list[str]) -> str:
    """Calls in first-seen order with counts: "GET /view ×4, GET /history"."""
    counts: dict[str, int] = {}
    for call in calls:
        counts[call] = counts.get(call, 0) + 1
    return ", ".join(f"{call} ×{n}" if n > 1 else call for call, n in counts.items()) or "—"


def verdict(met: bool) -> str:
    return "meets" if met else "**MISSES**"


@dataclass(frozen=True)
class Target:
    """One target and how this run did against it, for the summary at the top."""

    group: str  # the line of the summary table it counts towards
    name: str
    figure: str
    met: bool


# -- docs/benchmarks.md ----------------------------------------------------------------------------
# Each benchmark owns one marked region, so running one of them (`--only`) rewrites its
# region and keeps the others' last results.
_REGION = re.compile(r"<!-- bench:(?P<name>[a-z_]+) -->\n.*?<!-- /bench:(?P=name) -->\n", re.S)
ORDER = ("summary", "cold", "warm", "roundtrips", "archiver", "inputs", "watcher", "fleet", "sizes")
TITLE = "# Benchmarks\n\n"


def region(name: str, body: str) -> str:
    return f"<!-- bench:{name} -->\n{body.rstrip()}\n<!-- /bench:{name} -->\n"


def read_regions(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    return {match["name"]: match[0] for match in _REGION.finditer(path.read_text(encoding="utf-8"))}


def write_regions(path: Path, bodies: dict[str, str]) -> None:
    """Replace the given regions of the results file, keep the others, in a fixed order."""
    regions = read_regions(path)
    regions.update({name: region(name, body) for name, body in bodies.items()})
    names = [name for name in ORDER if name in regions] + sorted(set(regions) - set(ORDER))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TITLE + "\n".join(regions[name] for name in names), encoding="utf-8")
