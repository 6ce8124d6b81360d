"""A fleet of ComfyUI servers (issue 13): what routing and the prompt's recorded backend cost.

* Submissions: run_workflow's handler (workflow cached) against 1, 2 and 4 stand-ins. Counted
  per submission: ComfyUI round trips (the fleet's ``request_count``, by kind) and AWS
  operations; timed per submission, as a ratio to the 1-backend run of the same bench run,
  with DynamoDB's calls made and with them answered in-process (alternated request by
  request), so moto's latency on this machine is told apart from the routing's own cost.
  "steady": submissions back to back, as a busy API sees them (the router asks each
  backend's load at most every LOAD_CACHE_SECONDS). "load asked every time": the router's
  load cache expired before each submission, so every one fans out GET /prompt to all
  backends at once; and the same one backend at a time, to show what the parallel fan-out
  saves.
* Status: task_status of a finished, archived prompt with 1, 2 and 4 backends: with the
  prompt's backend recorded (one GetItem, then one request to that backend) and without a
  record (every backend asked).

Each configuration runs in a child process with RunWorkflowFunction's (or
TaskStatusFunction's) environment from template.yaml, COMFYUI_BASE_URL listing the stand-ins;
configurations alternate over rounds so drift on the machine hits them alike. The stand-ins
that take submissions run none of them (long delay): no prompt execution competes for the
CPU; status requests go to another set of stand-ins, whose queues stay empty.
ANNOUNCE_SUBMISSIONS is off: the "Prompt Submitted" event costs the same with any number
of backends (see the warm section).

Counts are asserted without sockets in tests/unit/test_fleet_round_trips.py.

    python -m bench.fleet [--quick]        (or python -m bench --only fleet)
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import DOC, REPO, Target, machine, now, summarise, verdict, write_regions

FULL = {"rounds": 3, "iterations": 40}
QUICK = {"rounds": 1, "iterations": 30}
WARMUP = 10
SIZES = (1, 2, 4)
STANDIN_NAME = "standin-{}"
FROZEN = 3600.0  # stand-in seconds per prompt: submitted prompts wait, none runs

# (label, kind, backends, mode)
SUBMISSIONS = (
    ("1 backend", "submit", 1, "steady"),
    ("2 backends, steady", "submit", 2, "steady"),
    ("4 backends, steady", "submit", 4, "steady"),
    ("2 backends, load asked every time", "submit", 2, "every"),
    ("4 backends, load asked every time", "submit", 4, "every"),
    ("4 backends, load asked every time, one backend at a time", "submit", 4, "every-sequential"),
)
STATUS = (
    ("1 backend", "status", 1, "recorded"),
    ("2 backends, backend recorded", "status", 2, "recorded"),
    ("4 backends, backend recorded", "status", 4, "recorded"),
    ("2 backends, no record", "status", 2, "unrecorded"),
    ("4 backends, no record", "status", 4, "unrecorded"),
)
FUNCTIONS = {"submit": "RunWorkflowFunction", "status": "TaskStatusFunction"}


# -- child ---------------------------------------------------------------------------------------
class Counted:
    """Every ComfyUI request of every backend's client and every AWS operation, with the
    milliseconds each took. While `replay` is on, a DynamoDB operation is answered with the
    last real answer to the same operation, without a request (still counted)."""

    def __init__(self) -> None:
        self.comfy: list[tuple[str, float]] = []
        self.aws: list[tuple[str, float]] = []
        self.replay = False
        self._answers: dict[str, Any] = {}

    def install(self) -> None:
        from botocore.client import BaseClient

        from comfy_core.comfyui.client import ComfyUIClient

        comfy_request, aws_call, counted = ComfyUIClient._request, BaseClient._make_api_call, self

        def request(client: Any, method: str, path: str, **kwargs: Any) -> Any:
            started = time.perf_counter_ns()
            try:
                return comfy_request(client, method, path, **kwargs)
            finally:
                shown = "/history/{id}" if path.startswith("/history/") else path.partition("?")[0]
                counted.comfy.append((f"{method} {shown}", (time.perf_counter_ns() - started) / 1e6))

        def call(client: Any, operation: str, params: dict[str, Any]) -> Any:
            name = f"{client.meta.service_model.service_id} {operation}"
            if counted.replay and name in counted._answers:
                counted.aws.append((name, 0.0))
                return copy.deepcopy(counted._answers[name])
            started = time.perf_counter_ns()
            try:
                answer = aws_call(client, operation, params)
            finally:
                counted.aws.append((name, (time.perf_counter_ns() - started) / 1e6))
            if name.startswith("DynamoDB"):
                counted._answers[name] = copy.deepcopy(answer)
            return answer

        ComfyUIClient._request = request  # type: ignore[method-assign]
        BaseClient._make_api_call = call  # type: ignore[method-assign]

    def clear(self) -> None:
        self.comfy.clear()
        self.aws.clear()


def _event(spec: dict[str, Any]) -> dict[str, Any]:
    if spec["kind"] == "submit":
        event = json.loads((REPO / "events" / "run_workflow.json").read_text(encoding="utf-8"))
        event["pathParameters"] = {"workflow_name": "empty_save"}
        event["path"] = "/api/workflow/empty_save"
        event["body"] = "{}"
        return event
    event = json.loads((REPO / "events" / "task_status.json").read_text(encoding="utf-8"))
    event["pathParameters"] = {"prompt_id": spec["prompt_id"]}
    event["path"] = f"/api/task_status/{spec['prompt_id']}"
    return event


def child(spec: dict[str, Any]) -> dict[str, Any]:
    import importlib

    from bench.cold_child import Context

    module = importlib.import_module(f"functions.{'run_workflow' if spec['kind'] == 'submit' else 'task_status'}.app")
    from comfy_core.fleet import pool
    from comfy_core.fleet.routing import LOAD_CACHE_SECONDS, get_router
    from comfy_core.live import state as prompt_state

    counted = Counted()
    counted.install()
    fleet = pool.get_fleet()
    if spec["mode"].startswith("every"):
        # The load cache expires before every submission: the router's clock jumps ahead.
        skew = {"seconds": 0.0}
        get_router()._clock = lambda: time.monotonic() + skew["seconds"]
    if spec["mode"] == "every-sequential":
        fan_out = pool.Fleet.each
        pool.Fleet.each = lambda self, call, backends=None, workers=1: fan_out(self, call, backends, 1)
    if spec["mode"] == "recorded" and spec["backends"] > 1:
        prompt_state.record_backend(spec["prompt_id"], spec["backend"], "empty_save")
    event, context = _event(spec), Context()

    spent = {"comfy": 0.0, "aws": 0.0}  # ms in calls, requests with real DynamoDB calls only

    def one(replay: bool = False) -> float:
        if spec["mode"].startswith("every"):
            skew["seconds"] += LOAD_CACHE_SECONDS + 1
        counted.replay = replay
        calls = len(counted.comfy), len(counted.aws)
        started = time.perf_counter_ns()
        answer = module.lambda_handler(event, context)
        elapsed = (time.perf_counter_ns() - started) / 1e6
        counted.replay = False
        if not replay:
            spent["comfy"] += sum(ms for _, ms in counted.comfy[calls[0]:])
            spent["aws"] += sum(ms for _, ms in counted.aws[calls[1]:])
        if answer["statusCode"] != 200:
            raise RuntimeError(f"{spec['label']}: {answer['statusCode']} {answer['body'][:300]}")
        return elapsed

    for _ in range(WARMUP):  # imports, connection pools, node definitions, the workflow cache
        one()
    counted.clear()
    spent.update(comfy=0.0, aws=0.0)
    requests_before = fleet.request_count
    # Alternated: real DynamoDB calls, then the same request with them answered in-process.
    timed = [(one(), one(replay=True)) for _ in range(spec["iterations"])]
    report = {"times": [real for real, _ in timed], "replayed": [replayed for _, replayed in timed],
              "fleet_requests": fleet.request_count - requests_before,
              "comfy": list(counted.comfy), "aws": list(counted.aws), "spent": spent}
    answer = json.loads(module.lambda_handler(event, context)["body"])
    report["answer"] = {key: answer.get(key) for key in ("status", "backend", "source")}
    return report


# -- parent --------------------------------------------------------------------------------------
def _environment(stack: Any, kind: str, urls: list[str]) -> dict[str, str]:
    from bench.stack import LAMBDA_VARS

    function_id = FUNCTIONS[kind]
    assert stack.template is not None
    # One URL is a one-server deployment (backend `default`, no routing, no record); more
    # are a fleet named as `COMFYUI_STANDINS=N make dev` names them.
    base = urls[0] if len(urls) == 1 else ",".join(
        f"{STANDIN_NAME.format(index + 1)}={url}" for index, url in enumerate(urls))
    return {
        **stack.child_environment(function_id),
        **LAMBDA_VARS,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(stack.template.function(function_id).memory_size),
        "COMFYUI_BASE_URL": base,
        "COMFYUI_PUBLIC_URL": "",
        "ANNOUNCE_SUBMISSIONS": "false",
    }


def _run_child(stack: Any, spec: dict[str, Any], urls: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        result = Path(tmp) / "result.json"
        done = subprocess.run(
            [sys.executable, "-m", "bench.fleet", "--child", json.dumps(spec), "--result", str(result)],
            cwd=REPO, env=_environment(stack, spec["kind"], urls), capture_output=True, text=True,
            timeout=600, check=False,
        )
        if done.returncode != 0 or not result.exists():
            raise RuntimeError(f"fleet {spec['label']} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return json.loads(result.read_text(encoding="utf-8"))


def _seed(stack: Any, urls: list[str]) -> dict[str, dict[str, str]]:
    """On each stand-in, two finished prompts, archived (one gets a prompt-state record in
    its child, one never does)."""
    from bench.stack import finished, post_prompt, wait_for

    seeded: dict[str, dict[str, str]] = {}
    for url in urls:
        seeded[url] = {mode: post_prompt(url, "empty_save") for mode in ("recorded", "unrecorded")}
        for prompt_id in seeded[url].values():
            wait_for(lambda: finished(url, prompt_id), f"prompt {prompt_id}")
        code = "from comfy_core.archive import sweep; import json; print(json.dumps(sweep.run_sweep()))"
        env = {**stack.child_environment("ArchiverFunction"), "COMFYUI_BASE_URL": url, "COMFYUI_PUBLIC_URL": ""}
        done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=120, check=False)
        summary = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {}
        if summary.get("status") != "ok":
            raise RuntimeError(f"archiving the seeded prompts failed:\n{done.stderr[-3000:]}")
    return seeded


def _aggregate(label: str, kind: str, size: int, mode: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    times = [t for run in runs for t in run["times"]]
    replayed = [t for run in runs for t in run["replayed"]]
    count = len(times) + len(replayed)
    comfy = Counter(name for run in runs for name, _ in run["comfy"])
    aws = Counter(name for run in runs for name, _ in run["aws"])
    comfy_ms = sum(run["spent"]["comfy"] for run in runs) / len(times)
    aws_ms = sum(run["spent"]["aws"] for run in runs) / len(times)
    return {
        "label": label, "kind": kind, "backends": size, "mode": mode, "n": count,
        "time": summarise(times),
        "replayed": summarise(replayed),
        "comfy": {name: n / count for name, n in comfy.items()},
        "aws": {name: n / count for name, n in aws.items()},
        "comfy_per_request": sum(comfy.values()) / count,
        "fleet_requests_per_request": sum(run["fleet_requests"] for run in runs) / count,
        "aws_per_request": sum(aws.values()) / count,
        "comfy_ms": comfy_ms,
        # Median ms of each AWS operation where it was really made (a replayed one took 0).
        "call_ms": {name: statistics.median([ms for run in runs for call, ms in run["aws"] if call == name and ms])
                    for name in aws if any(ms for run in runs for call, ms in run["aws"] if call == name)},
        "aws_ms": aws_ms,
        "answer": runs[-1]["answer"],
    }


def run(rounds: int, iterations: int) -> dict[str, Any]:
    import logging
    import shutil

    from devtools.comfyui_standin import ComfyUIStandIn
    from devtools.dev import LocalStack

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    # Two sets of stand-ins: the stack's answer status requests with idle queues; the
    # others take the submissions, whose prompts pile up in their queues (none runs). A
    # status lookup without a record reads every backend's queue, so the two must not share.
    root = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    sinks = [ComfyUIStandIn(root / str(index), delay=FROZEN) for index in range(max(SIZES))]
    try:
        for sink in sinks:
            sink.start()
        with LocalStack(port=0, standins=max(SIZES), standin_delay=0.0, schedule_every=0,
                        function_logs=False) as stack:
            status_urls = [url for _, url in stack.backends]
            seeded = _seed(stack, status_urls)
            collected = _rounds(stack, rounds, iterations, seeded, status_urls, [sink.base_url for sink in sinks])
    finally:
        for sink in sinks:
            sink.stop()
        shutil.rmtree(root, ignore_errors=True)
    configs = SUBMISSIONS + STATUS
    rows = [_aggregate(label, kind, size, mode, collected[label + kind]) for label, kind, size, mode in configs]
    for kind in ("submit", "status"):
        base = next(row for row in rows if row["kind"] == kind and row["backends"] == 1)
        for row in rows:
            if row["kind"] == kind:
                row["ratio"] = row["time"]["median"] / base["time"]["median"]
                row["ratio_replayed"] = row["replayed"]["median"] / base["replayed"]["median"]
    return {"rounds": rounds, "iterations": iterations, "rows": rows}


def _rounds(stack: Any, rounds: int, iterations: int, seeded: dict[str, dict[str, str]],
            status_urls: list[str], submit_urls: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Each configuration once per round, in a rotated order: no configuration always runs
    first or last, and drift on the machine reaches all of them alike."""
    configs = SUBMISSIONS + STATUS
    collected: dict[str, list[dict[str, Any]]] = {label + kind: [] for label, kind, _, _ in configs}
    for number in range(rounds):
        order = configs[number % len(configs):] + configs[:number % len(configs)]
        for label, kind, size, mode in order:
            urls = status_urls if kind == "status" else submit_urls
            spec = {"label": label, "kind": kind, "backends": size, "mode": mode, "iterations": iterations,
                    # The status prompt is on the fleet's last backend.
                    "prompt_id": seeded[urls[size - 1]][mode] if kind == "status" else None,
                    "backend": STANDIN_NAME.format(size)}
            collected[label + kind].append(_run_child(stack, spec, urls[:size]))
            print(f"  fleet {kind} {label}: round {number + 1}", file=sys.stderr)
    return collected


