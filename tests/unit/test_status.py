"""comfy_core.status against recorded ComfyUI answers (responses, no sockets)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from responses import matchers

from comfy_core import status
from comfy_core.comfyui.client import ComfyUIClient
from comfy_core.config import get_settings
from comfy_core.errors import BadRequestError, ComfyUIBadResponseError, NotFoundError

BASE = "http://comfy.test:8188"

SAVE_ID = "aa5001e0-e7a3-4f42-a12c-f2f26746c0e6"
PREVIEW_ID = "11111111-2222-3333-4444-555555555555"
EXEC_ERROR_ID = "315cc78a-3c93-4d4f-83e8-bac8df93641d"
INTERRUPTED_ID = "29a077c4-a4d9-49c7-a4fe-a762e23c14a3"
TEXT_ID = "31cd8298-e897-4455-9231-cf8584069280"
# From queue_running_and_pending.json: running 17; pending in heap order -20, 19, 18.
RUNNING_ID = "29a077c4-a4d9-49c7-a4fe-a762e23c14a3"
PENDING_FRONT_ID = "170ba43b-ba66-42ad-b8c9-7369f34ec7ff"  # number -20
PENDING_19_ID = "202dc9a5-af9d-439b-b60d-93a6066af86d"
PENDING_18_ID = "815bcebb-b8c3-4e39-9913-7b45615db33d"
UNKNOWN_ID = "00000000-0000-0000-0000-000000000000"




def add_history(rsps: responses.RequestsMock, prompt_id: str, body: Any) -> None:
    rsps.add(responses.GET, f"{BASE}/history/{prompt_id}", json=body)


def add_queue(rsps: responses.RequestsMock, body: Any) -> None:
    rsps.add(responses.GET, f"{BASE}/queue", json=body)


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query, keep_blank_values=True)


# -- finished prompts ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "prompt_id", "expected_type", "count", "seconds"),
    [
        ("history_id_success_save", SAVE_ID, "output", 1, 0.003),
        ("history_id_success_preview", PREVIEW_ID, "temp", 2, 0.002),
    ],
)
def test_finished_prompt_is_completed_with_its_images(
    rsps, client, recording: Callable[[str], Any], name, prompt_id, expected_type, count, seconds
) -> None:
    recorded = recording(name)
    add_history(rsps, prompt_id, recorded)
    answer = status.task_status(client, prompt_id)

    assert answer["status"] == "completed"
    assert answer["prompt_id"] == prompt_id
    assert answer["execution_time"] == pytest.approx(seconds)
    expected_files = recorded[prompt_id]["outputs"]["2"]["images"]
    assert len(answer["images"]) == count
    for image, expected in zip(answer["images"], expected_files):
        assert image["type"] == expected_type == expected["type"]
        assert image["filename"] == expected["filename"]
        assert image["subfolder"] == expected["subfolder"]
        assert image["url"] is None  # no COMFYUI_PUBLIC_URL: no ComfyUI address in answers
    for image, expected in zip(status.describe_images(_public(client), recorded[prompt_id]), expected_files):
        assert image["url"].startswith(f"{BASE}/view?")
        assert query_of(image["url"]) == {
            "filename": [expected["filename"]],
            "subfolder": [expected["subfolder"]],
            "type": [expected_type],
        }
    assert client.request_count == 1
    assert len(rsps.calls) == 1


def test_execution_time_uses_the_end_event(rsps, client, recording) -> None:
    add_history(rsps, INTERRUPTED_ID, recording("history_id_interrupted"))
    answer = status.task_status(client, INTERRUPTED_ID)
    assert answer["execution_time"] == pytest.approx(11.5)


def _public(client):
    """The same client with a public URL set."""
    from dataclasses import replace

    return type(client)(replace(client.settings, comfyui_public_url=BASE), session=client.session)


def test_image_url_encodes_filename_subfolder_and_type(rsps, client) -> None:
    client = _public(client)
    entry = {
        "outputs": {"9": {"images": [{"filename": "a b&c=d.png", "subfolder": "x/y z", "type": "output"}]}},
        "status": {"status_str": "success", "completed": True, "messages": []},
    }
    add_history(rsps, "p1", {"p1": entry})
    [image] = status.task_status(client, "p1")["images"]
    url = image["url"]
    assert "a b&c=d.png" not in url and "x/y z" not in url
    assert query_of(url) == {"filename": ["a b&c=d.png"], "subfolder": ["x/y z"], "type": ["output"]}
    assert image["node_id"] == "9"


def test_image_url_uses_the_public_url(rsps, monkeypatch, recording) -> None:
    monkeypatch.setenv("COMFYUI_PUBLIC_URL", "https://images.example.com/comfy/")
    get_settings.cache_clear()
    client = ComfyUIClient(get_settings())
    add_history(rsps, SAVE_ID, recording("history_id_success_save"))
    [image] = status.task_status(client, SAVE_ID)["images"]
    assert image["url"].startswith("https://images.example.com/comfy/view?")
    assert rsps.calls[0].request.url.startswith(BASE)


def test_execution_error_reports_the_failing_node(rsps, client, recording) -> None:
    recorded = recording("history_id_exec_error_save_outside_output")
    add_history(rsps, EXEC_ERROR_ID, recorded)
    answer = status.task_status(client, EXEC_ERROR_ID)

    assert answer["status"] == "error"
    error = answer["error"]
    assert error["type"] == "execution_error"
    assert error["node_id"] == "2"
    assert error["node_type"] == "SaveImage"
    assert error["exception_type"] == "Exception"
    assert "Saving image outside the output folder is not allowed" in error["exception_message"]
    assert "2" in answer["message"] and "SaveImage" in answer["message"]
    assert answer["images"] == []
    # The traceback and tensor dump stay out of the answer.
    assert "traceback" not in json.dumps(answer)
    assert "current_inputs" not in json.dumps(answer)
    assert len(rsps.calls) == 1


def test_interrupted_prompt_is_an_error_of_type_interrupted(rsps, client, recording) -> None:
    add_history(rsps, INTERRUPTED_ID, recording("history_id_interrupted"))
    answer = status.task_status(client, INTERRUPTED_ID)
    assert answer["status"] == "error"
    assert answer["error"]["type"] == "interrupted"
    assert answer["error"]["node_id"] == "4"
    assert answer["images"] == []
    assert len(rsps.calls) == 1


def test_success_without_outputs_is_completed_with_no_images(rsps, client) -> None:
    entry = {"outputs": {}, "status": {"status_str": "success", "completed": True, "messages": []}}
    add_history(rsps, "p1", {"p1": entry})
    answer = status.task_status(client, "p1")
    assert answer["status"] == "completed"
    assert answer["images"] == []
    assert answer["execution_time"] is None


def test_text_output_is_not_an_image(rsps, client, recording) -> None:
    recorded = recording("history_id_success_text")
    add_history(rsps, TEXT_ID, recorded)
    answer = status.task_status(client, TEXT_ID)
    assert answer["status"] == "completed"
    assert [(i["node_id"], i["filename"], i["subfolder"]) for i in answer["images"]] == [
        ("2", "Hello_patched_world_123_00001_.png", "txt")
    ]

    # Only the PreviewAny `text` node: completed, no images.
    recorded[TEXT_ID]["outputs"] = {"9": recorded[TEXT_ID]["outputs"]["9"]}
    rsps.replace(responses.GET, f"{BASE}/history/{TEXT_ID}", json=recorded)
    answer = status.task_status(client, TEXT_ID)
    assert answer["status"] == "completed"
    assert answer["images"] == []


# -- not finished --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("prompt_id", "position"), [(PENDING_FRONT_ID, 1), (PENDING_18_ID, 2), (PENDING_19_ID, 3)]
)
def test_pending_position_follows_the_queue_number(rsps, client, recording, prompt_id, position) -> None:
    add_history(rsps, prompt_id, recording("history_id_unknown"))
    add_queue(rsps, recording("queue_running_and_pending"))
    answer = status.task_status(client, prompt_id)
    assert answer["status"] == "pending"
    assert answer["queue_position"] == position
    assert len(rsps.calls) == 2
    assert client.request_count == 2


def test_running_prompt(rsps, client, recording) -> None:
    add_history(rsps, RUNNING_ID, {})
    add_queue(rsps, recording("queue_running_and_pending"))
    answer = status.task_status(client, RUNNING_ID)
    assert answer["status"] == "running"
    assert answer["prompt_id"] == RUNNING_ID
    assert len(rsps.calls) == 2


def test_unknown_prompt_is_not_found(rsps, client, recording) -> None:
    add_history(rsps, UNKNOWN_ID, recording("history_id_unknown"))
    add_queue(rsps, recording("queue_running_and_pending"))
    answer = status.task_status(client, UNKNOWN_ID)
    assert answer["status"] == "not_found"
    assert answer["prompt_id"] == UNKNOWN_ID


def test_queue_with_an_unexpected_shape_is_a_bad_response(rsps, client) -> None:
    add_history(rsps, UNKNOWN_ID, {})
    add_queue(rsps, {"queue_running": {}, "queue_pending": []})
    with pytest.raises(ComfyUIBadResponseError):
        status.task_status(client, UNKNOWN_ID)


# -- queue summary ------------------------------------------------------------------------------
def test_queue_summary_has_ids_positions_and_no_graphs(recording) -> None:
    summary = status.queue_summary(recording("queue_running_and_pending"))
    assert summary["running_count"] == 1 and summary["pending_count"] == 3
    assert summary["queue_running"] == [{"prompt_id": RUNNING_ID, "number": 17}]
    assert summary["queue_pending"] == [
        {"prompt_id": PENDING_FRONT_ID, "number": -20, "position": 1},
        {"prompt_id": PENDING_18_ID, "number": 18, "position": 2},
        {"prompt_id": PENDING_19_ID, "number": 19, "position": 3},
    ]
    text = json.dumps(summary)
    assert "class_type" not in text and "inputs" not in text


def test_empty_queue_summary(recording) -> None:
    summary = status.queue_summary(recording("queue_empty"))
    assert summary == {"queue_running": [], "queue_pending": [], "running_count": 0, "pending_count": 0}


# -- history ------------------------------------------------------------------------------------------
def test_history_default_max_items_is_sent_to_comfyui(rsps, client, recording) -> None:
    rsps.add(
        responses.GET,
        f"{BASE}/history",
        json=recording("history_max_items_1"),
        match=[matchers.query_param_matcher({"max_items": "100"})],
    )
    answer = status.history(client, {}, 100, 1000).body
    assert PENDING_18_ID in answer
    assert len(rsps.calls) == 1


@pytest.mark.parametrize(("raw", "sent"), [("1", "1"), ("2", "2"), ("1000", "1000"), ("", "7")])
def test_history_max_items_is_passed_as_query_param(rsps, client, recording, raw, sent) -> None:
    rsps.add(
        responses.GET,
        f"{BASE}/history",
        json=recording("history_max_items_2_offset_0"),
        match=[matchers.query_param_matcher({"max_items": sent})],
    )
    status.history(client, {"max_items": raw}, 7, 1000)
    assert query_of(rsps.calls[0].request.url) == {"max_items": [sent]}


@pytest.mark.parametrize("raw", ["0", "1001", "abc", "-5", "1.5"])
def test_history_max_items_out_of_bounds_is_refused_before_comfyui(rsps, client, raw) -> None:
    with pytest.raises(BadRequestError, match="max_items"):
        status.history(client, {"max_items": raw}, 100, 1000)
    assert len(rsps.calls) == 0


def test_history_entry_found_and_missing(rsps, client, recording) -> None:
    add_history(rsps, SAVE_ID, recording("history_id_success_save"))
    add_history(rsps, UNKNOWN_ID, recording("history_id_unknown"))
    found = status.history_entry(client, SAVE_ID)
    assert list(found) == [SAVE_ID]
    assert found[SAVE_ID]["outputs"]["2"]["images"][0]["filename"] == "harness_save_00001_.png"
    with pytest.raises(NotFoundError) as caught:
        status.history_entry(client, UNKNOWN_ID)
    assert caught.value.status_code == 404


# -- images ------------------------------------------------------------------------------------------
def test_images_of_a_finished_prompt(rsps, client, recording) -> None:
    add_history(rsps, PREVIEW_ID, recording("history_id_success_preview"))
    answer = status.images(client, PREVIEW_ID)
    assert answer["status"] == "success"
    assert [i["filename"] for i in answer["images"]] == [
        "ComfyUI_temp_oncmo_00001_.png",
        "ComfyUI_temp_oncmo_00002_.png",
    ]
    assert {i["type"] for i in answer["images"]} == {"temp"}


@pytest.mark.parametrize(
    ("prompt_id", "name"), [(UNKNOWN_ID, "history_id_unknown"), (INTERRUPTED_ID, "history_id_interrupted")]
)
def test_images_404_when_there_are_none(rsps, client, recording, prompt_id, name) -> None:
    add_history(rsps, prompt_id, recording(name))
    with pytest.raises(NotFoundError) as caught:
        status.images(client, prompt_id)
    assert caught.value.status_code == 404


# -- cancel -------------------------------------------------------------------------------------------
def test_cancel_pending_deletes_it_from_the_queue(rsps, client, recording) -> None:
    add_queue(rsps, recording("queue_running_and_pending"))
    rsps.add(responses.POST, f"{BASE}/queue", body="")
    answer = status.cancel(client, PENDING_19_ID)
    assert answer["status"] == "cancelled" and answer["was"] == "pending"
    posts = [c for c in rsps.calls if c.request.method == "POST"]
    assert [c.request.url for c in posts] == [f"{BASE}/queue"]
    assert json.loads(posts[0].request.body) == {"delete": [PENDING_19_ID]}


def test_cancel_running_sends_a_targeted_interrupt(rsps, client, recording) -> None:
    add_queue(rsps, recording("queue_running_and_pending"))
    rsps.add(responses.POST, f"{BASE}/interrupt", body="")
    answer = status.cancel(client, RUNNING_ID)
    assert answer["status"] == "interrupting" and answer["was"] == "running"
    posts = [c for c in rsps.calls if c.request.method == "POST"]
    assert [c.request.url for c in posts] == [f"{BASE}/interrupt"]
    assert json.loads(posts[0].request.body) == {"prompt_id": RUNNING_ID}


@pytest.mark.parametrize(
    ("prompt_id", "name", "was"),
    [(SAVE_ID, "history_id_success_save", "completed"), (INTERRUPTED_ID, "history_id_interrupted", "error")],
)
def test_cancel_finished_posts_nothing(rsps, client, recording, prompt_id, name, was) -> None:
    add_queue(rsps, recording("queue_empty"))
    add_history(rsps, prompt_id, recording(name))
    answer = status.cancel(client, prompt_id)
    assert answer["status"] == "finished" and answer["was"] == was
    assert [c.request.method for c in rsps.calls] == ["GET", "GET"]


def test_cancel_unknown_is_not_found(rsps, client, recording) -> None:
    add_queue(rsps, recording("queue_running_and_pending"))
    add_history(rsps, UNKNOWN_ID, recording("history_id_unknown"))
    with pytest.raises(NotFoundError) as caught:
        status.cancel(client, UNKNOWN_ID)
    assert caught.value.status_code == 404
    assert all(c.request.method == "GET" for c in rsps.calls)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("history_id_success_save", False),
        ("history_id_success_preview", False),
        ("history_id_exec_error_save_outside_output", True),
        ("history_id_interrupted", True),
    ],
)
def test_failed_is_the_one_verdict_on_recorded_entries(recording, name, expected) -> None:
    ((_, entry),) = recording(name).items()
    assert status.failed(entry) is expected


def test_failed_for_entries_without_status_str() -> None:
    assert status.failed({"status": {"completed": False}}) is True
    assert status.failed({"status": {"completed": True}}) is False
    assert status.failed({}) is False
