"""Live watcher benchmark: from ComfyUI finishing a prompt to (a) its files in S3 and (b)
its `ComfyUI Prompt Completed` event, with the watcher and with the schedule alone; and what
the watcher costs a month at the template's settings.

Everything on 127.0.0.1: a local stack (``devtools.dev.LocalStack``: moto, the ComfyUI
stand-in, the API) in this process. With the watcher, WatcherFunction runs in a child
process as `make dev` runs it, and the archiver's schedule is off; the baseline, in the same
run, is the schedule alone (no watcher) at a compressed rate, SCHEDULE_SECONDS instead of
the template's 60 s, so it takes minutes, not an hour; its figures at 60 s are that period
scaled (a finished prompt waits for the next tick: uniform over the period).

Per prompt: submitted through the API after a random pause of up to SCHEDULE_SECONDS (so
it finishes at a random point of the schedule's period, in both modes); "finished" is ComfyUI's own execution_success timestamp in
its history; S3 and the event are seen by a poller (a LIST and an SQS receive every
POLL_SECONDS) on the same clock, so each figure is late by at most POLL_SECONDS.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from bench.common import DOC, Target, machine, now, percentile, verdict, write_regions
from devtools.dev import WATCHER_FUNCTION, LocalStack

SCHEDULE_SECONDS = 5.0
TEMPLATE_SCHEDULE_SECONDS = 60.0
POLL_SECONDS = 0.02
TARGET_P95_SECONDS = 2.0
FULL = {"prompts": 24}
QUICK = {"prompts": 20}
# Prices (us-east-1, arm64 Lambda, DynamoDB on demand) used for the monthly cost.
LAMBDA_GB_SECOND = 0.0000133334
LAMBDA_REQUEST = 0.20 / 1_000_000
DYNAMODB_WRITE = 0.625 / 1_000_000
MONTH_SECONDS = 30 * 86_400


class Seen:
    """First time each prompt's manifest and Completed event were seen."""

    def __init__(self, stack: LocalStack, events_url: str) -> None:
        self.stack, self.events_url = stack, events_url
        self.manifest: dict[str, float] = {}
        self.event: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> "Seen":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        s3, sqs = self.stack.client("s3"), self.stack.client("sqs")
        bucket = self.stack.buckets["ImageBucket"]
        while not self._stop.wait(POLL_SECONDS):
            stamp = time.time()
            for item in s3.list_objects_v2(Bucket=bucket, Prefix="images/").get("Contents") or []:
                if item["Key"].endswith("/manifest.json"):
                    self.manifest.setdefault(item["Key"].split("/")[1], stamp)
            for message in sqs.receive_message(QueueUrl=self.events_url, MaxNumberOfMessages=10).get("Messages") or []:
                detail = json.loads(message["Body"])["detail"]
                self.event.setdefault(detail["prompt_id"], stamp)
                sqs.delete_message(QueueUrl=self.events_url, ReceiptHandle=message["ReceiptHandle"])


def _finished_at(stack: LocalStack, prompt_id: str) -> float | None:
    entry = requests.get(f"{stack.standin.base_url}/history/{prompt_id}", timeout=5).json().get(prompt_id)
    if not entry:
        return None
    for event, data in entry["status"]["messages"]:
        if event == "execution_success":
            return data["timestamp"] / 1000.0
    return None