def run_all(quick: bool = False, rounds: int | None = None, iterations: int | None = None) -> dict[str, Any]:
    preset = QUICK if quick else FULL
    results = run(rounds or preset["rounds"], iterations or preset["iterations"])
    results["quick"] = quick
    return results


# -- report --------------------------------------------------------------------------------------
def _row(results: dict[str, Any], kind: str, label: str) -> dict[str, Any]:
    return next(row for row in results["rows"] if row["kind"] == kind and row["label"] == label)


def targets(results: dict[str, Any]) -> list[Target]:
    one = _row(results, "submit", "1 backend")
    found = [Target("Fleet", "1 backend: one ComfyUI request per submission (POST /prompt), no DynamoDB",
                    _calls(one), one["comfy"] == {"POST /prompt": 1.0} and not _dynamodb(one))]
    for size in (2, 4):
        row = _row(results, "status", f"{size} backends, backend recorded")
        met = row["comfy"] == {"GET /history/{id}": 1.0} and _dynamodb(row) == {"DynamoDB GetItem": 1.0}
        found.append(Target("Fleet", f"task_status, {size} backends, backend recorded: 1 GetItem + 1 ComfyUI "
                            "request", _calls(row), met))
    return found


def _dynamodb(row: dict[str, Any]) -> dict[str, float]:
    return {name: n for name, n in row["aws"].items() if name.startswith("DynamoDB")}


