"""Warm overhead per request of each API handler against a zero-latency ComfyUI stand-in.

See bench/handlers.py for what runs in the child and what the direct baseline is.
Target: median overhead (handler - direct, paired) ≤ 2 ms.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.common import REPO, Target, tally, verdict
from bench.handlers import WARM, Scenario
from bench.stack import Stack

OVERHEAD_TARGET_MS = 2.0


def run_scenario(stack: Stack, scenario: Scenario, iterations: int) -> dict[str, Any]:
    """One child process: warm the handler, time `iterations` pairs, count one request."""
    with tempfile.TemporaryDirectory(prefix="bench-warm-") as tmp:
        result = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "bench.handlers", "--child", json.dumps(asdict(scenario)),
                   "--iterations", str(iterations), "--result", str(result)]
        env = stack.lambda_env(scenario.comfy, scenario.function, **dict(scenario.env))
        done = subprocess.run(command, cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0 or not result.exists():
            raise RuntimeError(f"{scenario.label} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return json.loads(result.read_text(encoding="utf-8"))


def run(stack: Stack, iterations: int) -> dict[str, Any]:
    rows = []
    for scenario in WARM:
        rows.append(run_scenario(stack, scenario, iterations))
        overhead = rows[-1]["overhead"]["median"]
        print(f"  warm {scenario.label}: overhead {overhead:.2f} ms", file=sys.stderr)
    return {"iterations": iterations, "rows": rows}


def targets(results: dict[str, Any]) -> list[Target]:
    return [
        Target("Warm overhead", f"{row['scenario']['label']}: median ≤ {OVERHEAD_TARGET_MS:g} ms",
               f"{row['overhead']['median']:.2f} ms", row["overhead"]["median"] <= OVERHEAD_TARGET_MS)
        for row in results["rows"]
    ]


def extra_calls(row: dict[str, Any]) -> list[tuple[str, float | None]]:
    """Round trips the handler made that the direct baseline does not (they count as
    overhead), with the time each took in the counted request where known."""
    left = list(row["direct_calls"])
    timed = [(call, None) for call in row["comfy"]] + list(zip(row["aws"], row.get("aws_ms") or []))
    extra = []
    for call, ms in timed:
        if call in left:
            left.remove(call)
        else:
            extra.append((call, ms))
    return extra


def _extra(row: dict[str, Any]) -> str:
    calls = [f"{call} ({ms:.1f} ms)" if ms is not None else call for call, ms in extra_calls(row)]
    return "<br>".join(calls) or "—"


def _calls(row: dict[str, Any]) -> str:
    return tally([*row["comfy"], *row["aws"]]).replace(", ", "<br>")


def _row(row: dict[str, Any]) -> str:
    h, d, o = row["handler"], row["direct"], row["overhead"]
    met = o["median"] <= OVERHEAD_TARGET_MS
    return (f"| {row['scenario']['label']} | {row['status']} | {_calls(row)} | "
            f"{h['median']:.2f} / {h['p90']:.2f} | {d['median']:.2f} / {d['p90']:.2f} | "
            f"**{o['median']:.2f}** / {o['p90']:.2f} | {_extra(row)} | {verdict(met)} |")


def markdown(results: dict[str, Any], date: str, machine: str) -> str:
    return "\n".join([
        "## Warm overhead per request (`python -m bench --only warm`)",
        "",
        f"- Date: {date}",
        f"- Machine: {machine}",
        f"- Per handler: one child process with the functions' environment; after warm-up, "
        f"{results['iterations']} pairs alternating handler and direct baseline (who goes first "
        "alternates too). ComfyUI: the stand-in with delay 0; S3: the moto server.",
        "- Direct baseline: the same ComfyUI request(s) with one reused `requests.Session` and the "
        "answer parsed as JSON; where the handler reads S3, the same S3 operation with one reused "
        "boto3 client (moto's per-request cost is not the handler's). Overhead = handler − direct "
        "of the same pair: everything comfy_core and Powertools add (event parsing, validation, "
        "logging context, metrics flush, presigning, JSON response).",
        f"- Target: median overhead ≤ {OVERHEAD_TARGET_MS:g} ms.",
        "",
        "| request | answer | round trips of one request | handler ms median / p90 "
        "| direct ms median / p90 | overhead ms median / p90 | round trips not in the baseline | verdict |",
        "|---|---|---|---|---|---|---|---|",
        *(_row(row) for row in results["rows"]),
        "",
    ])
