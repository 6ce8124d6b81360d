"""The recorded answers of a real ComfyUI 0.3.64 in tests/fixtures/comfyui/: `<name>.json` is
a JSON body, `<name>.headers.json` the request and response metadata, other files (PNG,
WebP) are /view bodies; `workflows/` holds the workflow files the recordings ran."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RECORDINGS = Path(__file__).resolve().parents[1] / "fixtures" / "comfyui"
WORKFLOWS = RECORDINGS / "workflows"


def recording(name: str) -> Any:
    """The recorded JSON body `<name>.json`."""
    return json.loads((RECORDINGS / f"{name}.json").read_text(encoding="utf-8"))


def recording_meta(name: str) -> dict[str, Any]:
    """The request/response metadata `<name>.headers.json`."""
    return json.loads((RECORDINGS / f"{name}.headers.json").read_text(encoding="utf-8"))


def recorded_file(filename: str) -> bytes:
    """A recorded body as bytes, e.g. `view_output.png`."""
    return (RECORDINGS / filename).read_bytes()


def workflow(filename: str) -> dict[str, Any]:
    """A workflow file from `workflows/`, e.g. `empty_save.json`."""
    return json.loads((WORKFLOWS / filename).read_text(encoding="utf-8"))
