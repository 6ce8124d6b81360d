"""What answers may carry (issue 10, items 3, 6 and 10): every answer fits Lambda's 6 MB
response limit, none carries a job's webhook URL, and none shows ComfyUI's internals
(its private address, server paths, its command line). Handlers fed API Gateway events;
ComfyUI from recordings and from entries built to be big."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from comfy_core import answers
from tests.support.handlers import event
from tests.support.recordings import recording

LAMBDA_RESPONSE_LIMIT = 6 * 1024 * 1024  # bytes, Lambda's synchronous response payload limit
MB = 1_000_000
WEBHOOK = "https://hooks.example.com/comfy?token=s3cr3t-t0ken"
PID = "11111111-2222-3333-4444-555555555555"  # the id of the sample events


def big_entry(number: int, *, error: bool = False) -> tuple[str, dict[str, Any]]:
    """A finished prompt of ~1 MB of graph (a long prompt text) plus a job's extra_data,
    like those that made GET /api/history answer 18.9 MB."""
    prompt_id = f"{number:08d}-0000-4000-8000-000000000000"
    graph = {"1": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "x" * MB}},
             "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    extra = {"client_id": "c1", "comfy_serverless": {"workflow": "w", "job_id": "j", "webhook_url": WEBHOOK}}
    messages: list[Any] = [["execution_start", {"prompt_id": prompt_id, "timestamp": 1}]]
    if error:
        messages.append(["execution_error", {
            "prompt_id": prompt_id, "node_id": "2", "node_type": "PreviewAny", "timestamp": 2,
            "exception_type": "RuntimeError", "exception_message": "boom /srv/ComfyUI/nodes.py " * 20_000,
            "traceback": ['  File "/srv/ComfyUI/execution.py", line 496, in execute\n'] * 50,
        }])
    entry = {
        "prompt": [number, prompt_id, graph, extra, ["2"]],
        "outputs": {"2": {"text": ["y" * (MB // 2)]}},
        "status": {"status_str": "error" if error else "success", "completed": not error,
                   "messages": messages},
        "meta": {},
    }
    return prompt_id, entry


@pytest.fixture
def big_history(comfy) -> dict[str, Any]:
    history = dict(big_entry(n, error=(n == 3)) for n in range(1, 9))
    comfy.routes[("GET", "/history")] = (200, history)
    return history


def answer(name: str, **overrides: Any) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """(status, body, headers) of one handler, checked against Lambda's size limit."""
    from importlib import import_module

    handler = import_module(f"functions.{name}.app").lambda_handler
    from tests.support.lambda_context import FakeLambdaContext

    response = handler(event(name, **overrides), FakeLambdaContext())
    assert len(response["body"].encode("utf-8")) < LAMBDA_RESPONSE_LIMIT
    return response["statusCode"], json.loads(response["body"]), response["headers"]


# -- item 3: sizes --------------------------------------------------------------------------
def test_history_of_big_prompts_fits_and_leaves_graphs_out_by_default(big_history) -> None:
    status, body, headers = answer("history", queryStringParameters=None)
    assert status == 200 and list(body) == list(big_history)  # all eight, newest last
    first = body[next(iter(body))]
    assert first["prompt"][2] == {} and first["prompt"][3] == {"client_id": "c1"}
    assert first["outputs"]["2"]["text"][0].startswith("y" * 1000)  # outputs are kept
    assert "X-Truncated" not in headers


def test_history_with_graphs_is_cut_to_fit_and_says_so(big_history) -> None:
    status, body, headers = answer("history", queryStringParameters={"include_prompt": "true"})
    assert status == 200 and 0 < len(body) < len(big_history)
    assert list(body) == list(big_history)[-len(body):]  # the newest are kept
    assert headers["X-Truncated"] == "true"
    assert "X-Next-Offset" not in headers


def test_history_pages_from_an_offset_say_where_the_next_starts(big_history) -> None:
    status, body, headers = answer(
        "history", queryStringParameters={"include_prompt": "true", "offset": "0", "max_items": "8"})
    kept = len(body)
    assert status == 200 and list(body) == list(big_history)[:kept]
    assert headers["X-Next-Offset"] == str(kept) and headers["X-Truncated"] == "true"


