"""Package sizes of the `sam build` output against Lambda's deployment limits.

Lambda allows 250 MB unzipped for a function and all its layers together (and 50 MB zipped
for a direct upload). Sizes are those of the files as built (`make build`); the boto3 the
runtime provides is not part of them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.common import MIB, REPO, Target, verdict
from bench.stack import template_functions

BUILD_DIR = REPO / ".aws-sam" / "build"
LAYER_ID = "ComfyCoreLayer"
UNZIPPED_LIMIT = 262_144_000  # "250 MB" as Lambda counts it
ZIPPED_LIMIT = 52_428_800  # "50 MB", a zip uploaded directly


def build() -> str | None:
    """Run `make build`; the error text when it fails."""
    done = subprocess.run(["make", "build"], cwd=REPO, capture_output=True, text=True, timeout=1800,
                          check=False)
    return None if done.returncode == 0 else (done.stdout + done.stderr)[-2000:]


def _files(folder: Path) -> list[Path]:
    return [Path(root) / name for root, _, names in os.walk(folder) for name in names]


def unzipped(folder: Path) -> int:
    return sum(path.lstat().st_size for path in _files(folder))


def zipped(folder: Path) -> int:
    """Size of the folder zipped with deflate, as `sam deploy` uploads it."""
    with tempfile.TemporaryDirectory(prefix="bench-zip-") as tmp:
        target = Path(tmp) / "package.zip"
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in _files(folder):
                archive.write(path, path.relative_to(folder))
        return target.stat().st_size


def largest(folder: Path, count: int = 5) -> list[tuple[str, int]]:
    """The biggest top-level entries of a layer's python/ folder."""
    root = folder / "python" if (folder / "python").is_dir() else folder
    sizes = [(p.name, unzipped(p) if p.is_dir() else p.stat().st_size) for p in root.iterdir()]
    return sorted(sizes, key=lambda item: -item[1])[:count]


def measure(build_dir: Path) -> dict[str, Any]:
    layer_dir = build_dir / LAYER_ID
    if not layer_dir.is_dir():
        raise RuntimeError(f"no {LAYER_ID} in {build_dir}: run `make build`")
    layer = {"unzipped": unzipped(layer_dir), "zipped": zipped(layer_dir),
             "pyc": sum(1 for p in _files(layer_dir) if p.suffix == ".pyc"),
             "py": sum(1 for p in _files(layer_dir) if p.suffix == ".py"),
             "largest": largest(layer_dir)}
    functions = []
    for info in template_functions():
        folder = build_dir / info.logical_id
        if folder.is_dir():
            size = unzipped(folder)
            functions.append({"name": info.name, "logical_id": info.logical_id, "unzipped": size,
                              "zipped": zipped(folder), "total": size + layer["unzipped"]})
        else:
            functions.append({"name": info.name, "logical_id": info.logical_id, "missing": True})
    return {"layer": layer, "functions": functions}


def run(rebuild: bool) -> dict[str, Any]:
    """Sizes of a fresh `make build`; with rebuild=False (--no-build) of the build already there,
    reported as such with its date. A failed build stops here: measuring the earlier build
    instead would report sizes of code that is not the current one."""
    if rebuild and (error := build()):
        raise RuntimeError("`make build` failed; not measuring the earlier .aws-sam/build "
                           f"(--no-build measures it knowingly):\n{error}")
    results = measure(BUILD_DIR)
    results["rebuilt"] = rebuild
    stamp = BUILD_DIR / "template.yaml"  # written by every `sam build`
    built = (stamp if stamp.exists() else BUILD_DIR).stat().st_mtime
    results["built_at"] = datetime.fromtimestamp(built, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return results


def targets(results: dict[str, Any]) -> list[Target]:
    return [Target("Package sizes", f"`{row['name']}`: function + layer ≤ 250 MB unzipped",
                   f"{row['total'] / MIB:.2f} MiB", row["total"] <= UNZIPPED_LIMIT)
            for row in results["functions"] if not row.get("missing")]


def _mib(size: int) -> str:
    return f"{size / MIB:.2f}"


def _row(row: dict[str, Any]) -> str:
    if row.get("missing"):
        return f"| `{row['name']}` | not in the build (template newer than the build?) | | | | |"
    share = 100.0 * row["total"] / UNZIPPED_LIMIT
    return (f"| `{row['name']}` | {row['unzipped'] / 1024:.1f} | {row['zipped'] / 1024:.1f} | "
            f"{_mib(row['total'])} | {share:.1f}% | {verdict(row['total'] <= UNZIPPED_LIMIT)} |")


def markdown(results: dict[str, Any], date: str, machine: str) -> str:
    layer = results["layer"]
    source = ("`make build` in this run" if results["rebuilt"] else
              f"**not rebuilt in this run** (`--no-build`): the `.aws-sam/build` of {results['built_at']}, "
              "which may predate the current code")
    biggest = ", ".join(f"{name} {_mib(size)}" for name, size in layer["largest"])
    return "\n".join([
        "## Package sizes (`python -m bench --only sizes`)",
        "",
        f"- Date: {date}",
        f"- Machine: {machine}",
        f"- Build: {source}. Sizes in MiB; Lambda's limit is 250 MB (262,144,000 bytes) unzipped for "
        "a function and its layers together, 50 MB zipped for a direct upload.",
        f"- Layer `{LAYER_ID}`: **{_mib(layer['unzipped'])} MiB** unzipped, {_mib(layer['zipped'])} MiB "
        f"zipped; {layer['py']} .py files, {layer['pyc']} .pyc. Largest entries: {biggest}.",
        "",
        "| function | function KiB unzipped | function KiB zipped | function + layer MiB unzipped "
        "| share of 250 MB | verdict |",
        "|---|---|---|---|---|---|",
        *(_row(row) for row in results["functions"]),
        "",
    ])


if __name__ == "__main__":
    print(markdown(run(rebuild="--build" in sys.argv), "-", "-"))
