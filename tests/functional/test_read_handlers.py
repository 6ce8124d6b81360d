"""The read-only endpoints, fed the sample events and recorded ComfyUI answers."""

from __future__ import annotations

import requests

from tests.support.handlers import event, invoke
from tests.support.recordings import recording

PID = "11111111-2222-3333-4444-555555555555"  # the id in the sample events and recording


def test_task_status_completed_from_one_history_request(comfy, monkeypatch):
    monkeypatch.setenv("COMFYUI_PUBLIC_URL", "http://comfy.test:8188")
    comfy.routes[("GET", f"/history/{PID}")] = (200, recording("history_id_success_preview"))
    status, body = invoke("task_status", event("task_status"))
    assert status == 200 and body["status"] == "completed"
    assert [i["type"] for i in body["images"]] == ["temp", "temp"]
    assert body["images"][0]["url"].startswith("http://comfy.test:8188/view?filename=ComfyUI_temp_oncmo_00001_.png")
    assert body["execution_time"] == 0.002
    assert len(comfy.calls) == 1


def test_task_status_pending_counts_queue_order(comfy):
    queue = recording("queue_running_and_pending")
    pending = sorted(queue["queue_pending"], key=lambda item: item[0])
    last = pending[-1][1]
    comfy.routes[("GET", f"/history/{last}")] = (200, {})
    comfy.routes[("GET", "/queue")] = (200, queue)
    evt = event("task_status", pathParameters={"prompt_id": last})
    status, body = invoke("task_status", evt)
    assert (status, body["status"], body["queue_position"]) == (200, "pending", len(pending))
    assert len(comfy.calls) == 2


def test_task_status_not_found_and_bad_id(comfy):
    comfy.routes[("GET", f"/history/{PID}")] = (200, {})
    comfy.routes[("GET", "/queue")] = (200, recording("queue_empty"))
    assert invoke("task_status", event("task_status"))[1]["status"] == "not_found"
    status, body = invoke("task_status", event("task_status", pathParameters={"prompt_id": "../etc"}))
    assert status == 400 and body["status_code"] == 400


def test_comfyui_unreachable_is_502_and_timeout_504(comfy):
    comfy.routes[("GET", f"/history/{PID}")] = requests.exceptions.ConnectionError("refused 10.0.0.1")
    status, body = invoke("task_status", event("task_status"))
    assert status == 502 and body == {"error": "ComfyUI is unreachable", "status_code": 502}
    comfy.routes[("GET", f"/history/{PID}")] = requests.exceptions.ReadTimeout()
    assert invoke("task_status", event("task_status"))[0] == 504


def test_test_comfy_success_and_error_shapes(comfy):
    comfy.routes[("GET", "/system_stats")] = (200, recording("system_stats"))
    status, body = invoke("test_comfy", event("test_comfy"))
    assert status == 200 and body["status"] == "success"
    assert body["comfyui_url"] is None  # the internal address is never shown
    assert body["response"]["system"]["comfyui_version"]
    assert "argv" not in body["response"]["system"]
    comfy.routes[("GET", "/system_stats")] = requests.exceptions.ConnectionError()
    status, body = invoke("test_comfy", event("test_comfy"))
    assert status == 502 and body["status"] == "error" and "unreachable" in body["error"]


def test_history_is_bounded_by_default_and_validated(comfy):
    comfy.routes[("GET", "/history")] = (200, recording("history_max_items_1"))
    status, _ = invoke("history", event("history", queryStringParameters=None))
    assert status == 200 and comfy.calls[-1]["query"] == {"max_items": ["20"]}
    invoke("history", event("history"))
    assert comfy.calls[-1]["query"] == {"max_items": ["10"]}
    status, body = invoke("history", event("history", queryStringParameters={"max_items": "abc"}))
    assert status == 400 and len(comfy.calls) == 2
    status, body = invoke("history", event("history", queryStringParameters={"max_items": "101"}))
    assert (status, body["error"]) == (400, "'max_items' must be an integer from 1 to 100")
    assert len(comfy.calls) == 2


def test_history_entry_and_image_404_when_comfyui_has_none(comfy):
    comfy.routes[("GET", f"/history/{PID}")] = (200, {})
    assert invoke("history_entry", event("history_entry"))[0] == 404
    assert invoke("image", event("image"))[0] == 404
    comfy.routes[("GET", f"/history/{PID}")] = (200, recording("history_id_success_preview"))
    status, body = invoke("image", event("image"))
    assert status == 200 and body["status"] == "success" and len(body["images"]) == 2
    status, body = invoke("history_entry", event("history_entry"))
    assert status == 200 and PID in body


def test_queue_lists_ids_and_positions_without_graphs(comfy):
    comfy.routes[("GET", "/queue")] = (200, recording("queue_running_and_pending"))
    status, body = invoke("queue", event("queue"))
    assert status == 200
    assert body["queue_pending"][0] == {"prompt_id": "170ba43b-ba66-42ad-b8c9-7369f34ec7ff",
                                        "number": -20, "position": 1}
    assert "class_type" not in str(body)


def test_status_passes_system_stats(comfy):
    comfy.routes[("GET", "/system_stats")] = (200, recording("system_stats"))
    status, body = invoke("system_status", event("system_status"))
    expected = recording("system_stats")
    del expected["system"]["argv"]  # ComfyUI's command line: paths, ports, flags
    assert status == 200 and body == expected


def test_cancel_pending_running_unknown(comfy):
    queue = recording("queue_running_and_pending")
    running = queue["queue_running"][0][1]
    pending = queue["queue_pending"][0][1]
    comfy.routes[("GET", "/queue")] = (200, queue)
    comfy.routes[("POST", "/queue")] = (200, None)
    comfy.routes[("POST", "/interrupt")] = (200, None)
    status, body = invoke("cancel_task", event("cancel_task", pathParameters={"prompt_id": pending}))
    assert status == 200 and body["was"] == "pending"
    assert comfy.calls[-1]["json"] == {"delete": [pending]}
    status, body = invoke("cancel_task", event("cancel_task", pathParameters={"prompt_id": running}))
    assert status == 200 and body["was"] == "running"
    assert comfy.calls[-1]["json"] == {"prompt_id": running}
    comfy.routes[("GET", f"/history/{PID}")] = (200, {})
    status, body = invoke("cancel_task", event("cancel_task"))
    assert status == 404 and body["status_code"] == 404