def test_long_error_text_is_cut_with_a_marker(comfy, big_history) -> None:
    prompt_id, entry = big_entry(3, error=True)
    comfy.routes[("GET", f"/history/{PID}")] = (200, {PID: entry})
    status, body, _ = answer("task_status")
    message = body["error"]["exception_message"]
    assert status == 200 and body["status"] == "error"
    assert len(message) < answers.MAX_ERROR_CHARS + 100 and "[truncated" in message
    status, body, _ = answer("history_entry")
    [error] = [m[1] for m in body[PID]["status"]["messages"] if m[0] == "execution_error"]
    assert len(error["exception_message"]) < answers.MAX_ERROR_CHARS + 100


@pytest.mark.parametrize("query", [{"max_items": "101"}, {"offset": "-1"}, {"include_prompt": "yes"}])
def test_history_query_out_of_bounds_is_a_400(comfy, query) -> None:
    status, body, _ = answer("history", queryStringParameters=query)
    assert status == 400 and body["status_code"] == 400 and comfy.calls == []


# -- item 6: what the service put into extra_data never leaves ------------------------------
def test_no_answer_carries_a_jobs_webhook_url(comfy, big_history) -> None:
    _, entry = big_entry(1)
    comfy.routes[("GET", f"/history/{PID}")] = (200, {PID: copy.deepcopy(entry)})
    bodies = [
        answer("history", queryStringParameters=None)[1],
        answer("history", queryStringParameters={"include_prompt": "true", "max_items": "2"})[1],
        answer("history_entry")[1],
        answer("task_status")[1],
    ]
    for body in bodies:
        text = json.dumps(body)
        assert "s3cr3t-t0ken" not in text and "hooks.example.com" not in text
        assert "comfy_serverless" not in text
    entry = bodies[2][PID]
    assert entry["prompt"][3] == {"client_id": "c1"}  # what ComfyUI itself keeps stays
    assert entry["prompt"][2]["1"]["class_type"] == "PrimitiveStringMultiline"


# -- item 10: ComfyUI's internals ------------------------------------------------------------
@pytest.mark.parametrize("name", ["history_id_exec_error_bad_regex", "history_id_exec_error_save_outside_output"])
def test_error_answers_carry_no_server_paths(comfy, name) -> None:
    recorded = recording(name)
    [entry] = recorded.values()
    comfy.routes[("GET", f"/history/{PID}")] = (200, {PID: entry})
    assert "/srv/" in json.dumps(entry)  # the recording has them
    for handler in ("task_status", "history_entry"):
        status, body, _ = answer(handler)
        assert status == 200 and "/srv" not in json.dumps(body)
    status, body, _ = answer("history_entry")
    [error] = [m[1] for m in body[PID]["status"]["messages"] if m[0] == "execution_error"]
    assert any('File "execution.py", line 496' in line for line in error["traceback"]) or not error["traceback"]


def test_images_carry_no_comfyui_address_without_a_public_url(comfy) -> None:
    comfy.routes[("GET", f"/history/{PID}")] = (200, recording("history_id_success_preview"))
    for handler in ("task_status", "image"):
        status, body, _ = answer(handler)
        assert status == 200 and body["images"] and all(i["url"] is None for i in body["images"])
        assert "comfy.test" not in json.dumps(body)


def test_public_url_is_used_when_configured(comfy, monkeypatch) -> None:
    monkeypatch.setenv("COMFYUI_PUBLIC_URL", "https://comfy.example.com")
    comfy.routes[("GET", f"/history/{PID}")] = (200, recording("history_id_success_preview"))
    _, body, _ = answer("image")
    assert body["images"][0]["url"].startswith("https://comfy.example.com/view?filename=")


def test_status_answers_carry_no_command_line(comfy) -> None:
    comfy.routes[("GET", "/system_stats")] = (200, recording("system_stats"))
    for handler in ("system_status", "test_comfy"):
        status, body, _ = answer(handler)
        text = json.dumps(body)
        assert status == 200 and "argv" not in text and "--listen" not in text
        assert "comfy.test" not in text
