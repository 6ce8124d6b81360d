"""Cold init: a fresh interpreter imports a handler and serves its first event.

Each run is a child process (bench/cold_child.py) with a Lambda-like environment, against
the local stack. Two figures per run, both from spawn:

* spawn → answer: the parent reads CLOCK_MONOTONIC before spawning, the child reads it
  after its first answer (the same system-wide clock); this is Lambda's init + first
  invoke. The targets are judged on it.
* whole process: spawn to exit, as the parent sees it (adds interpreter teardown).

A run counts only when the handler answered as it should (a 2xx proxy response; the
archiver: a run summary with status ok); other runs are left out of the figures and
reported, and a function with such runs misses its target.

Baselines, measured the same way in the same rounds: ``import boto3`` and
``import boto3; boto3.client("s3")``. Rounds alternate direction so drift hits all alike.

Two layouts: "source" (the repository, PYTHONPATH=.:layers/comfy_core, .pyc cached after a
discarded warm-up round) and, when a `sam build` output exists, "built" (the function
folder and layer from .aws-sam/build, PYTHONDONTWRITEBYTECODE=1: Lambda's /var/task and
/opt are read-only, so whatever the build ships without .pyc is compiled on every cold start).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import REPO, Target, summarise, verdict
from bench.stack import FunctionInfo, Stack, template_functions
from devtools.template import Template

CHILD_CODE = (Path(__file__).parent / "cold_child.py").read_text(encoding="utf-8")
CLIENT_FACTOR = 1.3  # an S3 function may take this much of "import boto3 + client"
# The first event a container of each function serves; default events/<name>.json.
FIRST_EVENT = {"archiver": "archiver_scheduled"}
# Functions whose prompts must not land in the read stand-in's history.
COMFY_OF = {"run_workflow": "sink"}
BASELINES = {
    "baseline:import": "`import boto3`",
    "baseline:client": "`import boto3; boto3.client('s3')`",
}


@dataclass(frozen=True)
class Subject:
    key: str  # "baseline:..." or the function name
    layout: str  # "source" | "built" | "" for baselines
    module: str
    cwd: Path
    env: dict[str, str]
    event: Path | None = None
    info: FunctionInfo | None = None


def measured_functions(template: Template | None = None) -> list[FunctionInfo]:
    """Every function with an Api event in template.yaml, plus the archiver."""
    return [f for f in template_functions(template) if f.api or f.name == "archiver"]


def event_file(name: str) -> Path:
    return REPO / "events" / f"{FIRST_EVENT.get(name, name)}.json"


def subjects(stack: Stack, build_dir: Path | None) -> list[Subject]:
    base = stack.lambda_env()
    found = [Subject(key, "", key, REPO, base) for key in BASELINES]
    measured = measured_functions(stack.local.template)
    for info in measured:
        env = stack.lambda_env(COMFY_OF.get(info.name, "main"), info.name)
        found.append(Subject(info.name, "source", f"functions.{info.name}.app", REPO, env,
                             event_file(info.name), info))
    if build_dir is not None:
        build_dir = build_dir.resolve()  # the children run inside it
        layer = build_dir / "ComfyCoreLayer" / "python"
        for info in measured:
            folder = build_dir / info.logical_id
            if not folder.is_dir():
                continue
            env = stack.lambda_env(COMFY_OF.get(info.name, "main"), info.name,
                                   PYTHONPATH=os.pathsep.join([str(folder), str(layer)]),
                                   PYTHONDONTWRITEBYTECODE="1")
            found.append(Subject(info.name, "built", "app", folder, env, event_file(info.name), info))
    return found


def answered(outcome: str) -> bool:
    """The handler answered as it should: a 2xx proxy response, or a run summary with status
    ok (the archiver; the baselines report ok too)."""
    return outcome == "ok" or (outcome.isdigit() and 200 <= int(outcome) < 300)


def run_once(subject: Subject, result_dir: Path, breakdown: bool = False) -> dict[str, Any]:
    result = result_dir / "result.json"
    result.unlink(missing_ok=True)
    env = {**subject.env, "BENCH_SUBJECT": subject.module, "BENCH_RESULT": str(result),
           "BENCH_EVENT": str(subject.event or "")}
    flags = ["-X", "importtime"] if breakdown else []
    if breakdown and subject.layout:
        env["BENCH_BREAKDOWN"] = "1"
    clock = time.CLOCK_MONOTONIC
    spawned = time.clock_gettime_ns(clock)
    done = subprocess.run([sys.executable, *flags, "-c", CHILD_CODE], cwd=subject.cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    ended = time.clock_gettime_ns(clock)
    if done.returncode != 0 or not result.exists():
        raise RuntimeError(f"cold {subject.layout} {subject.key} failed:\n{done.stderr[-3000:]}")
    report = json.loads(result.read_text(encoding="utf-8"))
    report["answered"] = answered(report["outcome"])
    report["whole_ms"] = (ended - spawned) / 1e6
    report["spawn_ms"] = (report["answered_ns"] - spawned) / 1e6 if report.get("answered_ns") else None
    if breakdown:
        report["imports"] = _import_times(done.stderr)
    return report


def _import_times(stderr: str) -> dict[str, int]:
    """Self time (µs) of each module from `-X importtime` output. Self, not cumulative: a
    module's cumulative time includes shared dependencies whichever module loads them first."""
    times = {}
    for line in stderr.splitlines():
        if line.startswith("import time:") and not line.endswith("| package"):
            parts = line.removeprefix("import time:").split("|")
            if len(parts) == 3 and parts[0].strip().isdigit():
                times[parts[2].strip()] = int(parts[0])
    return times


