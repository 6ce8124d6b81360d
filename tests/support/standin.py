"""Talking to the ComfyUI stand-in (devtools/comfyui_standin/) in tests that compare it
with the recordings of a real ComfyUI: a small HTTP client, and the normalisation of what
differs between runs (ids, timestamps, tracebacks, the random part of temp file names)."""

from __future__ import annotations

import re
from typing import Any

import requests

from devtools.comfyui_standin import ComfyUIStandIn
from tests.support.waiting import wait_for

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TEMP_NAME_RE = re.compile(r"ComfyUI_temp_[a-z]{5}_")
TIMEOUT = 10.0


def normalise(value: Any, ids: bool = True) -> Any:
    """Blank out what differs between runs: timestamps, tracebacks, temp name parts and,
    unless `ids` is False, prompt ids."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            key = normalise(key, ids)
            if key == "timestamp":
                out[key] = 0
            elif key == "traceback":
                out[key] = []
            else:
                out[key] = normalise(item, ids)
        return out
    if isinstance(value, list):
        return [normalise(item, ids) for item in value]
    if isinstance(value, str):
        value = UUID_RE.sub("<id>", value) if ids else value
        return TEMP_NAME_RE.sub("ComfyUI_temp_xxxxx_", value)
    return value


def only_entry(history: dict[str, Any]) -> dict[str, Any]:
    assert len(history) == 1, history
    return next(iter(history.values()))


class Client:
    """requests against one stand-in, with the few calls the comparisons repeat."""

    def __init__(self, standin: ComfyUIStandIn) -> None:
        self.standin = standin
        self.base = standin.base_url
        self.session = requests.Session()

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(self.base + path, timeout=TIMEOUT, **kwargs)

    def head(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.head(self.base + path, timeout=TIMEOUT, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.post(self.base + path, timeout=TIMEOUT, **kwargs)

    def submit(self, body: dict[str, Any]) -> str:
        response = self.post("/prompt", json=body)
        assert response.status_code == 200, response.text
        return response.json()["prompt_id"]

    def history(self, prompt_id: str) -> dict[str, Any]:
        return self.get(f"/history/{prompt_id}").json()

    def finished(self, prompt_id: str) -> dict[str, Any]:
        return only_entry(wait_for(lambda: self.history(prompt_id), timeout=TIMEOUT))

    def run(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        prompt_id = self.submit(body)
        return prompt_id, self.finished(prompt_id)

    def running_id(self) -> str | None:
        running = self.get("/queue").json()["queue_running"]
        return running[0][1] if running else None
