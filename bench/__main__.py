"""``python -m bench`` (``make bench``): every benchmark, results into docs/benchmarks.md.

* sizes: `make build`, then the unzipped size of the layer and each function (bench/sizes.py);
* cold: cold init of each API function and the archiver vs ``import boto3`` (bench/cold.py);
* warm: per-request overhead of each API handler vs direct ComfyUI calls (bench/warm.py);
* roundtrips: ComfyUI and AWS round trips of one request, counted (bench/roundtrips.py);
* archiver: throughput, memory, and a run with nothing new (bench/archiver.py);
* inputs: run_workflow with a 1 MB inline image vs raw /upload/image + /prompt, and memory of
  a 50 MB upload read from S3 into ComfyUI (bench/inputs.py);
* watcher: prompt finished -> files in S3 and Completed event, with the live watcher vs the
  schedule alone, and the watcher's monthly cost (bench/watcher.py);
* fleet: routing cost per submission and task_status lookups with 1, 2 and 4 ComfyUI
  backends, counted and timed against one backend (bench/fleet.py).

``--only NAME...`` reruns some of them and rewrites only their sections (the summary at
the top is rewritten by a full run). ``--quick`` is a smaller version of the same run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bench import archiver, cold, fleet, inputs, roundtrips, sizes, summary, warm, watcher
from bench.common import DOC, Target, machine, now, write_regions
from bench.stack import local_stack

BENCHMARKS = ("sizes", "cold", "warm", "roundtrips", "archiver", "inputs", "watcher", "fleet")
FULL = {"runs": 11, "iterations": 200}
QUICK = {"runs": 3, "iterations": 50}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK['runs']} cold runs, {QUICK['iterations']} warm iterations, "
                        "archiver and inputs --quick")
    parser.add_argument("--runs", type=int, help=f"cold runs per subject (default {FULL['runs']})")
    parser.add_argument("--iterations", type=int,
                        help=f"warm request pairs per handler (default {FULL['iterations']})")
    parser.add_argument("--no-build", action="store_true",
                        help="reuse .aws-sam/build instead of running `make build`")
    parser.add_argument("--output", type=Path, default=DOC)
    return parser.parse_args(argv)


def _stack_benchmarks(todo: set[str], runs: int, iterations: int) -> dict[str, Any]:
    """cold, warm and roundtrips share one local stack."""
    results: dict[str, Any] = {}
    build_dir = sizes.BUILD_DIR if sizes.BUILD_DIR.is_dir() else None
    with local_stack() as stack:
        if "cold" in todo:
            print("cold init...", file=sys.stderr)
            results["cold"] = cold.run(stack, runs, build_dir)
            cold.judge(results["cold"])
        if "warm" in todo:
            print("warm overhead...", file=sys.stderr)
            results["warm"] = warm.run(stack, iterations)
        if "roundtrips" in todo:
            print("round trips...", file=sys.stderr)
            results["roundtrips"] = roundtrips.run(stack)
    return results


def run(todo: set[str], args: argparse.Namespace) -> dict[str, Any]:
    preset = QUICK if args.quick else FULL
    results: dict[str, Any] = {}
    if "sizes" in todo:  # first: the cold benchmark measures this build too
        print("sizes (make build)...", file=sys.stderr)
        results["sizes"] = sizes.run(rebuild=not args.no_build)
    if todo & {"cold", "warm", "roundtrips"}:
        results.update(_stack_benchmarks(todo, args.runs or preset["runs"],
                                         args.iterations or preset["iterations"]))
    if "archiver" in todo:
        print("archiver...", file=sys.stderr)
        results["archiver"] = archiver.run_all(quick=args.quick)
    if "inputs" in todo:
        print("input images...", file=sys.stderr)
        results["inputs"] = inputs.run_all(quick=args.quick)
    if "watcher" in todo:
        print("live watcher latency...", file=sys.stderr)
        results["watcher"] = watcher.run_all(quick=args.quick)
    if "fleet" in todo:
        print("fleet routing and lookups...", file=sys.stderr)
        results["fleet"] = fleet.run_all(quick=args.quick)
    return results


MODULES = {"sizes": sizes, "cold": cold, "warm": warm, "roundtrips": roundtrips, "archiver": archiver,
           "inputs": inputs, "watcher": watcher, "fleet": fleet}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    todo = set(args.only or BENCHMARKS)
    date, machine_text = now(), machine()
    results = run(todo, args)
    bodies = {name: MODULES[name].markdown(value, date, machine_text) for name, value in results.items()}
    found: list[Target] = [target for name in BENCHMARKS if name in results
                           for target in MODULES[name].targets(results[name])]
    if todo == set(BENCHMARKS):
        command = " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])])
        bodies["summary"] = summary.markdown(results, found, date, machine_text, command)
    write_regions(args.output, bodies)
    for target in found:
        print(f"{'meets ' if target.met else 'MISSES'}  {target.group}: {target.name}: {target.figure}")
    print(f"{sum(t.met for t in found)} of {len(found)} targets met; see {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
