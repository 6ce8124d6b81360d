"""Round trips of one warm request, counted (tests/unit/test_round_trips.py asserts the same).

Each scenario runs in a child against the local stack (bench/handlers.py): after warm-up
requests, one request is made with counters on ComfyUI requests, every AWS operation and
workflow bodies downloaded.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.common import Target, verdict
from bench.handlers import WARM, Scenario
from bench.stack import Stack
from bench.warm import run_scenario


@dataclass(frozen=True)
class Counted:
    scenario: Scenario
    target: str = ""  # empty: reported, no target
    check: Callable[[dict[str, Any]], bool] | None = None


def _cached_workflow(row: dict[str, Any]) -> bool:
    """Exactly the two round trips: nothing else on the request path."""
    return (row["aws"] == ["S3 GetObject (If-None-Match)"] and row["downloads"] == 0
            and row["comfy"] == ["POST /prompt"])


def scenarios(stack: Stack) -> list[Counted]:
    ids = stack.prompt_ids
    by_function = {scenario.function: scenario for scenario in WARM}
    # ARCHIVER_FUNCTION_NAME comes from the template: a finished prompt without a manifest asks
    # the archiver to copy it now (an asynchronous Lambda invoke; the child's only AWS endpoint
    # is moto, which has no such function, see Stack.lambda_env).
    unarchived = Scenario("task_status (finished, not archived yet)", "task_status", "task_status", "none",
                          "sink", ids["unarchived"])
    pending = Scenario("task_status (pending)", "task_status", "task_status", "none", "busy", ids["pending"])
    running = Scenario("task_status (running)", "task_status", "task_status", "none", "busy", ids["running"])
    targeted = [
        Counted(by_function["task_status"], "1 ComfyUI request", lambda r: len(r["comfy"]) == 1),
        Counted(pending, "2 ComfyUI requests", lambda r: len(r["comfy"]) == 2),
        Counted(running),
        Counted(unarchived),
        Counted(by_function["run_workflow"],
                "1 conditional S3 GET (no body downloaded) + 1 POST /prompt, nothing else", _cached_workflow),
    ]
    done = {c.scenario.label for c in targeted}
    return targeted + [Counted(s) for s in WARM if s.label not in done]


def run(stack: Stack) -> dict[str, Any]:
    rows = []
    for counted in scenarios(stack):
        row = run_scenario(stack, counted.scenario, 0)
        row["target"] = counted.target
        row["met"] = counted.check(row) if counted.check else None
        rows.append(row)
        print(f"  round trips {counted.scenario.label}: {row['comfy'] + row['aws']}", file=sys.stderr)
    return {"rows": rows}


def targets(results: dict[str, Any]) -> list[Target]:
    return [Target("Round trips", f"{row['scenario']['label']}: {row['target']}", _all(row), row["met"])
            for row in results["rows"] if row["target"]]


def _all(row: dict[str, Any]) -> str:
    return ", ".join(row["comfy"] + row["aws"]) or "none"


def _row(row: dict[str, Any]) -> str:
    comfy = "<br>".join(row["comfy"]) or "—"
    aws = "<br>".join(row["aws"]) or "—"
    downloads = "—" if row["downloads"] is None else str(row["downloads"])
    met = verdict(row["met"]) if row["target"] else "—"
    return (f"| {row['scenario']['label']} | {row['status']} | {len(row['comfy'])} | {comfy} | "
            f"{len(row['aws'])} | {aws} | {downloads} | {row['target'] or '—'} | {met} |")


def markdown(results: dict[str, Any], date: str, machine: str) -> str:
    return "\n".join([
        "## Round trips per request (`python -m bench --only roundtrips`)",
        "",
        f"- Date: {date}",
        f"- Machine: {machine}",
        "- One warm request per row (after 5 warm-up requests), counted in the child: ComfyUI "
        "requests through comfy_core's session, every AWS operation through botocore, workflow "
        "bodies downloaded by the workflow store. `task_status` with IMAGE_BUCKET set also reads "
        "the prompt's archive manifest from S3 when the prompt has images.",
        "- The ComfyUI and S3 counts of the targeted rows are asserted without sockets in "
        "`tests/unit/test_round_trips.py`.",
        "",
        "| request | answer | ComfyUI requests | which | AWS operations | which | workflow downloads "
        "| target | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
        *(_row(row) for row in results["rows"]),
        "",
    ])
