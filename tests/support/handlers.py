"""Calling the real handlers in-process: sample events from events/, answers decoded."""

from __future__ import annotations

import copy
import importlib
import json
from pathlib import Path
from typing import Any

from tests.support.lambda_context import FakeLambdaContext

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"


def event(name: str, **changes: Any) -> dict[str, Any]:
    """A sample event from events/, with top-level fields replaced
    (e.g. `pathParameters={"prompt_id": ...}`)."""
    data = json.loads((EVENTS / f"{name}.json").read_text(encoding="utf-8"))
    for key, value in changes.items():
        data[key] = copy.deepcopy(value)
    return data


def invoke(function: str, evt: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """functions/<function>/app.py's lambda_handler called with `evt`: (status, JSON body)."""
    module = importlib.import_module(f"functions.{function}.app")
    response = module.lambda_handler(evt, FakeLambdaContext())
    assert response["headers"]["Content-Type"] == "application/json"
    return response["statusCode"], json.loads(response["body"])
