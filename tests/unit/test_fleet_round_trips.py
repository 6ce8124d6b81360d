"""Round trips of a fleet (issue 13), counted: what routing and the prompt's recorded backend
cost per request. `python -m bench fleet` reports the same counts with times.

No sockets: each backend's ComfyUI is a FakeComfySession of its own (routed by base URL),
S3 and the prompt-state table are moto in-process. Clocks are fakes, so "once per 2 s"
and "once per cache lifetime" are counted, never waited for.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws

from comfy_core.comfyui import client as client_module
from comfy_core.config import get_settings
from comfy_core.fleet import routing
from comfy_core.fleet.pool import get_fleet
from comfy_core.fleet.routing import LOAD_CACHE_SECONDS, get_router
from comfy_core.live import state as prompt_state
from comfy_core.storage import s3_client
from comfy_core.workflows import ui as ui_workflows
from tests.support.fake_comfy import FakeComfySession
from tests.support.handlers import ROOT, event, invoke
from tests.support.jobs import create_prompt_state_table
from tests.support.recordings import recording

WORKFLOW_BUCKET = "workflow-bucket"  # tests/conftest.py sets it
IMAGE_BUCKET = "image-bucket"
PROMPT_STATE_TABLE = "prompt-state"
ONE = "http://comfy.test:8188"
FLEET = {"gpu-a": "http://gpu-a.test:8188", "gpu-b": "http://gpu-b.test:8188"}
FINISHED_ID = "11111111-2222-3333-4444-555555555555"  # history_id_success_preview


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Backends:
    """One FakeComfySession per ComfyUI base URL: every client the fleet builds talks to the
    session of its own backend, so calls are counted per backend."""

    def __init__(self, urls: dict[str, str]) -> None:
        self.by_name = {name: self._session() for name in urls}
        self._by_url = {url: self.by_name[name] for name, url in urls.items()}

    @staticmethod
    def _session() -> FakeComfySession:
        session = FakeComfySession()
        session.routes[("GET", "/prompt")] = (200, recording("prompt_get_idle"))
        session.routes[("GET", "/object_info")] = (200, recording("object_info_full"))
        session.routes[("POST", "/prompt")] = (200, recording("prompt_success"))
        return session

    def session_for(self, settings: Any) -> FakeComfySession:
        return self._by_url[settings.comfyui_base_url]

    def calls(self, name: str) -> list[str]:
        return [f"{call['method']} {call['path']}" for call in self.by_name[name].calls]

    def count(self, call: str) -> dict[str, int]:
        return {name: self.calls(name).count(call) for name in self.by_name}

    def clear(self) -> None:
        for session in self.by_name.values():
            session.calls.clear()


class DynamoOps:
    """DynamoDB operations comfy_core's prompt-state client makes, in order."""

    def __init__(self) -> None:
        self.names: list[str] = []
        prompt_state.dynamodb_client().meta.events.register("before-call.dynamodb", self._record)

    def _record(self, model: Any, **_: Any) -> None:
        self.names.append(model.name)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("PROMPT_STATE_TABLE", PROMPT_STATE_TABLE)
    get_settings.cache_clear()
    with mock_aws():
        s3 = s3_client()
        s3.create_bucket(Bucket=WORKFLOW_BUCKET)
        s3.create_bucket(Bucket=IMAGE_BUCKET)
        for name in ("empty_save", "text_label"):
            s3.put_object(Bucket=WORKFLOW_BUCKET, Key=f"workflows/{name}.json",
                          Body=(ROOT / "workflows" / f"{name}.json").read_bytes())
        create_prompt_state_table(PROMPT_STATE_TABLE)
        yield s3


def use_backends(monkeypatch: pytest.MonkeyPatch, urls: dict[str, str], base_url: str) -> Backends:
    monkeypatch.setenv("COMFYUI_BASE_URL", base_url)
    get_settings.cache_clear()
    backends = Backends(urls)
    monkeypatch.setattr(client_module, "_new_session", backends.session_for)
    return backends


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """One fake clock for the router's load cache and the node-definitions cache."""
    clock = Clock()
    monkeypatch.setattr(ui_workflows, "time", types.SimpleNamespace(monotonic=clock))
    monkeypatch.setattr(routing, "time", types.SimpleNamespace(monotonic=clock))
    return clock