# -- where an S3 function's cold start goes --------------------------------------------------------
BREAKDOWN_RUNS = 3


def breakdowns(todo: list[Subject], timed: list[dict[str, Any]], result_dir: Path) -> dict[str, Any]:
    """For each source-layout function that loads boto3: untimed runs with -X importtime and
    every client creation and AWS call timed, against the modules baseline 2 loads."""
    baseline = next(s for s in todo if s.key == "baseline:client")
    known = set(run_once(baseline, result_dir, breakdown=True)["imports"])
    loads_boto3 = {row["key"] for row in timed if row["layout"] == "source" and True in row["boto3"]}
    found = {}
    for subject in todo:
        if subject.layout == "source" and subject.key in loads_boto3:
            reports = [run_once(subject, result_dir, breakdown=True) for _ in range(BREAKDOWN_RUNS)]
            reports = [report for report in reports if report["answered"]]
            if reports:
                found[subject.key] = _breakdown(reports, known)
    return found


def _breakdown(reports: list[dict[str, Any]], known: set[str]) -> dict[str, Any]:
    def median(key: str) -> float:
        return statistics.median(r[key] for r in reports)

    sequences = [[name for name, _ in r["marks"]] for r in reports]
    marks = [(name, statistics.median(r["marks"][i][1] for r in reports if len(r["marks"]) > i))
             for i, name in enumerate(sequences[0])] if all(s == sequences[0] for s in sequences) else []
    groups: dict[str, list[float]] = {}
    for r in reports:
        per_run: dict[str, float] = {}
        for module, micros in r["imports"].items():
            if module not in known:
                top = module.split(".")[0]
                per_run[top] = per_run.get(top, 0.0) + micros / 1e3
        for top, ms in per_run.items():
            groups.setdefault(top, []).append(ms)
    extra = sorted(((top, statistics.median(v)) for top, v in groups.items()), key=lambda kv: -kv[1])
    return {"import_ms": median("import_ms"), "boto3_import_ms": median("boto3_import_ms"),
            "first_event_ms": median("first_event_ms"), "marks": marks,
            "extra_imports_ms": sum(ms for _, ms in extra), "extra_imports": extra[:6]}


def run(stack: Stack, runs: int, build_dir: Path | None) -> dict[str, Any]:
    todo = subjects(stack, build_dir)
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {(s.layout, s.key): [] for s in todo}
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as tmp:
        for subject in todo:  # warm-up round, discarded: writes .pyc, fills the page cache
            run_once(subject, Path(tmp))
        for number in range(runs):
            order = todo if number % 2 == 0 else list(reversed(todo))
            for subject in order:
                samples[(subject.layout, subject.key)].append(run_once(subject, Path(tmp)))
            print(f"  cold round {number + 1}/{runs}", file=sys.stderr)
        _check_answers(samples)
        rows = [_figures(s, samples[(s.layout, s.key)]) for s in todo]
        found = breakdowns(todo, rows, Path(tmp))
    return {"runs": runs, "build_dir": str(build_dir) if build_dir else None, "subjects": rows,
            "breakdown": found}


