"""POST /api/workflow/{workflow_name} end to end through the handler."""

from __future__ import annotations

import json
import uuid

import pytest

from comfy_core import jobs
from comfy_core.config import get_settings
from comfy_core.workflows.store import get_store
from functions.run_workflow.app import lambda_handler
from tests.support.handlers import event, invoke
from tests.support.lambda_context import FakeLambdaContext
from tests.support.recordings import recording

PROMPT_OK = (200, recording("prompt_success"))


def run(name: str, body, **changes):
    raw = body if isinstance(body, str) or body is None else json.dumps(body)
    path = {"workflow_name": name}
    return invoke("run_workflow", event("run_workflow", pathParameters=path, body=raw, **changes))


def submitted(comfy) -> dict:
    posts = [c for c in comfy.calls if c["method"] == "POST" and c["path"] == "/prompt"]
    assert len(posts) == 1, "POST /prompt must be sent exactly once"
    return posts[0]["json"]


def test_simple_format_patches_text_node_and_answers_seed_shape(s3, comfy):
    comfy.routes[("POST", "/prompt")] = PROMPT_OK
    status, body = run("text_label", {"prompt": "a lighthouse at dawn"})
    assert status == 200
    assert set(body) >= {"status", "prompt_id", "node_errors", "error", "client_id"}
    assert body["status"] == "success" and body["error"] is None and body["node_errors"] == {}
    sent = submitted(comfy)
    assert sent["prompt"]["6"]["inputs"]["value"] == "a lighthouse at dawn"
    uuid.UUID(sent["prompt_id"])  # our own id, so it is known even if the answer is lost
    assert body["prompt_id"] == sent["prompt_id"]  # and the one ComfyUI echoes is passed on
    assert sent["client_id"] == body["client_id"]
    assert "origin" not in {k.lower() for k in comfy.calls[0]["headers"]}


def test_wrapped_workflow_file_is_unwrapped_and_sampler_params_applied(s3, comfy):
    comfy.routes[("POST", "/prompt")] = PROMPT_OK
    status, _ = run("sd15_txt2img", {"prompt": "a red fox", "negative_prompt": "blur",
                                     "seed": 42, "steps": 12, "width": 768})
    assert status == 200
    graph = submitted(comfy)["prompt"]
    assert "prompt" not in graph  # the {"prompt": {...}} wrapper is not sent as a node
    assert graph["6"]["inputs"]["text"] == "a red fox"
    assert graph["7"]["inputs"]["text"] == "blur"
    assert graph["3"]["inputs"]["seed"] == 42 and graph["3"]["inputs"]["steps"] == 12
    assert graph["5"]["inputs"]["width"] == 768


def test_advanced_format_merges_inputs(s3, comfy):
    comfy.routes[("POST", "/prompt")] = PROMPT_OK
    status, _ = run("empty_save", {"1": {"inputs": {"width": 128}}, "2": {"filename_prefix": "x"}})
    assert status == 200
    graph = submitted(comfy)["prompt"]
    assert graph["1"]["inputs"]["width"] == 128 and graph["1"]["inputs"]["height"] == 48
    assert graph["2"]["inputs"]["filename_prefix"] == "x"


@pytest.mark.parametrize(
    ("name", "body", "status", "text"),
    [
        ("text_label", {"prompt": "x", "target_node": "7"}, 400, "Target node 7 is not a text input node"),
        ("empty_save", {"prompt": "x"}, 400, "No suitable text input node found in workflow"),
        ("text_label", {"prompt": "x", "target_node": "41"}, 400, "41"),
        ("text_label", {"prompt": "x", "colour": "red"}, 400, "colour"),
        ("empty_save", {"99": {"inputs": {}}}, 400, "99"),
        ("no_such_flow", {"prompt": "x"}, 404, "not found"),
        ("bad name!", {"prompt": "x"}, 400, "Invalid workflow name"),
        ("..", {}, 400, "Invalid workflow name"),
        ("text_label", "{not json", 400, "not valid JSON"),
        ("text_label", "[1, 2]", 400, "JSON object"),
        ("text_label", {"prompt": "x", "steps": "many"}, 400, "steps"),
    ],
)
def test_bad_requests_get_4xx_envelope_and_nothing_is_submitted(s3, comfy, name, body, status, text):
    got, answer = run(name, body)
    assert got == status
    assert answer["status_code"] == status and text in answer["error"]
    assert comfy.paths("POST") == []


def test_oversized_body_is_refused(s3, comfy, monkeypatch):
    monkeypatch.setenv("MAX_BODY_BYTES", "1000")
    from comfy_core.config import get_settings

    get_settings.cache_clear()
    status, answer = run("text_label", {"prompt": "x" * 2000})
    assert status == 400 and "larger than 1000 bytes" in answer["error"]
    assert comfy.calls == []


def test_ui_format_workflow_that_cannot_be_converted_gets_422_naming_the_node(s3, comfy):
    """A UI-format file is converted before it runs (tests/functional/test_ui_format_handlers.py);
    only what cannot be converted is refused."""
    comfy.routes[("GET", "/object_info")] = (200, recording("object_info_full"))
    s3.put_object(Bucket="workflow-bucket", Key="workflows/ui_export.json",
                  Body=json.dumps({"nodes": [{"id": 3, "type": "NoSuchNode", "mode": 0}], "links": [],
                                   "version": 0.4}))
    status, answer = run("ui_export", {"prompt": "x"})
    assert status == 422 and (answer["node_id"], answer["node_type"]) == ("3", "NoSuchNode")


