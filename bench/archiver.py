"""Archiver benchmark: throughput against plain boto3, and peak memory on a big file.

Everything runs on 127.0.0.1: a moto S3 server and the ComfyUI stand-in live in this
process; each measured upload runs in a fresh child process (``--child``), so its memory
is its own and neither side shares a GIL with the servers differently from the other.

* throughput: the archiver (GET /view from the stand-in, streamed into S3) against
  ``boto3 upload_fileobj`` of the same file from disk to the same endpoint, alternated,
  several runs each; median, spread and the ratio of medians (target >= 0.8x).
* memory: peak RSS growth of a child archiving a large file (target < 64 MiB).

Results go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BUCKET = "bench-images"
REGION = "us-east-1"
MIB = 1024 * 1024
THROUGHPUT_TARGET = 0.8
MEMORY_TARGET_MIB = 64


# -- source files ------------------------------------------------------------------------
def make_file(path: Path, size: int) -> None:
    """A sparse file of `size` bytes, fast to create whatever its size, with a random 4 KiB
    block at every MiB so parts stored out of order or twice change its hash."""
    rng = random.Random(size)
    with open(path, "wb") as handle:
        handle.truncate(size)
        for offset in range(0, size, MIB):
            handle.seek(offset)
            handle.write(rng.randbytes(min(4096, size - offset)))


def sha256_chunks(chunks: Any) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return sha256_chunks(iter(lambda: handle.read(MIB), b""))


# -- the stack -----------------------------------------------------------------------------
@dataclass
class Stack:
    endpoint: str
    comfyui_url: str
    output_dir: Path
    s3: Any
    standin: Any  # devtools.comfyui_standin.ComfyUIStandIn

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            AWS_ENDPOINT_URL=self.endpoint,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION=REGION,
            COMFYUI_BASE_URL=self.comfyui_url,
            IMAGE_BUCKET=BUCKET,
            IMAGE_PREFIX="images/",
            BENCH_OUTPUT_DIR=str(self.output_dir),
            PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "layers" / "comfy_core")]),
            POWERTOOLS_DEV="false",
            POWERTOOLS_LOG_LEVEL="ERROR",
        )
        env.pop("AWS_PROFILE", None)
        return env

    def empty_bucket(self) -> None:
        """Free moto's copies between runs: it keeps objects in this process."""
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            for item in page.get("Contents") or []:
                self.s3.delete_object(Bucket=BUCKET, Key=item["Key"])


@contextmanager
def local_stack() -> Iterator[Stack]:
    """moto S3 server + ComfyUI stand-in on free ports of 127.0.0.1."""
    import boto3
    from moto.server import ThreadedMotoServer

    from devtools.comfyui_standin import ComfyUIStandIn

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    root = tempfile.mkdtemp(prefix="bench-comfyui-")
    standin = ComfyUIStandIn(root, port=0).start()
    try:
        host, port = moto.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket=BUCKET)
        yield Stack(endpoint, standin.base_url, Path(standin.output_dir), s3, standin)
    finally:
        standin.stop()
        moto.stop()
        shutil.rmtree(root, ignore_errors=True)


