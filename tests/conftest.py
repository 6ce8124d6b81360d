"""Fixtures shared by every test tier: recorded ComfyUI answers and a clean container state."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

RECORDINGS = Path(__file__).parent / "fixtures" / "comfyui"
COMFYUI_BASE_URL = "http://comfy.test:8188"

# Settings a developer's shell may carry that would change what comfy_core does under test.
_UNSET = (
    "COMFYUI_PUBLIC_URL",
    "COMFYUI_CONNECT_TIMEOUT",
    "COMFYUI_READ_TIMEOUT",
    "COMFYUI_GET_RETRIES",
    "MAX_BODY_BYTES",
    "HISTORY_DEFAULT_MAX_ITEMS",
    "HISTORY_MAX_ITEMS_LIMIT",
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "IDEMPOTENCY_TABLE",
    "IDEMPOTENCY_EXPIRY_SECONDS",
    "JOBS_DLQ_URL",
    "JOB_PREFIX",
    "WEBHOOK_SECRET_PARAMETER",
    "WEBHOOK_ALLOW_PRIVATE",
    "WEBHOOK_ALLOW_HTTP",
    "WEBHOOK_MAX_ATTEMPTS",
    "WEBHOOK_TIMEOUT",
)


def load_recording(name: str) -> Any:
    """The recorded JSON body `tests/fixtures/comfyui/<name>.json`."""
    return json.loads((RECORDINGS / f"{name}.json").read_text(encoding="utf-8"))


def load_recording_meta(name: str) -> dict[str, Any]:
    """The request/response metadata `tests/fixtures/comfyui/<name>.headers.json`."""
    return json.loads((RECORDINGS / f"{name}.headers.json").read_text(encoding="utf-8"))


@pytest.fixture
def recording() -> Callable[[str], Any]:
    return load_recording


@pytest.fixture
def recording_meta() -> Callable[[str], dict[str, Any]]:
    return load_recording_meta


def _clear_caches() -> None:
    from comfy_core import reset_container_state

    reset_container_state()


@pytest.fixture(autouse=True)
def clean_container(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Known env and empty comfy_core caches around every test.

    Goes through `monkeypatch`, so a test's own `monkeypatch.setenv` wins (it runs later)
    and everything is put back afterwards. Settings are read lazily: a test that changes
    env after calling `get_settings()` must call `get_settings.cache_clear()` itself.
    """
    monkeypatch.setenv("COMFYUI_BASE_URL", COMFYUI_BASE_URL)
    monkeypatch.setenv("WORKFLOW_BUCKET", "workflow-bucket")
    monkeypatch.setenv("WORKFLOW_PREFIX", "workflows/")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in _UNSET:
        monkeypatch.delenv(name, raising=False)
    _clear_caches()
    yield
    _clear_caches()