def run(workflow: str = "empty_save") -> dict[str, Any]:
    status, body = invoke("run_workflow", event("run_workflow", pathParameters={"workflow_name": workflow},
                                                body="{}"))
    assert status == 200, body
    return body


# -- submission ------------------------------------------------------------------------------
def test_one_backend_routes_without_a_request_and_records_nothing(
        aws: Any, monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    backends = use_backends(monkeypatch, {"default": ONE}, ONE)
    ops = DynamoOps()
    for _ in range(3):
        body = run()
        assert body["backend"] == "default"
    # What one server always cost: the POST, and nothing asked or written for routing.
    assert backends.calls("default") == ["POST /prompt"] * 3
    assert ops.names == []


def test_two_backends_ask_each_load_once_per_two_seconds_and_definitions_once_per_ttl(
        aws: Any, monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    backends = use_backends(monkeypatch, FLEET, ",".join(f"{name}={url}" for name, url in FLEET.items()))
    # The router's load cache reads the clock it was built with (time.monotonic): this
    # container's router reads the test's instead.
    monkeypatch.setattr(get_router(), "_clock", clock)
    ops = DynamoOps()

    # A burst inside the load cache's lifetime.
    sent = []
    for _ in range(6):
        sent.append(run()["backend"])
        clock.advance(0.1)
    assert backends.count("GET /prompt") == {"gpu-a": 1, "gpu-b": 1}
    assert backends.count("GET /object_info") == {"gpu-a": 1, "gpu-b": 1}
    # The router counts its own submissions: an idle fleet gets the burst in turn.
    assert backends.count("POST /prompt") == {"gpu-a": 3, "gpu-b": 3}
    assert sorted(set(sent)) == ["gpu-a", "gpu-b"]
    # In all: the six POSTs, and one load and one definitions request per backend.
    assert get_fleet().request_count == 6 + 2 * len(FLEET)
    # Each submission writes its backend once, before the POST; nothing is read.
    assert ops.names == ["UpdateItem"] * 6

    # Past LOAD_CACHE_SECONDS: each backend's load is asked again, once.
    backends.clear()
    clock.advance(LOAD_CACHE_SECONDS)
    run()
    run()
    assert backends.count("GET /prompt") == {"gpu-a": 1, "gpu-b": 1}
    assert backends.count("GET /object_info") == {"gpu-a": 0, "gpu-b": 0}

    # Past the definitions' lifetime: /object_info once more per backend.
    backends.clear()
    clock.advance(ui_workflows.OBJECT_INFO_TTL)
    run()
    assert backends.count("GET /object_info") == {"gpu-a": 1, "gpu-b": 1}


# -- status of a recorded prompt ----------------------------------------------------------------
@pytest.mark.parametrize("archive", [False, True], ids=["no archive", "with the archive"])
def test_status_of_a_recorded_finished_prompt_is_one_lookup_and_one_request_to_its_backend(
        aws: Any, monkeypatch: pytest.MonkeyPatch, archive: bool) -> None:
    backends = use_backends(monkeypatch, FLEET, ",".join(f"{name}={url}" for name, url in FLEET.items()))
    if archive:
        monkeypatch.setenv("IMAGE_BUCKET", IMAGE_BUCKET)
        get_settings.cache_clear()
    prompt_state.record_backend(FINISHED_ID, "gpu-b", "empty_preview")
    backends.by_name["gpu-b"].routes[("GET", f"/history/{FINISHED_ID}")] = (
        200, recording("history_id_success_preview"))
    ops = DynamoOps()
    s3_ops: list[str] = []
    s3_client().meta.events.register("before-call.s3", lambda model, **_: s3_ops.append(model.name))

    status, body = invoke("task_status", event("task_status"))

    assert (status, body["status"]) == (200, "completed")
    assert ops.names == ["GetItem"]  # where the prompt is
    assert backends.calls("gpu-b") == [f"GET /history/{FINISHED_ID}"]
    assert backends.calls("gpu-a") == []  # nobody else is asked
    # With an archive, the manifest read a one-server deployment makes too.
    assert s3_ops == (["GetObject"] if archive else [])