def run_child(stack: Stack, kind: str, filename: str, memory: bool = False) -> dict[str, Any]:
    """Measure one upload in a fresh process; returns its JSON report."""
    command = [sys.executable, "-m", "bench.archiver", "--child", kind, "--file", filename]
    if memory:
        command.append("--memory")
    done = subprocess.run(
        command, cwd=REPO, env=stack.child_env(), capture_output=True, text=True, timeout=1800, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"child {kind} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- child side: memory probes -------------------------------------------------------------
def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Linux lets a process reset its own peak RSS (VmHWM); elsewhere the peak so far stays."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _rss_now() -> int:
    kib = _status_kib("VmRSS")
    return kib * 1024 if kib is not None else _rss_peak()


def _rss_peak() -> int:
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def _archive(filename: str) -> int:
    from comfy_core import archive

    entry = {
        "outputs": {"9": {"images": [{"filename": filename, "subfolder": "", "type": "output"}]}},
        "status": {"status_str": "success", "completed": True, "messages": []},
    }
    result = archive.archive_prompt(uuid.uuid4().hex, entry)
    if result.status != "archived" or result.stored != 1:
        raise RuntimeError(f"archive failed: {result.summary()}")
    return result.bytes


def _baseline(filename: str) -> int:
    from comfy_core.storage import s3_client  # same client settings as the archiver

    path = Path(os.environ["BENCH_OUTPUT_DIR"]) / filename
    key = f"baseline/{uuid.uuid4().hex}/{filename}"
    with open(path, "rb") as handle:
        s3_client().upload_fileobj(handle, BUCKET, key)
    return path.stat().st_size


def child(kind: str, filename: str, memory: bool) -> dict[str, Any]:
    import gc
    import tracemalloc

    upload = _archive if kind == "archive" else _baseline
    upload("warmup.bin")  # imports, clients and connection pools exist before measuring
    gc.collect()
    precise = _reset_peak_rss()
    before = _rss_now()
    if memory:
        tracemalloc.start()
    started = time.perf_counter()
    size = upload(filename)
    seconds = time.perf_counter() - started
    traced = tracemalloc.get_traced_memory()[1] if memory else None
    tuning = {}
    if kind == "archive":
        from comfy_core import archive

        tuning = {"part_mib": archive.PART_SIZE / MIB, "parts_in_flight": archive.PARTS_IN_FLIGHT}
    return {
        **tuning,
        "kind": kind,
        "bytes": size,
        "seconds": seconds,
        "rss_before": before,
        "rss_peak": _rss_peak(),
        "peak_reset": precise,
        "tracemalloc_peak": traced,
    }


# -- parent side ----------------------------------------------------------------------------
def measure(stack: Stack, kind: str, filename: str, memory: bool = False) -> dict[str, Any]:
    report = run_child(stack, kind, filename, memory)
    report["mib_per_s"] = report["bytes"] / MIB / report["seconds"]
    report["rss_growth"] = report["rss_peak"] - report["rss_before"]
    return report


def summarise(values: list[float]) -> dict[str, float]:
    median = statistics.median(values)
    return {
        "median": median,
        "min": min(values),
        "max": max(values),
        "spread_pct": 100.0 * (max(values) - min(values)) / median if median else 0.0,
    }


def run(runs: int, size_mib: int, memory_mib: int) -> dict[str, Any]:
    results: dict[str, Any] = {"runs": runs, "size_mib": size_mib, "memory_mib": memory_mib}
    with local_stack() as stack:
        make_file(stack.output_dir / "warmup.bin", 256 * 1024)
        make_file(stack.output_dir / "throughput.bin", size_mib * MIB)
        speeds: dict[str, list[float]] = {"archive": [], "baseline": []}
        for number in range(runs):
            # Alternate, and swap who goes first, so drift hits both sides alike.
            order = ("archive", "baseline") if number % 2 == 0 else ("baseline", "archive")
            for kind in order:
                report = measure(stack, kind, "throughput.bin")
                speeds[kind].append(report["mib_per_s"])
                print(
                    f"  run {number + 1}/{runs} {kind:8s} {report['mib_per_s']:7.1f} MiB/s", file=sys.stderr
                )
                stack.empty_bucket()
        (stack.output_dir / "throughput.bin").unlink()
        results["archive"] = summarise(speeds["archive"])
        results["baseline"] = summarise(speeds["baseline"])
        results["ratio"] = results["archive"]["median"] / results["baseline"]["median"]

        big = stack.output_dir / "memory.bin"
        make_file(big, memory_mib * MIB)
        results["memory_archive"] = measure(stack, "archive", big.name, memory=True)
        print(
            f"  memory archive: +{results['memory_archive']['rss_growth'] / MIB:.1f} MiB RSS", file=sys.stderr
        )
        stack.empty_bucket()
        results["memory_baseline"] = measure(stack, "baseline", big.name, memory=True)
        stack.empty_bucket()
        big.unlink()
    return results


def markdown(results: dict[str, Any]) -> str:
    machine = f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
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

    ratio_ok = "meets" if results["ratio"] >= THROUGHPUT_TARGET else "MISSES"
    mem_ok = "meets" if mem_a["rss_growth"] < MEMORY_TARGET_MIB * MIB else "MISSES"
    return "\n".join(
        [
            "# Benchmarks",
            "",
            "## Image archiver (`python -m bench`, `make bench`)",
            "",
            f"- Date: {date}",
            f"- Machine: {machine}",
            "- Setup: moto S3 server and the ComfyUI stand-in on 127.0.0.1 in the bench process; each "
            "upload measured in a fresh child process after a warm-up upload (imports, clients, pools).",
            "- Archiver: `comfy_core.archive.archive_prompt` streaming `GET /view` into S3 "
            f"({mem_a['part_mib']:.0f} MiB parts, {mem_a['parts_in_flight']} in flight). "
            "Baseline: boto3 `upload_fileobj` of the same file from disk, default TransferConfig, "
            "same endpoint, same S3 client settings.",
            f"- Reproduce: `make bench` (`python -m bench --runs {results['runs']} "
            f"--size-mib {results['size_mib']} --memory-mib {results['memory_mib']}`).",
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
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--size-mib", type=int, default=256, help="throughput file size")
    parser.add_argument("--memory-mib", type=int, default=512, help="memory test file size")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--child", choices=("archive", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.file, args.memory)))
        return 0
    results = run(args.runs, args.size_mib, args.memory_mib)
    text = markdown(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
