"""Round trips per request, counted: the figures `make bench` reports, asserted here.

Speed is never asserted; counts are. ComfyUI is faked with `responses` (its calls are
counted); S3 counts come from moto in-process with FakeComfySession injected as the
ComfyUI client, since moto and `responses` both patch the HTTP machinery and must not
share a test. No sockets either way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import responses
from moto import mock_aws

from comfy_core.config import get_settings
from comfy_core.storage import s3_client
from comfy_core.workflows.store import get_store
from tests.conftest import COMFYUI_BASE_URL
from tests.support.fake_comfy import FakeComfySession, use_session
from tests.support.handlers import ROOT, event, invoke
from tests.support.recordings import recording

FINISHED_ID = "11111111-2222-3333-4444-555555555555"  # events/*.json; history_id_success_preview
# From queue_running_and_pending.json.
RUNNING_ID = "29a077c4-a4d9-49c7-a4fe-a762e23c14a3"
PENDING_ID = "202dc9a5-af9d-439b-b60d-93a6066af86d"
IMAGE_BUCKET = "image-bucket"
WORKFLOW_BUCKET = "workflow-bucket"  # tests/conftest.py sets it


# -- ComfyUI round trips (responses) -----------------------------------------------------------
@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    # No archive and no archiver (IMAGE_BUCKET and ARCHIVER_FUNCTION_NAME are unset by
    # tests/conftest.py): this tier counts ComfyUI requests only.
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def comfy_paths(rsps: responses.RequestsMock) -> list[str]:
    return [call.request.path_url.split("?")[0] for call in rsps.calls]


def test_status_of_a_finished_prompt_is_one_comfyui_request(rsps: responses.RequestsMock) -> None:
    rsps.get(f"{COMFYUI_BASE_URL}/history/{FINISHED_ID}", json=recording("history_id_success_preview"))
    status, body = invoke("task_status", event("task_status"))
    assert (status, body["status"]) == (200, "completed")
    assert len(rsps.calls) == 1
    assert comfy_paths(rsps) == [f"/history/{FINISHED_ID}"]


@pytest.mark.parametrize(("prompt_id", "expected"), [(PENDING_ID, "pending"), (RUNNING_ID, "running")])
def test_status_of_an_unfinished_prompt_is_two_comfyui_requests(
    rsps: responses.RequestsMock, prompt_id: str, expected: str
) -> None:
    rsps.get(f"{COMFYUI_BASE_URL}/history/{prompt_id}", json={})  # ComfyUI: {} until it finishes
    rsps.get(f"{COMFYUI_BASE_URL}/queue", json=recording("queue_running_and_pending"))
    status, body = invoke("task_status", event("task_status", pathParameters={"prompt_id": prompt_id}))
    assert (status, body["status"]) == (200, expected)
    assert len(rsps.calls) == 2
    assert comfy_paths(rsps) == [f"/history/{prompt_id}", "/queue"]


# -- S3 round trips (moto in-process, ComfyUI injected) ----------------------------------------
class S3Ops:
    """S3 operations comfy_core's client makes, in order, with the request headers sent."""

    def __init__(self, client: Any) -> None:
        self.names: list[str] = []
        self.headers: list[dict[str, str]] = []
        client.meta.events.register("before-call.s3", self._record)

    def _record(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        self.names.append(model.name)
        self.headers.append(dict(params.get("headers") or {}))

    def clear(self) -> None:
        self.names.clear()
        self.headers.clear()


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    # No AWS_ENDPOINT_URL* and no archiver: tests/conftest.py unsets them.
    monkeypatch.setenv("IMAGE_BUCKET", IMAGE_BUCKET)
    get_settings.cache_clear()
    with mock_aws():
        client = s3_client()  # comfy_core's own client: hooks on it see every call it makes
        client.create_bucket(Bucket=IMAGE_BUCKET)
        client.create_bucket(Bucket=WORKFLOW_BUCKET)
        yield client


@pytest.fixture
def comfy(s3: Any, monkeypatch: pytest.MonkeyPatch) -> FakeComfySession:
    session = FakeComfySession()
    use_session(monkeypatch, session)
    return session


def put_manifest(s3: Any, prompt_id: str) -> None:
    """An archived prompt: the manifest the archiver writes, one record per output file."""
    entry = recording("history_id_success_preview")[prompt_id]
    files = [
        {"node_id": "2", **image, "s3_key": f"images/{prompt_id}/2/{image['filename']}", "archived": True}
        for image in entry["outputs"]["2"]["images"]
    ]
    manifest = {"prompt_id": prompt_id, "status": "success", "completed": True, "files": files}
    s3.put_object(Bucket=IMAGE_BUCKET, Key=f"images/{prompt_id}/manifest.json", Body=json.dumps(manifest))


def test_status_of_a_finished_archived_prompt_adds_one_s3_read(s3: Any, comfy: FakeComfySession) -> None:
    comfy.routes[("GET", f"/history/{FINISHED_ID}")] = (200, recording("history_id_success_preview"))
    put_manifest(s3, FINISHED_ID)
    ops = S3Ops(s3)
    status, body = invoke("task_status", event("task_status"))
    assert (status, body["status"]) == (200, "completed")
    assert all(image["download_url"] for image in body["images"])  # presigned locally, no request
    assert comfy.paths() == [f"/history/{FINISHED_ID}"]
    assert ops.names == ["GetObject"]  # the manifest


def test_status_of_a_pending_prompt_reads_nothing_from_s3(s3: Any, comfy: FakeComfySession) -> None:
    comfy.routes[("GET", f"/history/{PENDING_ID}")] = (200, {})
    comfy.routes[("GET", "/queue")] = (200, recording("queue_running_and_pending"))
    ops = S3Ops(s3)
    status, body = invoke("task_status", event("task_status", pathParameters={"prompt_id": PENDING_ID}))
    assert (status, body["status"]) == (200, "pending")
    assert comfy.paths() == [f"/history/{PENDING_ID}", "/queue"]
    assert ops.names == []


def test_running_a_cached_workflow_is_one_conditional_s3_request_and_one_post(
    s3: Any, comfy: FakeComfySession
) -> None:
    workflow = (ROOT / "workflows" / "text_label.json").read_bytes()
    s3.put_object(Bucket=WORKFLOW_BUCKET, Key="workflows/text_label.json", Body=workflow)
    comfy.routes[("POST", "/prompt")] = (200, recording("prompt_success"))
    assert invoke("run_workflow", event("run_workflow"))[0] == 200  # first request: downloads it
    assert get_store().downloads == 1
    ops = S3Ops(s3)
    comfy.calls.clear()

    status, body = invoke("run_workflow", event("run_workflow"))

    assert (status, body["status"]) == (200, "success")
    assert ops.names == ["GetObject"]
    assert "If-None-Match" in ops.headers[0]  # conditional: S3 answers 304 without a body
    assert get_store().downloads == 1  # no body downloaded
    assert [(call["method"], call["path"]) for call in comfy.calls] == [("POST", "/prompt")]
