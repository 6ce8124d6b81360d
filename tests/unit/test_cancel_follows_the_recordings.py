"""comfy_core.status.cancel against the recorded cancel session of a real ComfyUI.

The recorder queued four slow prompts (`_notes_record.json`: a running, b and c pending, d
sent to the front) and tried each way of stopping one. What ComfyUI did decides what cancel
must send: deleting from the queue works for a pending prompt and does nothing to the running
one; a targeted interrupt stops the running prompt and does nothing to a pending one. Each
test sends the recorded request, and the recorded queue before and after shows why.
"""

from __future__ import annotations

import json
from typing import Any

import responses

from comfy_core import status
from comfy_core.comfyui.client import ComfyUIClient
from tests.support.recordings import recording, recording_meta

BASE = "http://comfy.test:8188"
IDS = recording("_notes_record")["ids"]
A_RUNNING, B_PENDING, C_PENDING, D_FRONT = (
    IDS[key] for key in ("a_slow8_interrupted_global", "b", "c_deleted", "d_front")
)


def running(queue: dict[str, Any]) -> list[str]:
    return [item[1] for item in queue["queue_running"]]


def pending(queue: dict[str, Any]) -> list[str]:
    return [item[1] for item in queue["queue_pending"]]


def answer_as_recorded(rsps: responses.RequestsMock, name: str) -> None:
    """ComfyUI's recorded answer to the recorded request `name` (a 200 with an empty body)."""
    meta = recording_meta(name)
    rsps.add(meta["method"], f"{BASE}{meta['path']}", status=meta["status"], body=meta["body_text"])


def posted(rsps: responses.RequestsMock) -> list[tuple[str, Any]]:
    return [(call.request.path_url, json.loads(call.request.body)) for call in rsps.calls
            if call.request.method == "POST"]


def test_a_pending_prompt_is_deleted_from_the_queue(
    rsps: responses.RequestsMock, client: ComfyUIClient
) -> None:
    before, after = recording("queue_running_and_pending"), recording("queue_after_delete")
    assert C_PENDING in pending(before) and C_PENDING not in pending(after) + running(after)
    rsps.get(f"{BASE}/queue", json=before)
    answer_as_recorded(rsps, "queue_delete_pending")
    answer = status.cancel(client, C_PENDING)
    assert posted(rsps) == [("/queue", recording_meta("queue_delete_pending")["request_body"])]
    assert (answer["status"], answer["was"]) == ("cancelled", "pending")


def test_a_targeted_interrupt_would_leave_a_pending_prompt_queued(
    rsps: responses.RequestsMock, client: ComfyUIClient
) -> None:
    tried = recording_meta("interrupt_targeted_not_running")["request_body"]["prompt_id"]
    assert tried == B_PENDING
    after = recording("queue_after_targeted_interrupt_of_pending")
    assert pending(after) == pending(recording("queue_after_delete")) and B_PENDING in pending(after)
    rsps.get(f"{BASE}/queue", json=recording("queue_after_targeted_interrupt_of_pending"))
    rsps.post(f"{BASE}/queue", body="")
    status.cancel(client, B_PENDING)
    assert posted(rsps) == [("/queue", {"delete": [B_PENDING]})]  # deleted, never interrupted


def test_deleting_the_running_prompt_would_do_nothing_so_it_is_interrupted(
    rsps: responses.RequestsMock, client: ComfyUIClient
) -> None:
    assert recording_meta("queue_delete_running_id")["request_body"] == {"delete": [A_RUNNING]}
    assert running(recording("queue_after_delete_running_attempt")) == [A_RUNNING]  # still running
    rsps.get(f"{BASE}/queue", json=recording("queue_after_delete_running_attempt"))
    rsps.post(f"{BASE}/interrupt", body="")
    answer = status.cancel(client, A_RUNNING)
    assert posted(rsps) == [("/interrupt", {"prompt_id": A_RUNNING})]
    assert (answer["status"], answer["was"]) == ("interrupting", "running")


def test_the_running_prompt_gets_the_recorded_targeted_interrupt(
    rsps: responses.RequestsMock, client: ComfyUIClient
) -> None:
    """d ran after the global interrupt stopped a; the recorded targeted interrupt stopped it."""
    assert running(recording("queue_after_interrupt")) == [D_FRONT]
    rsps.get(f"{BASE}/queue", json=recording("queue_after_interrupt"))
    answer_as_recorded(rsps, "interrupt_targeted_running")
    answer = status.cancel(client, D_FRONT)
    assert posted(rsps) == [("/interrupt", recording_meta("interrupt_targeted_running")["request_body"])]
    assert answer["status"] == "interrupting"
    stopped = recording("history_id_interrupted_targeted")[D_FRONT]["status"]["messages"][-1]
    assert stopped[0] == "execution_interrupted"
