"""Input images benchmark: what run_workflow adds to a 1 MB inline image, and the memory of
reading a 50 MB upload from S3 into ComfyUI.

Everything runs on 127.0.0.1: a local stack (``devtools.dev.LocalStack``: the moto server with
the template's buckets and workflows, and a ComfyUI stand-in) lives in this process; each
measurement runs in a child process with RunWorkflowFunction's environment from
template.yaml, so its time and memory are its own (moto's buffers and the stand-in's are not).

* overhead: ``lambda_handler`` of ``POST /api/workflow/img2img_invert`` with a 1 MB PNG inline
  (``{"image": {"base64": ...}}``) against the raw calls a client of ComfyUI makes itself:
  ``POST /upload/image`` (the same bytes, the same name) and ``POST /prompt`` (the workflow
  with that name), one reused ``requests.Session``. Pairs alternated after a warm-up; the
  ratio of medians (target ≤ 2×: the handler also decodes, hashes and checks the bytes, reads
  the workflow and sends the "Prompt Submitted" event) and the paired difference. The
  stand-in holds a prompt that never ends first (a long delay): every timed prompt stays
  pending, so the stand-in decodes no picture while a pair is timed.
* memory: ``comfy_core.workflows.inputs.apply`` of ``{"upload_id"}`` naming a PNG in the moto server,
  streamed into the stand-in's ``POST /upload/image``: peak RSS growth and tracemalloc peak of
  the child, for a 5 MB and a 50 MB file (target: under 8 MiB of RSS growth on 50 MB, and
  flat: the two within 2 MiB of each other).

Results go to the inputs section of docs/benchmarks.md. ``--quick`` runs fewer pairs.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import logging
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import DOC, MIB, REPO, Target, machine, now, summarise, verdict, write_regions

FUNCTION = "RunWorkflowFunction"
WORKFLOW = "img2img_invert"
IMAGE_BUCKET = "ImageBucket"  # the template's logical id
INLINE_BYTES = 1_000_000  # "1 MB": a noisy PNG of about this size, under the 1 MiB spool
MEMORY_SIZES = (5, 50)  # MB of PNG per memory run
RATIO_TARGET = 2.0
MEMORY_TARGET_MIB = 8.0
FLAT_TARGET_MIB = 2.0
# The default MAX_BODY_BYTES (1 MiB) refuses a 1 MB image as base64 (1.33 MB of body): the
# overhead child raises it, as a deployment taking such inline images must (Lambda takes 6 MB).
INLINE_BODY_LIMIT = 2 * MIB
STANDIN_DELAY = 3600.0  # accept prompts, run none after the first
FULL = {"pairs": 100}
QUICK = {"pairs": 30}


# -- pictures ---------------------------------------------------------------------------------
def noisy_png(size: int, seed: int) -> bytes:
    """A valid RGB PNG of random pixels (incompressible) of about `size` bytes."""
    from devtools.comfyui_standin import encode_pixels

    width = 1024 if size > 4 * MIB else 512
    height = max(1, size // (3 * width + 1))
    return encode_pixels(width, height, "RGB", random.Random(seed).randbytes(width * height * 3))


def workflow_graph() -> dict[str, Any]:
    return json.loads((REPO / "workflows" / f"{WORKFLOW}.json").read_text(encoding="utf-8"))


# -- child: overhead ----------------------------------------------------------------------------
def _timed(call: Any) -> float:
    started = time.perf_counter_ns()
    call()
    return (time.perf_counter_ns() - started) / 1e6


def overhead_child(pairs: int) -> dict[str, Any]:
    import importlib
    import os

    import requests

    from bench.cold_child import Context

    data = noisy_png(INLINE_BYTES, seed=1)
    name = f"{hashlib.sha256(data).hexdigest()[:40]}.png"  # the name comfy_core would give it
    event = json.loads((REPO / "events" / "run_workflow.json").read_text(encoding="utf-8"))
    event.update(path=f"/api/workflow/{WORKFLOW}", pathParameters={"workflow_name": WORKFLOW},
                 body=json.dumps({"image": {"base64": base64.b64encode(data).decode()}}))
    module = importlib.import_module("functions.run_workflow.app")
    context = Context()
    base = os.environ["COMFYUI_BASE_URL"].rstrip("/")
    session = requests.Session()
    graph = workflow_graph()

    def handler() -> None:
        answer = module.lambda_handler(event, context)
        if answer["statusCode"] != 200:
            raise RuntimeError(f"run_workflow answered {answer['statusCode']}: {answer['body'][:500]}")

    raw_upload_ms: list[float] = []

    def raw() -> None:
        started = time.perf_counter_ns()
        uploaded = session.post(f"{base}/upload/image", files={"image": (name, data, "image/png")},
                                data={"type": "input"}, timeout=30)
        uploaded.raise_for_status()
        raw_upload_ms.append((time.perf_counter_ns() - started) / 1e6)
        prompt = copy.deepcopy(graph)
        prompt["1"]["inputs"]["image"] = uploaded.json()["name"]
        submitted = session.post(f"{base}/prompt", json={"prompt": prompt, "prompt_id": str(uuid.uuid4())},
                                 timeout=30)
        submitted.raise_for_status()

    for _ in range(max(5, pairs // 10)):  # imports, pools, the workflow cache, the file in ComfyUI
        handler()
        raw()
    handler_ms, raw_ms, overhead_ms = [], [], []
    for number in range(pairs):
        if number % 2 == 0:
            h, r = _timed(handler), _timed(raw)
        else:
            r, h = _timed(raw), _timed(handler)
        handler_ms.append(h)
        raw_ms.append(r)
        overhead_ms.append(h - r)
    handler_s, raw_s = summarise(handler_ms), summarise(raw_ms)
    raw_upload_ms.clear()
    return {"pairs": pairs, "image_bytes": len(data), "body_bytes": len(event["body"]),
            "handler": handler_s, "raw": raw_s, "overhead": summarise(overhead_ms),
            "ratio": handler_s["median"] / raw_s["median"],
            "parts": _parts(handler, raw, raw_upload_ms)}


def _parts(handler: Any, raw: Any, raw_upload_ms: list[float], requests_: int = 15) -> dict[str, Any]:
    """Where a handler request's time goes (medians over a few more requests, timed apart
    from the pairs): reading the inline image, the streamed upload, the AWS round trips."""
    import statistics

    from bench.handlers import Counters
    from comfy_core.workflows import inputs
    from comfy_core.comfyui.client import ComfyUIClient

    spent: dict[str, list[float]] = {"prepare": [], "upload": []}

    def timing(key: str, function: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter_ns()
            try:
                return function(*args, **kwargs)
            finally:
                spent[key].append((time.perf_counter_ns() - started) / 1e6)
        return timed

    prepare, upload = inputs.prepare, ComfyUIClient.upload_image
    inputs.prepare = timing("prepare", prepare)  # type: ignore[assignment]
    ComfyUIClient.upload_image = timing("upload", upload)  # type: ignore[method-assign]
    aws_ms, aws_calls = [], []
    try:
        for _ in range(requests_):
            with Counters() as counted:
                handler()
            aws_ms.append(sum(counted.aws_ms))
            aws_calls = counted.aws
            raw()
    finally:
        inputs.prepare = prepare  # type: ignore[assignment]
        ComfyUIClient.upload_image = upload  # type: ignore[method-assign]
    return {"requests": requests_, "prepare_ms": statistics.median(spent["prepare"]),
            "upload_ms": statistics.median(spent["upload"]),
            "raw_upload_ms": statistics.median(raw_upload_ms),
            "aws_ms": statistics.median(aws_ms), "aws_calls": aws_calls}


# -- child: memory ----------------------------------------------------------------------------
def memory_child(upload_id: str, warmup_id: str) -> dict[str, Any]:
    import gc
    import tracemalloc

    from comfy_core.workflows import inputs
    from comfy_core.comfyui.client import get_client
    from comfy_core.config import get_settings
    from devtools.archive_probe import _reset_peak_rss, _rss_now, _rss_peak

    settings, client = get_settings(), get_client()

    def apply(ref: str) -> str:
        graph = workflow_graph()
        _, targets = inputs.take_targets(graph, {"image": {"upload_id": ref}})
        return inputs.apply(client, graph, targets, settings, allow_s3=False)["1"]["inputs"]["image"]

    apply(warmup_id)  # imports, the S3 client, ComfyUI's connection
    gc.collect()
    precise = _reset_peak_rss()
    before = _rss_now()
    tracemalloc.start()
    started = time.perf_counter()
    name = apply(upload_id)
    seconds = time.perf_counter() - started
    traced = tracemalloc.get_traced_memory()[1]
    return {"name": name, "seconds": seconds, "rss_growth": _rss_peak() - before, "peak_reset": precise,
            "tracemalloc_peak": traced}


# -- parent -----------------------------------------------------------------------------------
def _child(stack: Any, arguments: list[str], **extra_env: str) -> dict[str, Any]:
    from bench.stack import LAMBDA_VARS

    with tempfile.TemporaryDirectory(prefix="bench-inputs-") as tmp:
        result = Path(tmp) / "result.json"
        env = {**stack.child_environment(FUNCTION), **LAMBDA_VARS, "POWERTOOLS_LOG_LEVEL": "ERROR",
               "TMPDIR": tmp, **extra_env}
        done = subprocess.run([sys.executable, "-m", "bench.inputs", *arguments, "--result", str(result)],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=1800, check=False)
        if done.returncode != 0 or not result.exists():
            raise RuntimeError(
                f"bench.inputs {arguments[:2]} failed ({done.returncode}):\n{done.stderr[-4000:]}")
        return json.loads(result.read_text(encoding="utf-8"))


def _put_upload(stack: Any, data: bytes) -> str:
    """An object where POST /api/uploads would have put it; its upload id."""
    upload_id = uuid.uuid4().hex
    env = stack.child_environment(FUNCTION)
    key = f"{env['INPUT_PREFIX']}{upload_id}"
    stack.client("s3").put_object(Bucket=env["IMAGE_BUCKET"], Key=key, Body=data)
    return upload_id


def _hold_the_queue(base_url: str) -> None:
    """A prompt that waits (the stand-in's delay) before its first node: every prompt after it
    stays pending, so the stand-in decodes no picture while pairs are timed."""
    import requests

    from bench.stack import _running, wait_for

    blocker = {"1": {"class_type": "PreviewAny", "inputs": {"source": "hold"}}}
    answer = requests.post(f"{base_url}/prompt", json={"prompt": blocker}, timeout=10)
    answer.raise_for_status()
    prompt_id = answer.json()["prompt_id"]
    wait_for(lambda: _running(base_url, prompt_id), "the blocking prompt")


def run(pairs: int) -> dict[str, Any]:
    from devtools.comfyui_standin import ComfyUIStandIn
    from devtools.dev import LocalStack

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    results: dict[str, Any] = {"pairs": pairs, "memory": []}
    with tempfile.TemporaryDirectory(prefix="bench-inputs-comfy-") as root:
        standin = ComfyUIStandIn(root, port=0, delay=STANDIN_DELAY).start()
        try:
            _hold_the_queue(standin.base_url)
            with LocalStack(port=0, comfyui_base_url=standin.base_url, schedule_every=0) as stack:
                results["overhead"] = _child(stack, ["--child", "overhead", "--pairs", str(pairs)],
                                             MAX_BODY_BYTES=str(INLINE_BODY_LIMIT))
                print(f"  inline 1 MB: ratio {results['overhead']['ratio']:.2f}×", file=sys.stderr)
                warmup = _put_upload(stack, noisy_png(64 * 1024, seed=2))
                for megabytes in MEMORY_SIZES:
                    data = noisy_png(megabytes * 1_000_000, seed=megabytes)
                    upload_id = _put_upload(stack, data)
                    del data
                    report = _child(stack, ["--child", "memory", "--upload-id", upload_id,
                                            "--warmup-id", warmup])
                    report["bytes"] = (stack.client("s3").head_object(
                        Bucket=stack.child_environment(FUNCTION)["IMAGE_BUCKET"],
                        Key=f"inputs/{upload_id}")["ContentLength"])
                    results["memory"].append(report)
                    growth = report["rss_growth"] / MIB
                    print(f"  memory {megabytes} MB: +{growth:.1f} MiB RSS", file=sys.stderr)
                stack.empty_bucket(IMAGE_BUCKET)
        finally:
            standin.stop()
    return results


def _largest(results: dict[str, Any]) -> dict[str, Any]:
    return max(results["memory"], key=lambda m: m["bytes"])


def _flatness(results: dict[str, Any]) -> float:
    growths = [m["rss_growth"] for m in results["memory"]]
    return (max(growths) - min(growths)) / MIB


def targets(results: dict[str, Any]) -> list[Target]:
    ratio, big = results["overhead"]["ratio"], _largest(results)
    growth = big["rss_growth"] / MIB
    return [
        Target("Input images",
               f"run_workflow with 1 MB inline ≤ {RATIO_TARGET:g}× raw /upload/image + /prompt",
               f"{ratio:.2f}×", ratio <= RATIO_TARGET),
        Target("Input images", f"memory on a {big['bytes'] / 1e6:.0f} MB upload < {MEMORY_TARGET_MIB:g} MiB",
               f"{growth:.1f} MiB", growth < MEMORY_TARGET_MIB),
        Target("Input images", f"memory flat: 5 MB and 50 MB within {FLAT_TARGET_MIB:g} MiB",
               f"{_flatness(results):.1f} MiB apart", _flatness(results) <= FLAT_TARGET_MIB),
    ]


def markdown(results: dict[str, Any], date: str | None = None, machine_text: str | None = None) -> str:
    date, machine_text = date or now(), machine_text or machine()
    o = results["overhead"]
    h, r, d, p = o["handler"], o["raw"], o["overhead"], o["parts"]
    big = _largest(results)
    quick = " (quick mode)" if results.get("quick") else ""

    def timing_row(name: str, t: dict[str, float]) -> str:
        return f"| {name} | {t['median']:.1f} | {t['p90']:.1f} | {t['min']:.1f} – {t['max']:.1f} |"

    def memory_row(m: dict[str, Any]) -> str:
        return (f"| {m['bytes'] / 1e6:.1f} | {m['rss_growth'] / MIB:.1f} | {m['tracemalloc_peak'] / MIB:.2f} "
                f"| {m['bytes'] / MIB / m['seconds']:.0f} |")

    return "\n".join([
        f"## Input images{quick} (`python -m bench --only inputs`)",
        "",
        f"- Date: {date}",
        f"- Machine: {machine_text}",
        "- Setup: the local stack (moto server with the template's buckets and workflows, a ComfyUI "
        "stand-in) on 127.0.0.1 in the bench process; each measurement in a child process with "
        "RunWorkflowFunction's environment from template.yaml.",
        "- Reproduce: `python -m bench.inputs" + (" --quick" if results.get("quick") else "") + "`.",
        "",
        f"### run_workflow with a 1 MB inline image: {o['pairs']} pairs, alternated",
        "",
        f"The handler gets `POST /api/workflow/{WORKFLOW}` with a {o['image_bytes'] / 1e6:.2f} MB PNG as "
        f"base64 ({o['body_bytes'] / 1e6:.2f} MB body): it decodes, hashes and recognises the bytes, reads "
        "the workflow (conditional GET), uploads the file under its content-addressed name, submits and "
        "sends the \"Prompt Submitted\" event. The raw baseline is what a client of ComfyUI does itself: "
        "`POST /upload/image` with the same bytes and name, then `POST /prompt`, one reused session. "
        "The stand-in accepts the prompts and runs none (long delay), so nothing else competes for the CPU. "
        f"`MAX_BODY_BYTES` is raised to {INLINE_BODY_LIMIT // MIB} MiB for this run: its default (1 MiB) "
        "refuses "
        "this body with 400, so with the defaults inline images stop at about 780 KB and larger ones go "
        "through `POST /api/uploads`.",
        "",
        "| request | median ms | p90 ms | min – max ms |",
        "|---|---|---|---|",
        timing_row("run_workflow (inline base64)", h),
        timing_row("raw /upload/image + /prompt", r),
        timing_row("paired difference", d),
        "",
        f"Ratio of medians: **{o['ratio']:.2f}×** "
        f"(target ≤ {RATIO_TARGET:g}×: {verdict(o['ratio'] <= RATIO_TARGET)}).",
        "",
        f"Where the handler's time goes (medians of {p['requests']} more requests, timed apart from the "
        "pairs): "
        f"reading the inline image (base64 decode, spool, SHA-256, recognise) {p['prepare_ms']:.1f} ms; the "
        f"streamed upload to ComfyUI {p['upload_ms']:.1f} ms, where the raw client's in-memory multipart "
        f"takes {p['raw_upload_ms']:.1f} ms; round trips the raw client does not make "
        f"({', '.join(p['aws_calls'])}) "
        f"{p['aws_ms']:.1f} ms against moto on localhost.",
        "",
        "### Memory: an upload read from S3 and streamed into ComfyUI",
        "",
        "`comfy_core.workflows.inputs.apply` of `{\"upload_id\"}` naming a PNG in the moto server (its own "
        "buffers are not the child's): read in 256 KiB chunks into a spooled file (1 MiB in memory, "
        "then /tmp), hashed and recognised, then streamed to `POST /upload/image` (requests-toolbelt). "
        "After a warm-up with a small upload.",
        "",
        "| file MB | peak RSS growth MiB | tracemalloc peak MiB | MiB/s |",
        "|---|---|---|---|",
        *(memory_row(m) for m in results["memory"]),
        "",
        f"Peak RSS growth on {big['bytes'] / 1e6:.0f} MB: **{big['rss_growth'] / MIB:.1f} MiB** "
        f"(target < {MEMORY_TARGET_MIB:g} MiB: {verdict(big['rss_growth'] / MIB < MEMORY_TARGET_MIB)}); "
        f"the sizes' growths are {_flatness(results):.1f} MiB apart (target ≤ {FLAT_TARGET_MIB:g} MiB: "
        f"{verdict(_flatness(results) <= FLAT_TARGET_MIB)}). RSS growth = peak RSS during `apply` minus RSS "
        "before it"
        + (" (peak reset through /proc/self/clear_refs)." if big["peak_reset"] else " (upper bound)."),
        "",
    ])


def run_all(quick: bool = False, pairs: int | None = None) -> dict[str, Any]:
    results = run(pairs or (QUICK if quick else FULL)["pairs"])
    results["quick"] = quick
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inputs", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK['pairs']} pairs instead of {FULL['pairs']}")
    parser.add_argument("--pairs", type=int)
    parser.add_argument("--output", type=Path, default=DOC)
    parser.add_argument("--child", choices=("overhead", "memory"), help=argparse.SUPPRESS)
    parser.add_argument("--upload-id", help=argparse.SUPPRESS)
    parser.add_argument("--warmup-id", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        report = (overhead_child(args.pairs) if args.child == "overhead"
                  else memory_child(args.upload_id, args.warmup_id))
        args.result.write_text(json.dumps(report), encoding="utf-8")
        return 0
    text = markdown(run_all(args.quick, args.pairs))
    write_regions(args.output, {"inputs": text})
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