def _capture(stack: LocalStack) -> str:
    sqs, bus = stack.client("sqs"), stack.client("events")
    url = sqs.create_queue(QueueName=f"bench-completed-{random.getrandbits(32)}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    name = f"bench-completed-{random.getrandbits(32)}"
    bus.put_rule(Name=name, EventPattern=json.dumps({"detail-type": ["ComfyUI Prompt Completed"]}))
    bus.put_targets(Rule=name, Targets=[{"Id": "queue", "Arn": arn}])
    return url


def measure(watch: bool, prompts: int) -> dict[str, Any]:
    """Latencies (seconds) of `prompts` prompts, one after another."""
    log = tempfile.TemporaryFile()
    with LocalStack(port=0, standin_delay=0.3, watch=watch, watcher_log=log,
                    schedule_every=0 if watch else SCHEDULE_SECONDS) as stack:
        if watch:
            client_id = stack.template.function(WATCHER_FUNCTION).environment["WATCHER_CLIENT_ID"]
            deadline = time.monotonic() + 30
            while not stack.standin.ws.connected(client_id):
                if time.monotonic() > deadline:
                    raise RuntimeError("the watcher did not connect")
                time.sleep(0.05)
        files: list[float] = []
        events: list[float] = []
        with Seen(stack, _capture(stack)) as seen:
            for n in range(prompts):
                time.sleep(random.uniform(0.0, SCHEDULE_SECONDS))  # a random phase of the schedule
                answer = requests.post(f"{stack.api_url}/api/workflow/text_label",
                                       json={"prompt": f"bench {watch} {n} {random.random()}"}, timeout=30)
                prompt_id = answer.json()["prompt_id"]
                deadline = time.monotonic() + 3 * SCHEDULE_SECONDS + 30
                while (prompt_id not in seen.manifest or prompt_id not in seen.event) and time.monotonic() < deadline:
                    time.sleep(POLL_SECONDS)
                finished = _finished_at(stack, prompt_id)
                if finished is None or prompt_id not in seen.event:
                    raise RuntimeError(f"prompt {prompt_id} was not archived and announced")
                files.append(max(0.0, seen.manifest[prompt_id] - finished))
                events.append(max(0.0, seen.event[prompt_id] - finished))
    log.close()
    return {"files": files, "events": events}


def _stats(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": statistics.median(values), "p95": percentile(values, 95),
            "max": max(values)}


def cost() -> dict[str, Any]:
    """The watcher's month at the template's settings (256 MB, 900 s, a tick a minute)."""
    from comfy_core.live.lease import RENEW_SECONDS
    from comfy_core.live.watcher import HANDOVER_GRACE, SHUTDOWN_MARGIN, handover_time
    memory_gb, timeout, tick = 0.25, 900.0, 60.0
    held = handover_time(0.0, timeout - 1.0, tick)  # seconds one holder runs (845 s)
    holders = MONTH_SECONDS / (held - HANDOVER_GRACE)
    ticks = MONTH_SECONDS / tick
    short_runs = ticks - holders
    # Every other tick's run exits at once (~0.2 s); the successor waits ~HANDOVER_GRACE.
    gb_seconds = memory_gb * (MONTH_SECONDS + short_runs * 0.2 + holders * HANDOVER_GRACE)
    lease_writes = MONTH_SECONDS / RENEW_SECONDS + holders * 2 + short_runs
    return {
        "held_seconds": held, "ticks": ticks, "gb_seconds": gb_seconds, "requests": ticks,
        "lambda_usd": gb_seconds * LAMBDA_GB_SECOND + ticks * LAMBDA_REQUEST,
        "lease_writes": lease_writes, "dynamodb_usd": lease_writes * DYNAMODB_WRITE,
        "margin": SHUTDOWN_MARGIN,
    }


def run_all(quick: bool = False, prompts: int | None = None) -> dict[str, Any]:
    count = prompts or (QUICK if quick else FULL)["prompts"]
    watcher = measure(True, count)
    schedule = measure(False, count)
    return {
        "prompts": count, "quick": quick,
        "watcher": {name: _stats(values) for name, values in watcher.items()},
        "schedule": {name: _stats(values) for name, values in schedule.items()},
        "cost": cost(),
    }


def targets(results: dict[str, Any]) -> list[Target]:
    w = results["watcher"]
    return [
        Target("Live watcher", f"files in S3 p95 ≤ {TARGET_P95_SECONDS:g} s after ComfyUI finished",
               f"{w['files']['p95']:.2f} s", w["files"]["p95"] <= TARGET_P95_SECONDS),
        Target("Live watcher", f"Completed event p95 ≤ {TARGET_P95_SECONDS:g} s after ComfyUI finished",
               f"{w['events']['p95']:.2f} s", w["events"]["p95"] <= TARGET_P95_SECONDS),
    ]


def markdown(results: dict[str, Any], date: str | None = None, machine_text: str | None = None) -> str:
    date, machine_text = date or now(), machine_text or machine()
    w, s, c = results["watcher"], results["schedule"], results["cost"]
    scale = TEMPLATE_SCHEDULE_SECONDS / SCHEDULE_SECONDS

    def row(name: str, stats: dict[str, float], scaled: bool = False) -> str:
        extra = (f" | ≈ {stats['p50'] * scale:.0f} s / {stats['p95'] * scale:.0f} s" if scaled else " | —")
        return f"| {name} | {stats['n']} | {stats['p50']:.2f} | {stats['p95']:.2f} | {stats['max']:.2f}{extra} |"

    met = targets(results)
    lines = [
        "## Live watcher (`python -m bench --only watcher`)",
        "",
        f"- Run: {date}; {machine_text}.",
        f"- Setup: {results['prompts']} prompts (text_label, 0.3 s each in the stand-in) through the local "
        f"API, one after another, each after a random pause (a random phase of the schedule); seconds from ComfyUI's execution_success to the "
        f"manifest in S3 and to the Completed event in a queue (seen by a {POLL_SECONDS * 1000:.0f} ms poller). "
        f"Watcher: WatcherFunction in its own process, archiver schedule off. Baseline, same run: the "
        f"schedule alone every {SCHEDULE_SECONDS:g} s (the template's is {TEMPLATE_SCHEDULE_SECONDS:g} s; "
        "the last column scales it).",
        "- Reproduce: `python -m bench.watcher` (or `make bench`).",
        "",
        "| path | prompts | p50 s | p95 s | max s | at the template's 60 s schedule (p50 / p95) |",
        "|---|---|---|---|---|---|",
        row("watcher → files in S3", w["files"]),
        row("watcher → Completed event", w["events"]),
        row(f"schedule alone ({SCHEDULE_SECONDS:g} s) → files in S3", s["files"], scaled=True),
        row(f"schedule alone ({SCHEDULE_SECONDS:g} s) → Completed event", s["events"], scaled=True),
        "",
        f"- Ratio, same run: the watcher's p95 to files is {w['files']['p95'] / s['files']['p95']:.2f}× the "
        f"{SCHEDULE_SECONDS:g} s schedule's ({w['files']['p95'] / (s['files']['p95'] * scale):.3f}× at 60 s).",
        *[f"- {t.name}: {t.figure} — {verdict(t.met)}" for t in met],
        "",
        "### What the watcher costs a month (template settings: 256 MB, arm64, Timeout 900 s, a tick a minute)",
        "",
        "| item | per month | USD |",
        "|---|---|---|",
        f"| Lambda compute: one holder all month ({c['held_seconds']:.0f} s each, handed over on a tick), "
        f"handover overlaps, other ticks' runs exiting at once | {c['gb_seconds']:,.0f} GB-s | "
        f"{c['gb_seconds'] * LAMBDA_GB_SECOND:.2f} |",
        f"| Lambda requests (one per tick) | {c['requests']:,.0f} | {c['requests'] * LAMBDA_REQUEST:.3f} |",
        f"| DynamoDB lease writes (renewal every 20 s, take, release) | {c['lease_writes']:,.0f} | "
        f"{c['dynamodb_usd']:.3f} |",
        f"| **total** (before free tier; progress writes add at most one per running prompt per second) | | "
        f"**{c['lambda_usd'] + c['dynamodb_usd']:.2f}** |",
        "",
        "Prices: Lambda arm64 $0.0000133334 per GB-s and $0.20 per million requests, DynamoDB on "
        "demand $0.625 per million writes (us-east-1). LiveWatcher=false removes all of it.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.watcher", description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, help=f"default {FULL['prompts']}")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", type=Path, default=DOC)
    args = parser.parse_args(argv)
    results = run_all(args.quick, args.prompts)
    write_regions(args.output, {"watcher": markdown(results)})
    for target in targets(results):
        print(f"{'meets ' if target.met else 'MISSES'}  {target.group}: {target.name}: {target.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
