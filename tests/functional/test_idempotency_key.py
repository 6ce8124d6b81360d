"""POST /api/workflow with an Idempotency-Key header: one run per key (DynamoDB, moto)."""

from __future__ import annotations

import json

import pytest
import requests

from comfy_core.config import get_settings
from tests.support.handlers import event, invoke
from tests.support.recordings import recording
from tests.support.jobs import IDEMPOTENCY_TABLE, create_idempotency_table


@pytest.fixture
def table(s3, monkeypatch):
    create_idempotency_table()
    monkeypatch.setenv("IDEMPOTENCY_TABLE", IDEMPOTENCY_TABLE)
    get_settings.cache_clear()


def post(body: dict, key: str | None, name: str = "text_label") -> tuple[int, dict]:
    evt = event("run_workflow", pathParameters={"workflow_name": name}, body=json.dumps(body))
    if key is not None:
        evt["headers"] = {**evt["headers"], "Idempotency-Key": key}
    return invoke("run_workflow", evt)


def posts(comfy) -> int:
    return len(comfy.paths("POST"))


def test_same_key_returns_first_answer_and_runs_once(table, comfy):
    comfy.routes[("POST", "/prompt")] = (200, recording("prompt_success"))
    first = post({"prompt": "a fox"}, "order-42")
    second = post({"prompt": "a fox"}, "order-42")
    assert first[0] == second[0] == 200
    assert first[1] == second[1]  # same prompt_id, same client_id
    assert posts(comfy) == 1
    assert post({"prompt": "a fox"}, "order-43")[0] == 200
    assert posts(comfy) == 2  # another key is another run


def test_same_key_for_a_different_request_is_422(table, comfy):
    comfy.routes[("POST", "/prompt")] = (200, recording("prompt_success"))
    post({"prompt": "a fox"}, "order-42")
    status, body = post({"prompt": "a wolf"}, "order-42")
    assert status == 422 and body["status_code"] == 422 and "different request" in body["error"]
    assert posts(comfy) == 1


def test_a_failed_run_is_not_remembered(table, comfy):
    comfy.routes[("POST", "/prompt")] = (503, "busy")
    assert post({"prompt": "a fox"}, "order-42")[0] == 502
    comfy.routes[("POST", "/prompt")] = (200, recording("prompt_success"))
    assert post({"prompt": "a fox"}, "order-42")[0] == 200
    assert posts(comfy) == 2


def test_bad_key_and_bad_name_are_400_before_any_io(table, comfy):
    assert post({"prompt": "x"}, "bad key with spaces")[0] == 400
    assert post({"prompt": "x"}, "k", name="../etc")[0] == 400
    assert comfy.calls == []


def test_without_the_header_every_post_runs(table, comfy):
    comfy.routes[("POST", "/prompt")] = (200, recording("prompt_success"))
    post({"prompt": "a fox"}, None)
    post({"prompt": "a fox"}, None)
    assert posts(comfy) == 2


# -- a POST /prompt that timed out (issue 10, item 2) -------------------------------------
def _as_queued(sent: dict) -> list:
    """The queue item ComfyUI makes of a POST /prompt body: [number, id, graph, extra, outputs]."""
    return [7, sent["prompt_id"], sent["prompt"], {"client_id": sent["client_id"], **sent["extra_data"]}, ["2"]]


def test_a_timed_out_submission_answers_its_id_and_the_retry_never_posts_it_again(table, comfy):
    """ComfyUI paused: the POST times out, but ComfyUI queues the prompt when it resumes. The
    504 names the prompt id; the retry with the same key finds that prompt instead of
    running a second one."""
    comfy.routes[("POST", "/prompt")] = requests.exceptions.ReadTimeout("ComfyUI paused")
    status, body = post({"prompt": "a fox"}, "order-42")
    assert status == 504 and body["status_code"] == 504
    sent = comfy.calls[-1]["json"]
    assert body["prompt_id"] == sent["prompt_id"]

    comfy.routes[("GET", "/queue")] = (200, {"queue_running": [_as_queued(sent)], "queue_pending": []})
    comfy.routes[("POST", "/prompt")] = (200, recording("prompt_success"))
    status, again = post({"prompt": "a fox"}, "order-42")
    assert status == 200
    assert again["prompt_id"] == sent["prompt_id"] and again["client_id"] == sent["client_id"]
    assert posts(comfy) == 1


def test_a_timed_out_submission_that_already_finished_is_found_in_history(table, comfy):
    comfy.routes[("POST", "/prompt")] = requests.exceptions.ReadTimeout("ComfyUI paused")
    post({"prompt": "a fox"}, "order-42")
    sent = comfy.calls[-1]["json"]
    entry = {"prompt": _as_queued(sent), "outputs": {}, "status": {"status_str": "success", "completed": True}}
    comfy.routes[("GET", f"/history/{sent['prompt_id']}")] = (200, {sent["prompt_id"]: entry})
    comfy.routes[("POST", "/prompt")] = (200, recording("prompt_success"))
    status, again = post({"prompt": "a fox"}, "order-42")
    assert (status, again["prompt_id"]) == (200, sent["prompt_id"])
    assert posts(comfy) == 1


def test_a_retry_after_a_timeout_that_never_reached_comfyui_submits_once_more(table, comfy):
    comfy.routes[("POST", "/prompt")] = requests.exceptions.ReadTimeout("lost on the way")
    post({"prompt": "a fox"}, "order-42")
    first_id = comfy.calls[-1]["json"]["prompt_id"]
    comfy.routes[("POST", "/prompt")] = (200, {"prompt_id": first_id, "number": 3, "node_errors": {}})
    status, again = post({"prompt": "a fox"}, "order-42")
    assert (status, again["prompt_id"]) == (200, first_id)  # the same id: one prompt at most
    assert posts(comfy) == 2
