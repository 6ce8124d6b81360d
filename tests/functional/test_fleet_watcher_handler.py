"""The watcher function in front of two ComfyUIs (issue 13): one socket, lease and archive
path per backend in the one invocation. Two ComfyUI stand-ins on 127.0.0.1 (real HTTP and
WebSocket); S3, DynamoDB and EventBridge from moto in process.

A prompt finished on each backend before the watcher connects is caught up from that
backend's history; a prompt sent to each while it is connected is archived from its socket.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from moto import mock_aws

from comfy_core import reset_container_state
from comfy_core.archive import sweep as archive
from comfy_core.live import state as prompt_state
from comfy_core.live import watcher
from comfy_core.storage import s3_client
from devtools.comfyui_standin import ComfyUIStandIn
from functions.watcher.app import lambda_handler as watcher_handler
from tests.support.handlers import event
from tests.support.jobs import capture_events, create_prompt_state_table, events_in
from tests.support.lambda_context import FakeLambdaContext
from tests.support.recordings import workflow
from tests.support.waiting import wait_for

BUCKET = "image-bucket"
TABLE = "prompt-state"
CLIENT_ID = "stack-watcher"
WATCH_SECONDS = 4.0  # connected this long: the live prompts take milliseconds on the stand-ins


@pytest.fixture
def standins(tmp_path: Path) -> Iterator[dict[str, ComfyUIStandIn]]:
    started = {name: ComfyUIStandIn(tmp_path / name, delay=0.0).start() for name in ("a", "b")}
    yield started
    for standin in started.values():
        standin.stop()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, standins: dict[str, ComfyUIStandIn]) -> Iterator[str]:
    monkeypatch.setenv("COMFYUI_BASE_URL", ",".join(f"{name}={s.base_url}" for name, s in standins.items()))
    monkeypatch.setenv("IMAGE_BUCKET", BUCKET)
    monkeypatch.setenv("PROMPT_STATE_TABLE", TABLE)
    monkeypatch.setenv("WATCHER_CLIENT_ID", CLIENT_ID)
    reset_container_state()
    with mock_aws():
        s3_client().create_bucket(Bucket=BUCKET)
        create_prompt_state_table(TABLE)
        yield capture_events({"source": ["comfy-serverless-api"], "detail-type": ["ComfyUI Prompt Completed"]})


class ShortContext(FakeLambdaContext):
    def __init__(self, seconds: float) -> None:
        super().__init__(function_name="watcher")
        self.end = time.monotonic() + watcher.SHUTDOWN_MARGIN + seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.end - time.monotonic()) * 1000))


def post_prompt(standin: ComfyUIStandIn, tag: str) -> str:
    """A prompt of ours sent straight to one backend, as jobs.run_workflow sends it."""
    graph = workflow("empty_save.json")
    graph["2"]["inputs"]["filename_prefix"] = f"fleet_{tag}"
    answer = requests.post(f"{standin.base_url}/prompt", timeout=5, json={
        "prompt": graph, "client_id": CLIENT_ID, "extra_data": {"comfy_serverless": {"workflow": "empty_save"}}})
    answer.raise_for_status()
    return answer.json()["prompt_id"]


def finished(standin: ComfyUIStandIn, prompt_id: str) -> bool:
    return bool(requests.get(f"{standin.base_url}/history/{prompt_id}", timeout=5).json())


def test_one_watcher_per_backend_archives_the_prompts_of_both(aws: str,
                                                               standins: dict[str, ComfyUIStandIn]) -> None:
    earlier = {name: post_prompt(standin, f"earlier_{name}") for name, standin in standins.items()}
    for name, prompt_id in earlier.items():
        wait_for(lambda: finished(standins[name], prompt_id), 10, what=f"{name}'s first prompt")
    live: dict[str, str] = {}

    def while_connected() -> None:
        for standin in standins.values():
            wait_for(lambda: standin.ws.connected(CLIENT_ID), 10, what="watcher connected")
        for name, standin in standins.items():
            live[name] = post_prompt(standin, f"live_{name}")

    helper = threading.Thread(target=while_connected)
    helper.start()
    try:
        summary: dict[str, Any] = watcher_handler(event("watcher_scheduled"), ShortContext(WATCH_SECONDS))
    finally:
        helper.join()
    assert summary["status"] == "handed_over", summary
    assert {name: part["connects"] for name, part in summary["backends"].items()} == {"a": 1, "b": 1}
    assert summary["connects"] == 2
    for name in standins:
        for prompt_id in (earlier[name], live[name]):
            manifest = archive.load_manifest(prompt_id)
            assert manifest is not None and manifest["backend"] == name, (name, prompt_id)
            assert manifest["files"][0]["archived"] is True
        assert prompt_state.load(live[name])["backend"] == name  # progress saved under its name
        assert prompt_state.load(f"lease#{name}") is None  # each lease released for the next run
    announced = {item["detail"]["prompt_id"]: item["detail"]["backend"] for item in events_in(aws)}
    assert announced == {**{pid: name for name, pid in earlier.items()}, **{pid: name for name, pid in live.items()}}
