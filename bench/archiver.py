"""Archiver benchmark: throughput against plain boto3, and peak memory on a big file.

Everything runs on 127.0.0.1: a local stack (``devtools.dev.LocalStack``: moto with the
template's buckets, and the ComfyUI stand-in) lives in this process; each measured upload
runs in a fresh child process (``devtools.archive_probe``) with the archiver's environment
from the template, so its memory is its own and neither side shares a GIL with the servers
differently from the other.

* throughput: the archiver (GET /view from the stand-in, streamed into S3) against
  ``boto3 upload_fileobj`` of the same file from disk to the same endpoint, alternated,
  several runs each; median, spread and the ratio of medians (target >= 0.8x).
* memory: peak RSS growth of a child archiving a large file (target < 64 MiB).
* nothing new: two sweeps over a history with finished prompts, counted in a child; the
  second finds everything archived and must download and upload nothing (target: 0 and 0).

Results go to the archiver section of docs/benchmarks.md. ``--quick`` runs a smaller version
(fewer runs, smaller files) of the same measurements.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import DOC, MIB, REPO, Target, machine, now, summarise, tally, verdict, write_regions
from devtools.archive_probe import make_file, probe, probe_environment
from devtools.dev import LocalStack

IMAGE_BUCKET = "ImageBucket"  # the template's logical id
THROUGHPUT_TARGET = 0.8
MEMORY_TARGET_MIB = 64
# Finished prompts in the stand-in's history for the "nothing new" sweeps.
SWEEP_WORKFLOWS = ("empty_save", "empty_preview", "text_label")
# S3 operations that send file bytes (or the manifest) to the bucket.
UPLOAD_OPERATIONS = ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload")
FULL = {"runs": 7, "size_mib": 256, "memory_mib": 512}
QUICK = {"runs": 3, "size_mib": 64, "memory_mib": 128}


# -- child side: two sweeps, counted ---------------------------------------------------------
def _sweep_run() -> dict[str, Any]:
    """One archiver run over the stand-in's history, with its round trips counted."""
    importlib.import_module("botocore.client")  # loaded first, so the counters see every S3 call

    from bench.handlers import Counters
    from comfy_core.archive import sweep as archive
    from comfy_core.storage import s3_client

    s3_client()
    with Counters() as counted:
        summary = archive.run_sweep()
    s3_ops = [call.removeprefix("S3 ") for call in counted.aws if call.startswith("S3 ")]
    return {
        "prompts_archived": summary["prompts_archived"],
        "prompts_already_archived": summary["prompts_already_archived"],
        "comfy": counted.comfy,
        "aws": counted.aws,
        "downloads": sum(1 for call in counted.comfy if call.startswith("GET /view")),
        "uploads": sum(1 for op in s3_ops if op.split(" ")[0] in UPLOAD_OPERATIONS),
    }


def sweep_child() -> dict[str, Any]:
    """The first run archives what is new; the second finds nothing new."""
    return {"first": _sweep_run(), "second": _sweep_run()}


