"""Copy one file of a local stack's ComfyUI into its S3 in a fresh process: time and memory.

``probe(stack, kind, filename)`` runs ``python -m devtools.archive_probe KIND FILENAME`` with
the archiver's environment from the template (``LocalStack.child_environment``) and returns
the JSON line it prints. A fresh process, so its memory is its own and it shares no GIL
with the servers. The e2e test of the archiver's bounded memory and bench/archiver.py
(throughput and memory against plain boto3) both use it.

* ``archive``: ``comfy_core.archive.sweep.archive_prompt`` of a prompt whose one output is
  FILENAME: ``GET /view`` from the stand-in streamed into the image bucket;
* ``baseline``: boto3 ``upload_fileobj`` of the same file, read from the stand-in's output
  folder, into the same bucket with comfy_core's S3 client (same settings).

Both upload ``warmup.bin`` first, so imports, clients and connection pools exist before
the measured upload. ``--memory`` also traces Python allocations (slower).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devtools.dev import LocalStack

MIB = 1024 * 1024
ARCHIVER_FUNCTION = "ArchiverFunction"
WARMUP_FILE = "warmup.bin"
KINDS = ("archive", "baseline")


# -- files ---------------------------------------------------------------------------------
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


# -- parent side ---------------------------------------------------------------------------
def probe_environment(stack: LocalStack) -> dict[str, str]:
    """The archiver's environment for a child process, and where the stand-in keeps files."""
    return {
        **stack.child_environment(ARCHIVER_FUNCTION),
        "PROBE_OUTPUT_DIR": str(stack.standin.output_dir),
        "POWERTOOLS_LOG_LEVEL": "ERROR",  # the report is the last line of stdout
    }


def probe(stack: LocalStack, kind: str, filename: str, *, memory: bool = False) -> dict[str, Any]:
    """Upload FILENAME (in the stand-in's output folder) in a fresh process; its report,
    with ``rss_growth`` (peak RSS during the upload minus RSS before it) and ``mib_per_s``."""
    warmup = Path(stack.standin.output_dir) / WARMUP_FILE
    if not warmup.exists():
        make_file(warmup, 256 * 1024)
    command = [sys.executable, "-m", "devtools.archive_probe", kind, filename]
    if memory:
        command.append("--memory")
    done = subprocess.run(command, cwd=stack.template.root, env=probe_environment(stack),
                          capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"archive probe {kind} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["rss_growth"] = report["rss_peak"] - report["rss_before"]
    report["mib_per_s"] = report["bytes"] / MIB / report["seconds"]
    return report


# -- child side: memory ----------------------------------------------------------------------
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


# -- child side: the uploads -------------------------------------------------------------------
def _archive(filename: str) -> int:
    from comfy_core.archive import sweep as archive

    entry = {
        "outputs": {"9": {"images": [{"filename": filename, "subfolder": "", "type": "output"}]}},
        "status": {"status_str": "success", "completed": True, "messages": []},
    }
    result = archive.archive_prompt(uuid.uuid4().hex, entry)
    if result.status != "archived" or result.stored != 1:
        raise RuntimeError(f"archive failed: {result.summary()}")
    return result.bytes


def _baseline(filename: str) -> int:
    from comfy_core.config import get_settings
    from comfy_core.storage import s3_client  # same client settings as the archiver

    path = Path(os.environ["PROBE_OUTPUT_DIR"]) / filename
    key = f"baseline/{uuid.uuid4().hex}/{filename}"
    with open(path, "rb") as handle:
        s3_client().upload_fileobj(handle, get_settings().image_bucket, key)
    return path.stat().st_size


def child(kind: str, filename: str, memory: bool) -> dict[str, Any]:
    import gc
    import tracemalloc

    upload = _archive if kind == "archive" else _baseline
    upload(WARMUP_FILE)  # imports, clients and connection pools exist before measuring
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
        from comfy_core.archive import sweep as archive

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.archive_probe",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("filename", help="a file in the stand-in's output folder")
    parser.add_argument("--memory", action="store_true", help="also trace Python allocations")
    args = parser.parse_args(argv)
    print(json.dumps(child(args.kind, args.filename, args.memory)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