def test_comfyui_validation_error_comes_back_as_400_with_node_errors(s3, comfy):
    comfy.routes[("POST", "/prompt")] = (400, recording("prompt_error_missing_model"))
    status, answer = run("sd15_txt2img", {"prompt": "x"})
    assert status == 400 and answer["status_code"] == 400
    assert answer["node_errors"]["1"]["errors"][0]["type"] == "value_not_in_list"
    assert answer["comfyui_error"]["type"] == "prompt_outputs_failed_validation"


def test_partial_node_errors_are_passed_on(s3, comfy):
    comfy.routes[("POST", "/prompt")] = (200, recording("prompt_success_partial_node_errors"))
    status, answer = run("empty_save", {})
    assert status == 200 and "3" in answer["node_errors"]


@pytest.mark.parametrize(
    ("answer", "status"),
    [((500, "500 Internal Server Error\n\nServer got itself in trouble"), 502), ((200, "<html>"), 502)],
)
def test_comfyui_server_errors_are_502_without_their_text(s3, comfy, answer, status):
    comfy.routes[("POST", "/prompt")] = answer
    got, body = run("empty_save", {})
    assert got == status and "trouble" not in body["error"] and "<html>" not in body["error"]
    assert len(comfy.paths("POST")) == 1  # never retried


def test_cached_workflow_costs_one_conditional_get_and_one_post(s3, comfy):
    from comfy_core.storage import s3_client

    comfy.routes[("POST", "/prompt")] = PROMPT_OK
    assert run("empty_save", {})[0] == 200
    calls: list[str] = []
    s3_client().meta.events.register("after-call.s3", lambda event_name, **_: calls.append(event_name.rsplit(".", 1)[-1]))
    comfy.calls.clear()
    assert run("empty_save", {})[0] == 200
    assert calls == ["GetObject"]  # the conditional GET (If-None-Match): 304, no body
    assert get_store().downloads == 1
    assert comfy.paths() == ["/prompt"]


def test_changed_workflow_is_downloaded_again(s3, comfy):
    comfy.routes[("POST", "/prompt")] = PROMPT_OK
    run("empty_save", {})
    s3.put_object(Bucket="workflow-bucket", Key="workflows/empty_save.json",
                  Body=json.dumps({"1": {"class_type": "EmptyImage", "inputs": {"width": 8}},
                                   "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}}))
    comfy.calls.clear()
    run("empty_save", {})
    assert submitted(comfy)["prompt"]["1"]["inputs"]["width"] == 8


def test_full_queue_answers_429_with_retry_after_and_submits_nothing(s3, comfy, monkeypatch):
    from comfy_core.config import get_settings

    busy = recording("prompt_get_busy")  # queue_remaining 4: one running, three pending
    monkeypatch.setenv("MAX_QUEUE_DEPTH", str(busy["exec_info"]["queue_remaining"]))
    get_settings.cache_clear()
    comfy.routes[("GET", "/prompt")] = (200, busy)
    comfy.routes[("POST", "/prompt")] = PROMPT_OK
    response = lambda_handler(event("run_workflow"), FakeLambdaContext())  # the headers too
    assert response["statusCode"] == 429 and response["headers"]["Retry-After"] == "10"
    assert json.loads(response["body"])["status_code"] == 429
    assert comfy.paths("POST") == []
    comfy.routes[("GET", "/prompt")] = (200, recording("prompt_get_idle"))
    assert run("text_label", {"prompt": "x"})[0] == 200
    assert comfy.paths()[-2:] == ["/prompt", "/prompt"]  # GET /prompt, then POST /prompt


def test_no_queue_check_by_default(s3, comfy):
    comfy.routes[("POST", "/prompt")] = PROMPT_OK
    assert run("text_label", {"prompt": "x"})[0] == 200
    assert [c["method"] for c in comfy.calls] == ["POST"]


def test_submitted_event_can_be_switched_off(s3, comfy, monkeypatch):
    from comfy_core.announce import notify
    from comfy_core.config import get_settings

    sent: list = []
    monkeypatch.setattr(notify, "prompt_submitted", lambda answer, **kw: sent.append(answer["prompt_id"]))
    comfy.routes[("POST", "/prompt")] = PROMPT_OK
    assert run("text_label", {"prompt": "x"})[0] == 200
    assert len(sent) == 1  # on by default
    monkeypatch.setenv("ANNOUNCE_SUBMISSIONS", "false")
    get_settings.cache_clear()
    assert run("text_label", {"prompt": "x"})[0] == 200
    assert len(sent) == 1


def test_with_the_live_watcher_prompts_go_out_under_its_client_id_and_answers_keep_theirs(
        s3, comfy, monkeypatch):
    """Routing (issue 12): ComfyUI sends a prompt's messages only to the socket of its
    client_id, so every prompt is submitted under the watcher's; the caller still gets the
    client_id it sent (or the one made up for it), also from a keyed retry."""
    monkeypatch.setenv("WATCHER_CLIENT_ID", "stack-watcher")
    get_settings.cache_clear()
    comfy.routes[("POST", "/prompt")] = PROMPT_OK
    status, body = run("text_label", {"prompt": "x", "client_id": "my-socket"})
    assert status == 200 and body["client_id"] == "my-socket"
    sent = submitted(comfy)
    assert sent["client_id"] == "stack-watcher"
    assert sent["extra_data"]["comfy_serverless"]["client_id"] == "my-socket"
    # A keyed retry that finds the prompt queued answers with the first answer's client_id.
    item = [7, sent["prompt_id"], sent["prompt"], {"client_id": "stack-watcher", **sent["extra_data"]}, []]
    assert jobs._submitted_before(FakeQueue(item), sent["prompt_id"])["client_id"] == "my-socket"


class FakeQueue:
    def __init__(self, item: list) -> None:
        self.item = item

    def queue(self) -> dict:
        return {"queue_running": [self.item], "queue_pending": []}