# -- parent side ----------------------------------------------------------------------------
def run_sweeps(stack: LocalStack) -> dict[str, Any]:
    """Count two sweeps in a fresh process (``--child sweep``); returns its JSON report."""
    done = subprocess.run([sys.executable, "-m", "bench.archiver", "--child", "sweep"], cwd=REPO,
                          env=probe_environment(stack), capture_output=True, text=True, timeout=1800,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child sweep failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def seed_history(stack: LocalStack) -> None:
    """Finished prompts with files in the stand-in's history, as the sweeps find them."""
    from bench.stack import finished, post_prompt, wait_for

    base_url = stack.standin.base_url
    for workflow in SWEEP_WORKFLOWS:
        prompt_id = post_prompt(base_url, workflow)
        wait_for(lambda: finished(base_url, prompt_id), f"prompt {prompt_id}")


def nothing_new(stack: LocalStack) -> dict[str, Any]:
    seed_history(stack)
    report = run_sweeps(stack)
    second = report["second"]
    print(f"  nothing new: {second['downloads']} downloads, {second['uploads']} uploads", file=sys.stderr)
    stack.empty_bucket(IMAGE_BUCKET)
    return report


def run(runs: int, size_mib: int, memory_mib: int) -> dict[str, Any]:
    results: dict[str, Any] = {"runs": runs, "size_mib": size_mib, "memory_mib": memory_mib}
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    # No schedules: the archiver must not run in this process while a child is measured.
    with LocalStack(port=0, standin_delay=0, schedule_every=0) as stack:
        stack.empty_bucket(IMAGE_BUCKET)  # moto's objects outlive a stack in this process
        output_dir = Path(stack.standin.output_dir)
        make_file(output_dir / "throughput.bin", size_mib * MIB)
        speeds: dict[str, list[float]] = {"archive": [], "baseline": []}
        for number in range(runs):
            # Alternate, and swap who goes first, so drift hits both sides alike.
            order = ("archive", "baseline") if number % 2 == 0 else ("baseline", "archive")
            for kind in order:
                report = probe(stack, kind, "throughput.bin")
                speeds[kind].append(report["mib_per_s"])
                print(
                    f"  run {number + 1}/{runs} {kind:8s} {report['mib_per_s']:7.1f} MiB/s", file=sys.stderr
                )
                stack.empty_bucket(IMAGE_BUCKET)
        (output_dir / "throughput.bin").unlink()
        results["archive"] = summarise(speeds["archive"])
        results["baseline"] = summarise(speeds["baseline"])
        results["ratio"] = results["archive"]["median"] / results["baseline"]["median"]

        big = output_dir / "memory.bin"
        make_file(big, memory_mib * MIB)
        results["memory_archive"] = probe(stack, "archive", big.name, memory=True)
        print(
            f"  memory archive: +{results['memory_archive']['rss_growth'] / MIB:.1f} MiB RSS", file=sys.stderr
        )
        stack.empty_bucket(IMAGE_BUCKET)
        results["memory_baseline"] = probe(stack, "baseline", big.name, memory=True)
        stack.empty_bucket(IMAGE_BUCKET)
        big.unlink()
        results["sweeps"] = nothing_new(stack)
    return results


def nothing_new_met(results: dict[str, Any]) -> bool:
    second = results["sweeps"]["second"]
    return second["downloads"] == 0 and second["uploads"] == 0 and second["prompts_archived"] == 0


def targets(results: dict[str, Any]) -> list[Target]:
    mem = results["memory_archive"]["rss_growth"] / MIB
    second = results["sweeps"]["second"]
    return [
        Target("Archiver", f"throughput ≥ {THROUGHPUT_TARGET}× boto3 upload_fileobj",
               f"{results['ratio']:.2f}×", results["ratio"] >= THROUGHPUT_TARGET),
        Target("Archiver", f"peak memory on {results['memory_mib']} MiB < {MEMORY_TARGET_MIB} MiB",
               f"{mem:.1f} MiB", mem < MEMORY_TARGET_MIB),
        Target("Archiver", "run with nothing new: 0 downloads, 0 uploads",
               f"{second['downloads']} downloads, {second['uploads']} uploads", nothing_new_met(results)),
    ]


def _sweep_row(name: str, run: dict[str, Any]) -> str:
    comfy, aws = tally(run["comfy"]), tally(run["aws"])
    return (f"| {name} | {run['prompts_archived']} | {run['prompts_already_archived']} | {run['downloads']} "
            f"| {run['uploads']} | {comfy} | {aws} |")


def markdown(results: dict[str, Any], date: str | None = None, machine_text: str | None = None) -> str:
    date, machine_text = date or now(), machine_text or machine()
    a, b = results["archive"], results["baseline"]
    mem_a, mem_b = results["memory_archive"], results["memory_baseline"]

    def speed_row(name: str, s: dict[str, float]) -> str:
        return f"| {name} | {s['median']:.1f} | {s['min']:.1f} – {s['max']:.1f} | {s['spread_pct']:.0f}% |"

    def mem_row(name: str, m: dict[str, Any]) -> str:
        traced = m["tracemalloc_peak"] / MIB if m["tracemalloc_peak"] is not None else float("nan")
        return (
            f"| {name} | {m['bytes'] / MIB:.0f} | {m['rss_growth'] / MIB:.1f} | {traced:.1f} | "
            f"{m['mib_per_s']:.1f} |"
        )

    ratio_ok = verdict(results["ratio"] >= THROUGHPUT_TARGET)
    mem_ok = verdict(mem_a["rss_growth"] < MEMORY_TARGET_MIB * MIB)
    sweeps = results["sweeps"]
    quick = " (quick mode)" if results.get("quick") else ""
    return "\n".join(
        [
            f"## Image archiver{quick} (`python -m bench --only archiver`)",
            "",
            f"- Date: {date}",
            f"- Machine: {machine_text}",
            "- Setup: the local stack (moto with the template's buckets, the ComfyUI stand-in) on "
            "127.0.0.1 in the bench process; each upload measured in a fresh child process with the "
            "archiver's environment from template.yaml, after a warm-up upload (imports, clients, pools).",
            "- Archiver: `comfy_core.archive.sweep.archive_prompt` streaming `GET /view` into S3 "
            f"({mem_a['part_mib']:.0f} MiB parts, {mem_a['parts_in_flight']} in flight). "
            "Baseline: boto3 `upload_fileobj` of the same file from disk, default TransferConfig, "
            "same endpoint, same S3 client settings.",
            f"- Reproduce: `python -m bench.archiver --runs {results['runs']} "
            f"--size-mib {results['size_mib']} --memory-mib {results['memory_mib']}` (or `make bench`).",
            "",
            f"### Throughput: {results['size_mib']} MiB file, {results['runs']} runs each, alternated",
            "",
            "| upload | median MiB/s | min – max MiB/s | spread |",
            "|---|---|---|---|",
            speed_row("archiver (ComfyUI → S3)", a),
            speed_row("boto3 upload_fileobj (disk → S3)", b),
            "",
            f"Ratio of medians: **{results['ratio']:.2f}×** (target ≥ {THROUGHPUT_TARGET}×: {ratio_ok}).",
            "",
            f"### Memory: {results['memory_mib']} MiB file",
            "",
            "| upload | file MiB | peak RSS growth MiB | tracemalloc peak MiB | MiB/s |",
            "|---|---|---|---|---|",
            mem_row("archiver", mem_a),
            mem_row("boto3 upload_fileobj", mem_b),
            "",
            f"Archiver peak RSS growth: **{mem_a['rss_growth'] / MIB:.1f} MiB** "
            f"(target < {MEMORY_TARGET_MIB} MiB: {mem_ok}). RSS growth = peak RSS during the upload "
            "minus RSS before it"
            + (" (peak reset through /proc/self/clear_refs)." if mem_a["peak_reset"] else " (upper bound)."),
            "",
            "### A run with nothing new",
            "",
            f"The stand-in's history holds {len(SWEEP_WORKFLOWS)} finished prompts with files; two "
            "archiver runs (`run_sweep`, as the schedule calls it) in one child process, round trips "
            "counted: ComfyUI requests through comfy_core's session, every AWS operation through "
            "botocore.",
            "",
            "| run | prompts archived | already archived | downloads (GET /view) | uploads to S3 "
            "| ComfyUI requests | AWS operations |",
            "|---|---|---|---|---|---|---|",
            _sweep_row("first (all new)", sweeps["first"]),
            _sweep_row("second (nothing new)", sweeps["second"]),
            "",
            f"Second run: **{sweeps['second']['downloads']} downloads, {sweeps['second']['uploads']} "
            f"uploads** (target 0 and 0: {verdict(nothing_new_met(results))}).",
            "",
        ]
    )


def settings(quick: bool, runs: int | None, size_mib: int | None, memory_mib: int | None) -> dict[str, int]:
    """Run counts and file sizes: the full or quick defaults, each overridable."""
    chosen = dict(QUICK if quick else FULL)
    for name, value in (("runs", runs), ("size_mib", size_mib), ("memory_mib", memory_mib)):
        if value is not None:
            chosen[name] = value
    return chosen


def run_all(quick: bool = False, runs: int | None = None, size_mib: int | None = None,
            memory_mib: int | None = None) -> dict[str, Any]:
    results = run(**settings(quick, runs, size_mib, memory_mib))
    results["quick"] = quick
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.archiver", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 runs, 64 MiB and 128 MiB files")
    parser.add_argument("--runs", type=int, help=f"default {FULL['runs']}")
    parser.add_argument("--size-mib", type=int, help=f"throughput file size, default {FULL['size_mib']}")
    parser.add_argument("--memory-mib", type=int, help=f"memory test file size, default {FULL['memory_mib']}")
    parser.add_argument("--output", type=Path, default=DOC)
    parser.add_argument("--child", choices=("sweep",), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "sweep":
        print(json.dumps(sweep_child()))
        return 0
    text = markdown(run_all(args.quick, args.runs, args.size_mib, args.memory_mib))
    write_regions(args.output, {"archiver": text})
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
