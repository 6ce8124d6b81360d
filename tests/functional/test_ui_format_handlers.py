"""UI-format workflows through the handlers: POST /api/convert, and a stored UI-format workflow
run by POST /api/workflow/{name} and by an event-driven job. S3 (and DynamoDB for jobs) from
moto; ComfyUI from recorded answers, its node definitions the recorded GET /object_info."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from comfy_core.workflows import ui as ui_workflows
from comfy_core.config import get_settings
from comfy_core.workflows.convert import ui_to_api
from comfy_core.workflows.store import get_store
from functions.run_job.app import lambda_handler as run_job
from tests.support.handlers import ROOT, event, invoke
from tests.support.jobs import IDEMPOTENCY_TABLE, create_idempotency_table, create_queue
from tests.support.lambda_context import FakeLambdaContext
from tests.support.recordings import recording

PROMPT_OK = (200, recording("prompt_success"))
OBJECT_INFO = (200, recording("object_info_full"))
SAMPLE = ROOT / "workflows" / "ui_text_label.json"
BUCKET = "workflow-bucket"


@pytest.fixture
def comfyui(comfy: Any) -> Any:
    comfy.routes.update({("GET", "/object_info"): OBJECT_INFO, ("POST", "/prompt"): PROMPT_OK})
    return comfy


def convert(body: Any) -> tuple[int, dict[str, Any]]:
    raw = body if isinstance(body, str) else json.dumps(body)
    return invoke("convert", event("convert", body=raw))


def run(name: str, body: Any) -> tuple[int, dict[str, Any]]:
    return invoke("run_workflow", event("run_workflow", pathParameters={"workflow_name": name},
                                        body=json.dumps(body)))


def sent_prompts(comfy: Any) -> list[dict[str, Any]]:
    return [c["json"]["prompt"] for c in comfy.calls if c["method"] == "POST" and c["path"] == "/prompt"]


def object_info_calls(comfy: Any) -> int:
    return comfy.paths("GET").count("/object_info")


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


# -- POST /api/convert --------------------------------------------------------------------------
def test_sample_event_converts_with_the_backends_node_definitions(comfyui: Any) -> None:
    status, body = invoke("convert", event("convert"))
    assert status == 200
    assert body == {"prompt": ui_to_api(json.loads(event("convert")["body"]), recording("object_info_full"))[0],
                    "warnings": []}
    assert body["prompt"]["2"] == {"inputs": {"filename_prefix": "converted", "images": ["1", 0]},
                                   "class_type": "SaveImage", "_meta": {"title": "Save Image"}}
    assert comfyui.paths() == ["/object_info"]  # nothing is queued


def test_node_definitions_are_fetched_once_per_container(comfyui: Any) -> None:
    document = load(ROOT / "tests" / "fixtures" / "comfyui" / "ui2api" / "09_subgraph.ui.json")
    first = convert(document)
    second = convert({"workflow": document})  # the PNG metadata form
    assert first == second
    assert first[1]["prompt"] == load(ROOT / "tests" / "fixtures" / "comfyui" / "ui2api" / "09_subgraph.api.json")
    assert object_info_calls(comfyui) == 1


@pytest.mark.parametrize(("body", "message"), [
    ("{not json", "not valid JSON"),
    ({"1": {"class_type": "EmptyImage", "inputs": {}}}, "already an API-format prompt"),
    ({"nodes": 5, "links": []}, "UI-format workflow"),
    ({"workflow": {"nodes": []}}, "UI-format workflow"),
])
def test_what_is_no_ui_workflow_is_a_400(comfyui: Any, body: Any, message: str) -> None:
    status, answer = convert(body)
    assert status == 400 and message in answer["error"]
    assert object_info_calls(comfyui) == 0


def test_what_cannot_be_converted_is_a_422_naming_the_node(comfyui: Any) -> None:
    document = json.loads(event("convert")["body"])
    document["nodes"][0]["type"] = "NotInstalledNode"
    status, answer = convert(document)
    assert status == 422
    assert answer["node_id"] == "1" and answer["node_type"] == "NotInstalledNode"
    assert "not installed" in answer["reason"] and answer["status_code"] == 422


def test_comfyui_down_is_a_502(comfy: Any) -> None:
    comfy.routes[("GET", "/object_info")] = requests.exceptions.ConnectionError("refused")
    status, answer = invoke("convert", event("convert"))
    assert status == 502 and answer["status_code"] == 502


# -- a stored UI-format workflow -------------------------------------------------------------------
def test_stored_ui_workflow_runs_as_the_editor_would_queue_it(s3: Any, comfyui: Any) -> None:
    status, body = run("ui_text_label", {})
    assert status == 200 and body["status"] == "success"
    (sent,) = sent_prompts(comfyui)
    assert sent == ui_to_api(load(SAMPLE), recording("object_info_full"))[0]
    assert sent["5"]["inputs"] == {"filename_prefix": ["4", 0], "images": ["1", 0]}  # through the reroute
    assert "8" not in sent and "6" not in sent  # the note and the reroute


def test_simple_and_advanced_formats_address_the_converted_prompt(s3: Any, comfyui: Any) -> None:
    assert run("ui_text_label", {"prompt": "a lighthouse at dawn"})[0] == 200
    assert run("ui_text_label", {"1": {"inputs": {"width": 100}}, "4": {"string_a": "x/"}})[0] == 200
    simple, advanced = sent_prompts(comfyui)
    assert simple["2"]["inputs"]["value"] == "a lighthouse at dawn"  # the "Label" text node
    assert advanced["1"]["inputs"]["width"] == 100 and advanced["4"]["inputs"]["string_a"] == "x/"


def test_conversion_is_cached_by_etag_and_node_definitions(s3: Any, comfyui: Any) -> None:
    for _ in range(3):
        assert run("ui_text_label", {})[0] == 200
    cache = ui_workflows.conversion_cache()
    assert (cache.conversions, cache.object_info_fetches, object_info_calls(comfyui)) == (1, 1, 1)
    assert get_store().downloads == 1
    # A new version of the file (a new ETag) is converted again; the definitions are still fresh.
    document = load(SAMPLE)
    document["nodes"][0]["widgets_values"][0] = 96
    s3.put_object(Bucket=BUCKET, Key="workflows/ui_text_label.json", Body=json.dumps(document))
    assert run("ui_text_label", {})[0] == 200
    assert sent_prompts(comfyui)[-1]["1"]["inputs"]["width"] == 96
    assert (cache.conversions, cache.object_info_fetches) == (2, 1)


def test_new_node_definitions_convert_again(s3: Any, comfyui: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run("ui_text_label", {})[0] == 200
    cache = ui_workflows.conversion_cache()
    monkeypatch.setattr(cache, "ttl", 0.0)  # the definitions are stale at once
    assert run("ui_text_label", {})[0] == 200
    assert (cache.object_info_fetches, cache.conversions) == (2, 1)  # same definitions: same digest
    changed = recording("object_info_full")
    changed["EmptyImage"]["display_name"] = "Blank Image"
    comfyui.routes[("GET", "/object_info")] = (200, changed)
    assert run("ui_text_label", {})[0] == 200
    assert cache.conversions == 2


def test_stored_ui_workflow_that_cannot_be_converted_is_a_422(s3: Any, comfyui: Any) -> None:
    document = load(SAMPLE)
    document["nodes"][0]["type"] = "NotInstalledNode"
    s3.put_object(Bucket=BUCKET, Key="workflows/broken_ui.json", Body=json.dumps(document))
    status, answer = run("broken_ui", {})
    assert status == 422
    assert (answer["workflow"], answer["node_id"], answer["node_type"]) == ("broken_ui", "1", "NotInstalledNode")
    assert sent_prompts(comfyui) == []


def test_a_png_metadata_document_runs_its_prompt_as_saved(s3: Any, comfyui: Any) -> None:
    """{"prompt": ..., "workflow": ...} (what ComfyUI writes into PNGs): the API prompt the
    editor queued is run as it is; the UI form beside it is not converted."""
    api = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
           "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "png"}}}
    s3.put_object(Bucket=BUCKET, Key="workflows/from_png.json",
                  Body=json.dumps({"prompt": api, "workflow": load(SAMPLE)}))
    assert run("from_png", {})[0] == 200
    assert sent_prompts(comfyui) == [api]
    assert object_info_calls(comfyui) == 0


# -- an event-driven job -------------------------------------------------------------------------
@pytest.fixture
def jobs(s3: Any, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    create_idempotency_table()
    monkeypatch.setenv("IDEMPOTENCY_TABLE", IDEMPOTENCY_TABLE)
    monkeypatch.setenv("JOBS_DLQ_URL", create_queue("jobs-dlq"))
    get_settings.cache_clear()
    return SimpleNamespace(s3=s3)


def test_an_event_driven_job_runs_a_ui_workflow_too(jobs: SimpleNamespace, comfyui: Any) -> None:
    answer = run_job({"workflow": "ui_text_label", "job_id": "ui-1", "prompt": "from a job"},
                     FakeLambdaContext())
    assert answer["status"] == "success"
    (sent,) = sent_prompts(comfyui)
    assert sent["2"]["inputs"]["value"] == "from a job"
    assert sent["5"]["class_type"] == "SaveImage"
