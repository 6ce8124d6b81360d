"""Generate ``functions/openapi/openapi.json`` from ``openapi.yaml``.

``openapi.yaml`` is the contract's source (comments, readable diffs). The Lambda layer has no
YAML parser and ``sam build`` has no generation step, so the JSON the function serves is
generated here and committed; ``tests/unit/test_openapi.py`` fails while the two differ.

    python -m devtools.openapi           # rewrite the JSON
    python -m devtools.openapi --check   # exit 1 when the JSON is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCE = REPO_ROOT / "openapi.yaml"
TARGET = REPO_ROOT / "functions" / "openapi" / "openapi.json"


def load_spec(path: Path = SOURCE) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        spec = yaml.safe_load(handle)
    if not isinstance(spec, dict) or "openapi" not in spec:
        raise ValueError(f"{path}: not an OpenAPI document")
    return spec


def render(spec: dict[str, Any]) -> str:
    # Stable output (key order as written, 2-space indent, final newline) keeps diffs small.
    return json.dumps(spec, indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.openapi", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only report whether the JSON is up to date")
    args = parser.parse_args(argv)
    text = render(load_spec())
    current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else None
    if args.check:
        if current != text:
            stale = TARGET.relative_to(REPO_ROOT)
            print(f"{stale} is stale: run python -m devtools.openapi", file=sys.stderr)
            return 1
        return 0
    if current != text:
        TARGET.write_text(text, encoding="utf-8")
        print(f"wrote {TARGET.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