def _check_answers(samples: dict[tuple[str, str], list[dict[str, Any]]]) -> None:
    """Report runs whose handler did not answer as it should; stop when no run of a subject did."""
    for (layout, key), reports in samples.items():
        failed = [r["outcome"] for r in reports if not r["answered"]]
        if failed:
            print(f"  cold {layout or 'baseline'} {key}: {len(failed)} of {len(reports)} runs answered "
                  f"{', '.join(sorted(set(failed)))}; left out of the figures", file=sys.stderr)
        if len(failed) == len(reports):
            raise RuntimeError(f"cold {layout} {key}: no run answered as expected "
                               f"(got {', '.join(sorted(set(failed)))})")


def _figures(subject: Subject, reports: list[dict[str, Any]]) -> dict[str, Any]:
    failed = [r["outcome"] for r in reports if not r["answered"]]
    reports = [r for r in reports if r["answered"]]  # a cold start counts only when it answered
    key = "spawn_ms" if all(r["spawn_ms"] is not None for r in reports) else "whole_ms"
    info = subject.info
    return {
        "key": subject.key,
        "layout": subject.layout,
        "uses_s3": bool(info and info.uses_s3),
        "event": subject.event.name if subject.event else None,
        "spawn": summarise([r[key] for r in reports]),
        "whole": summarise([r["whole_ms"] for r in reports]),
        "import": summarise([r["import_ms"] for r in reports]),
        "boto3": sorted({r["boto3"] for r in reports}),
        "failures": len(failed),  # runs left out: the handler did not answer as it should
        "failed_outcomes": sorted(set(failed)),
    }


# -- judging and reporting -----------------------------------------------------------------------
def _baseline(results: dict[str, Any], key: str) -> float:
    return next(s["spawn"]["median"] for s in results["subjects"] if s["key"] == key)


def judge(results: dict[str, Any]) -> None:
    """Add target, limit and met to every function row."""
    plain, client = _baseline(results, "baseline:import"), _baseline(results, "baseline:client")
    for row in results["subjects"]:
        if not row["layout"]:
            continue
        if row["uses_s3"]:
            row["target"] = f"≤ {CLIENT_FACTOR}× baseline 2"
            row["limit"] = CLIENT_FACTOR * client
            row["met"] = row["spawn"]["median"] <= row["limit"]
        else:
            row["target"] = "no boto3, ≤ baseline 1"
            row["limit"] = plain
            row["met"] = row["boto3"] == [False] and row["spawn"]["median"] <= plain
        row["met"] = row["met"] and not row.get("failures")  # a cold start that fails is no cold start


def targets(results: dict[str, Any]) -> list[Target]:
    return [
        Target(f"Cold init, {row['layout']} layout", f"`{row['key']}`: {row['target']}",
               f"{row['spawn']['median']:.0f} ms vs {row['limit']:.0f} ms"
               + ("" if row["uses_s3"] or row["boto3"] == [False] else ", imports boto3")
               + _failed(row),
               row["met"])
        for row in results["subjects"] if row["layout"]
    ]


def _failed(row: dict[str, Any]) -> str:
    if not row.get("failures"):
        return ""
    return f", {row['failures']} runs failed ({', '.join(row['failed_outcomes'])})"


def _ms(stats: dict[str, float]) -> str:
    return f"{stats['median']:.0f} ({stats['min']:.0f}–{stats['max']:.0f}, {stats['spread_pct']:.0f}%)"


def _row(row: dict[str, Any]) -> str:
    if not row["layout"]:
        name, s3, boto3, target, met = f"baseline: {BASELINES[row['key']]}", "—", "yes", "—", "—"
    else:
        name, s3 = f"`{row['key']}`", "yes" if row["uses_s3"] else "no"
        boto3 = "yes" if True in row["boto3"] else "no"
        # Median against the limit: how close to it, whichever side.
        use = row["spawn"]["median"] / row["limit"]
        target = row["target"]
        met = f"{verdict(row['met'])} ({use:.2f} of limit {row['limit']:.0f}{_failed(row)})"
    return (f"| {name} | {s3} | {boto3} | {_ms(row['spawn'])} | "
            f"{row['whole']['median']:.0f} | {row['import']['median']:.0f} | {target} | {met} |")


