"""Fixtures shared by every test tier: recorded ComfyUI answers and a clean container state."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from comfy_core import reset_container_state
from tests.support.recordings import recording as load_recording
from tests.support.recordings import recording_meta as load_recording_meta

COMFYUI_BASE_URL = "http://comfy.test:8188"

# What every test starts from (the local stack's handlers see the same AWS values).
_SET = {
    "COMFYUI_BASE_URL": COMFYUI_BASE_URL,
    "WORKFLOW_BUCKET": "workflow-bucket",
    "WORKFLOW_PREFIX": "workflows/",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}

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
    # An endpoint would send boto3 past moto's in-process interception (mock_aws).
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_LAMBDA",
    "AWS_ENDPOINT_URL_S3",
    # The archive, the archiver and events: off unless a test turns them on.
    "IMAGE_BUCKET",
    "IMAGE_PREFIX",
    "ARCHIVE_TYPES",
    "ARCHIVE_MAX_ITEMS",
    "PRESIGN_EXPIRY_SECONDS",
    "ARCHIVER_FUNCTION_NAME",
    "EVENT_BUS_NAME",
    "IDEMPOTENCY_TABLE",
    "IDEMPOTENCY_EXPIRY_SECONDS",
    "JOBS_DLQ_URL",
    "JOB_PREFIX",
    "WEBHOOK_SECRET_PARAMETER",
    "WEBHOOK_ALLOW_PRIVATE",
    "WEBHOOK_ALLOW_HTTP",
    "WEBHOOK_MAX_ATTEMPTS",
    "WEBHOOK_TIMEOUT",
    # The live watcher and the prompt-state table: off unless a test turns them on.
    "PROMPT_STATE_TABLE",
    "PROMPT_STATE_EXPIRY_SECONDS",
    "WATCHER_CLIENT_ID",
    "WATCHER_TICK_SECONDS",
    # A fleet: one backend (COMFYUI_BASE_URL above) unless a test lists more.
    "COMFYUI_BACKENDS_PARAMETER",
    "BACKENDS_CACHE_SECONDS",
    "BACKEND_GONE_GRACE_SECONDS",
    "COMFYUI_AUTH_PARAMETER",
)

# A running LocalStack (module-scoped e2e fixtures) points its in-process handlers at its moto
# server and Lambda endpoint through these, process-wide, and puts the old values back when it
# stops. They are taken out of the developer's environment once per session, before any stack
# starts; a test must not remove them while a stack runs.
_STACK_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_LAMBDA")


def _apply(patch: pytest.MonkeyPatch, unset: tuple[str, ...]) -> None:
    for name, value in _SET.items():
        patch.setenv(name, value)
    for name in unset:
        patch.delenv(name, raising=False)


@pytest.fixture(scope="session", autouse=True)
def clean_session_env() -> Iterator[None]:
    """The same known env for the whole session, so module-scoped fixtures (local stacks,
    the SAM transform) never see the developer's shell either; put back at the end."""
    with pytest.MonkeyPatch.context() as patch:
        _apply(patch, _UNSET)
        yield


@pytest.fixture
def recording() -> Callable[[str], Any]:
    return load_recording


@pytest.fixture
def recording_meta() -> Callable[[str], dict[str, Any]]:
    return load_recording_meta


@pytest.fixture(autouse=True)
def clean_container(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Known env and empty comfy_core caches around every test.

    Goes through `monkeypatch`, so a test's own `monkeypatch.setenv` wins (it runs later)
    and everything is put back afterwards. Settings are read lazily: a test that changes
    env after calling `get_settings()` must call `get_settings.cache_clear()` itself.
    """
    _apply(monkeypatch, tuple(name for name in _UNSET if name not in _STACK_ENV))
    reset_container_state()
    yield
    reset_container_state()