def _per(counts: dict[str, float]) -> str:
    return "<br>".join(f"{name} ×{n:.2f}".replace(".00", "") for name, n in counts.items()) or "—"


def _calls(row: dict[str, Any]) -> str:
    return ", ".join(f"{name} ×{n:.2f}".replace(".00", "") for name, n in {**row["comfy"], **row["aws"]}.items())


def _table(results: dict[str, Any], kind: str) -> list[str]:
    lines = ["| configuration | answer | ComfyUI requests per request (fleet's request_count) | which, per request "
             "| AWS operations per request | which, per request | ms median / p90 | ratio to 1 backend "
             "| DynamoDB answered in-process: ms median, ratio | ms in ComfyUI / AWS calls (real requests; mean, summed) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        if row["kind"] != kind:
            continue
        answer = " ".join(str(value) for value in row["answer"].values() if value)
        lines.append(
            f"| {row['label']} | {answer} | {row['comfy_per_request']:.2f} ({row['fleet_requests_per_request']:.2f}) "
            f"| {_per(row['comfy'])} | {row['aws_per_request']:.2f} | {_per(row['aws'])} "
            f"| {row['time']['median']:.2f} / {row['time']['p90']:.2f} | **{row['ratio']:.2f}×** "
            f"| {row['replayed']['median']:.2f}, **{row['ratio_replayed']:.2f}×** "
            f"| {row['comfy_ms']:.2f} / {row['aws_ms']:.2f} |")
    return lines


def markdown(results: dict[str, Any], date: str | None = None, machine_text: str | None = None) -> str:
    date, machine_text = date or now(), machine_text or machine()
    per_config = results["rounds"] * results["iterations"]
    return "\n".join([
        "## Fleet: routing and lookups (`python -m bench --only fleet`)",
        "",
        f"- Date: {date}",
        f"- Machine: {machine_text}",
        "- Setup: the local stack (moto with the template's buckets and tables) and two sets of "
        f"{max(SIZES)} ComfyUI stand-ins in the bench process, one taking the submissions (prompts pile "
        "up, none runs), one with idle queues answering the status requests; each configuration in a "
        "child process with the function's environment from template.yaml and COMFYUI_BASE_URL "
        "listing the first 1, 2 or 4 stand-ins of its set (`standin-1=...`; one is the unnamed "
        f"`default`). {results['rounds']} round(s) alternating the "
        f"configurations, {results['iterations']} timed pairs each after {WARMUP} warm-up requests: "
        f"{per_config} pairs per configuration. ANNOUNCE_SUBMISSIONS is off (its PutEvents is the same for any fleet).",
        "- A pair is the request with its DynamoDB calls made (to moto), then the same request with "
        "each DynamoDB call answered in-process by the last real answer to it. moto and the "
        "stand-ins share the bench process, so a moto call here costs several milliseconds and "
        "also delays the ComfyUI call after it; the in-process column is what routing and the "
        "lookup cost apart from DynamoDB's latency, which in AWS is a few ms per call in-region.",
        "- Counts are per request, over every timed request: ComfyUI requests by the fleet's clients "
        "(the fleet's own `request_count` in brackets), AWS operations through botocore. Ratios are "
        "medians against the 1-backend row of the same run. ComfyUI and AWS milliseconds are summed "
        "over the calls of the requests with real DynamoDB calls: calls of a parallel fan-out overlap.",
        "- Counts asserted without sockets: `tests/unit/test_fleet_round_trips.py`.",
        "- Reproduce: `python -m bench.fleet` (`--quick`: one round of 30).",
        "",
        "### Submissions: run_workflow (empty_save, workflow cached)",
        "",
        "\"steady\": back to back, the router's load cache (2 s) mostly warm. \"load asked every time\": "
        "the cache expired before each submission, so each one asks every backend's GET /prompt, "
        "in parallel unless marked. Node definitions (GET /object_info) stay cached (5 minutes).",
        "",
        *_table(results, "submit"),
        "",
        "### Status: task_status of a finished, archived prompt",
        "",
        "The prompt is on the fleet's last backend. Recorded: its backend is in the prompt-state "
        "table (as every prompt the fleet routes is); no record: every backend is asked (its queue, "
        "then its history) until one knows the prompt.",
        "",
        *_table(results, "status"),
        "",
        *_reading(results),
        *[f"- {t.name}: {t.figure} — {verdict(t.met)}" for t in targets(results)],
    ])


def _reading(results: dict[str, Any]) -> list[str]:
    """What the tables say, from this run's figures."""
    def row(kind: str, label: str) -> dict[str, Any]:
        return _row(results, kind, label)

    def ms(value: dict[str, Any], key: str = "replayed") -> str:
        return f"{value[key]['median']:.2f} ms"

    one, steady = row("submit", "1 backend"), [row("submit", f"{n} backends, steady") for n in (2, 4)]
    every, serial = row("submit", "4 backends, load asked every time"), \
        row("submit", "4 backends, load asked every time, one backend at a time")
    update = _mean_ms(results, "submit", "DynamoDB UpdateItem")
    return [
        f"- Steady state, a fleet submission makes the same ComfyUI request as one server; it adds one "
        f"DynamoDB UpdateItem (the prompt's backend, {update:.1f} ms each on moto here) and, without "
        f"DynamoDB's latency, {ms(steady[0])} and {ms(steady[1])} with 2 and 4 backends against "
        f"{ms(one)} ({steady[0]['ratio_replayed']:.2f}× and {steady[1]['ratio_replayed']:.2f}×).",
        f"- When the load cache (2 s) has expired, a submission first asks every backend's GET /prompt: "
        f"with 4 backends asked in parallel {ms(every)}, one at a time {ms(serial)}. The stand-ins "
        "answer on localhost in about a millisecond; the parallel fan-out matters where each round "
        "trip costs more.",
        "- task_status of a prompt whose backend is recorded: one GetItem more than one server, and the "
        "same single ComfyUI request; without a record every backend is asked (2 requests each) and "
        "the one that has the prompt once more.",
    ]


def _mean_ms(results: dict[str, Any], kind: str, call: str) -> float:
    """Mean ms of one AWS operation over the rows of `kind` that make it (real calls only)."""
    values = [row["call_ms"][call] for row in results["rows"] if row["kind"] == kind and call in row["call_ms"]]
    return sum(values) / len(values) if values else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK['rounds']} round of {QUICK['iterations']}")
    parser.add_argument("--rounds", type=int, help=f"default {FULL['rounds']}")
    parser.add_argument("--iterations", type=int, help=f"timed requests per child, default {FULL['iterations']}")
    parser.add_argument("--output", type=Path, default=DOC)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.result.write_text(json.dumps(child(json.loads(args.child))), encoding="utf-8")
        return 0
    results = run_all(args.quick, args.rounds, args.iterations)
    write_regions(args.output, {"fleet": markdown(results)})
    for target in targets(results):
        print(f"{'meets ' if target.met else 'MISSES'}  {target.group}: {target.name}: {target.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