def _table(results: dict[str, Any], layout: str) -> list[str]:
    rows = [r for r in results["subjects"] if r["layout"] in ("", layout)]
    return [
        "| subject | S3 in its policies | boto3 loaded after 1st event "
        "| spawn → answer ms: median (min–max, spread) "
        "| whole process ms (median) | in-child import ms (median) | target | verdict |",
        "|---|---|---|---|---|---|---|---|",
        *(_row(r) for r in rows),
    ]


def _calls(marks: list[tuple[str, float]]) -> str:
    return "<br>".join(f"{name} {ms:.1f}" for name, ms in marks) or "—"


def _breakdown_rows(results: dict[str, Any]) -> list[str]:
    rows = []
    for key, b in results.get("breakdown", {}).items():
        imports = ", ".join(f"{top} {ms:.1f}" for top, ms in b["extra_imports"])
        rows.append(f"| `{key}` | {b['import_ms']:.0f} | {b['extra_imports_ms']:.0f}: {imports} | "
                    f"{b['boto3_import_ms']:.0f} | {b['first_event_ms']:.0f} | {_calls(b['marks'])} |")
    return rows


def markdown(results: dict[str, Any], date: str, machine: str) -> str:
    has_built = any(r["layout"] == "built" for r in results["subjects"])
    lines = [
        "## Cold init (`python -m bench --only cold`)",
        "",
        f"- Date: {date}",
        f"- Machine: {machine}",
        f"- {results['runs']} runs per subject after a discarded warm-up round, rounds alternating "
        "direction; baselines measured in the same rounds.",
        "- Each run: a fresh interpreter with the function's environment from template.yaml "
        "(parameter defaults, ComfyUIBaseUrl at a stand-in with delay 0; AWS_ENDPOINT_URL at a moto "
        "server with the template's buckets, dummy credentials, no other AWS endpoint or config; "
        "baselines get the same) imports the handler and serves its first event from `events/` "
        "(the archiver: `archiver_scheduled.json`, a sweep with nothing new). Prompt-id events ask "
        "about a finished prompt that is already archived. A run counts only when the handler "
        "answered 2xx (the archiver: status ok).",
        "- spawn → answer: from just before the spawn to the first answer (Lambda init + first "
        "invoke); the targets use its median. Whole process adds the interpreter's exit.",
        "- Targets: a function whose policies in template.yaml grant no S3 access must not import "
        "boto3 and stay at or below baseline 1 (`import boto3`); one that uses S3 stays within "
        f"{CLIENT_FACTOR}× baseline 2 (`import boto3; boto3.client('s3')`).",
        "",
        "### Source layout (repository, PYTHONPATH=.:layers/comfy_core, .pyc cached)",
        "",
        *_table(results, "source"),
        "",
    ]
    if results.get("breakdown"):
        lines += [
            "#### Where the cold start of a function that loads boto3 goes",
            "",
            f"Median of {BREAKDOWN_RUNS} separate, untimed runs with `-X importtime`, boto3 imported "
            "right after the handler (as its first event would) and each client creation and AWS call "
            "timed; indicative (instrumentation adds a little). \"Beyond baseline 2\" = self time of "
            "the modules `import boto3; boto3.client('s3')` does not load, by top-level package.",
            "",
            "| function | handler import ms | imports beyond baseline 2 ms: total: largest | boto3 "
            "import ms (after the handler) | first event ms | clients created and AWS calls in it, ms |",
            "|---|---|---|---|---|---|",
            *_breakdown_rows(results),
            "",
        ]
    if has_built:
        lines += [
            "### As built (`.aws-sam/build`, no .pyc written, like Lambda's read-only /var/task and /opt)",
            "",
            *_table(results, "built"),
            "",
            "boto3 itself comes from the environment's site-packages, with its .pyc, as the Lambda "
            "runtime provides it.",
            "",
        ]
    return "\n".join(lines)
