"""Reading ComfyUI's WebSocket messages (comfy_core.comfyui.protocol) from the recordings of a
real ComfyUI: which prompts are ours, when one is done, what its progress is; and the
throttle that keeps progress writes to about one per prompt per second."""

from __future__ import annotations

import json
from typing import Any

import pytest

from comfy_core.comfyui.protocol import (Done, Ended, Progressed, QueueStatus, Started, Throttle, Tracker,
                                      nodes_to_run)
from tests.support.recordings import recording, workflow


def feed(tracker: Tracker, messages: list[Any]) -> list[Any]:
    events: list[Any] = []
    for message in messages:
        raw: str | bytes = b"\x00\x00\x00\x01" if message.get("binary") else json.dumps(message)
        events += tracker.read(raw)
    return events


@pytest.mark.parametrize("name, outcome", [
    ("ws_success_preview", "success"),
    ("ws_success_text", "success"),
    ("ws_success_preview_cached", "success"),
    ("ws_exec_error", "error"),
])
def test_a_prompt_on_our_socket_starts_ends_and_is_done_last(name: str, outcome: str) -> None:
    recorded = recording(name)
    prompt_id = recorded["post_prompt_response"]["prompt_id"]
    events = feed(Tracker(), recorded["messages"])
    about = [e for e in events if not isinstance(e, QueueStatus)]
    assert about[0] == Started(prompt_id)
    assert about[-1] == Done(prompt_id)  # `executing` null: history is written by now
    assert about[-2] == Ended(prompt_id, outcome)
    assert all(isinstance(e, Progressed) for e in about[1:-2])


def test_progress_counts_finished_nodes_against_the_nodes_that_run() -> None:
    recorded = recording("ws_success_text")
    prompt_id = recorded["post_prompt_response"]["prompt_id"]
    tracker = Tracker()
    fractions = []
    for message in recorded["messages"]:
        tracker.read(json.dumps(message))
        if prompt_id in tracker.prompts:
            tracker.adopt(prompt_id, nodes_total=6)  # the six nodes ws_success_text ran
            fractions.append(tracker.prompts[prompt_id].snapshot()["fraction"])
    assert fractions == sorted(fractions) and fractions[0] == 0 and fractions[-1] == 1.0
    final = tracker.prompts[prompt_id].snapshot()
    assert (final["nodes_done"], final["nodes_total"], final["node"]) == (6, 6, None)


def test_step_progress_comes_from_progress_messages_and_binary_frames_are_skipped() -> None:
    recorded = recording("ws_binary_save_image_websocket")
    prompt_id = recorded["post_prompt_response"]["prompt_id"]
    tracker = Tracker()
    seen = []
    for message in recorded["messages"]:
        tracker.read(b"\x00\x00\x00\x01\x00\x00\x00\x02" if message.get("binary") else json.dumps(message))
        progress = tracker.prompts.get(prompt_id)
        if progress is not None and progress.steps:
            seen.append((progress.node, progress.step, progress.steps))
    assert ("2", 1, 2) in seen and ("2", 0, 2) in seen


def test_messages_of_prompts_that_are_not_ours_are_ignored() -> None:
    """ws_no_client_id: prompts without client_id still broadcast progress_state and
    execution_interrupted; a watcher must not follow (or archive) what is not ours."""
    tracker = Tracker()
    events = feed(tracker, recording("ws_no_client_id")["messages"])
    assert {type(e) for e in events} == {QueueStatus}
    assert tracker.prompts == {}


def test_a_reconnect_mid_run_follows_the_running_prompt_once_adopted() -> None:
    recorded = recording("ws_reconnect_while_running")
    prompt_id = recorded["post_prompt_response"]["prompt_id"]
    assert [e for e in feed(Tracker(), recorded["messages"]) if not isinstance(e, QueueStatus)] == []
    tracker = Tracker()
    tracker.adopt(prompt_id, nodes_to_run(recorded["post_prompt_responses"][0]["request_body"]["prompt"], ["4"]))
    events = feed(tracker, recorded["messages"])  # the first `executing` has no prompt id: skipped
    assert events[-1] == Done(prompt_id) and Ended(prompt_id, "success") in events
    assert tracker.prompts[prompt_id].snapshot()["fraction"] == 1.0


def test_nodes_to_run_follows_links_from_the_outputs_and_drops_cached_ones() -> None:
    graph = workflow("slow_noise_blur.json")
    assert nodes_to_run(graph, ["4"]) == 4
    assert nodes_to_run(graph, ["4"], cached={"1", "2"}) == 2
    assert nodes_to_run({"1": {"inputs": {}}, "9": {"inputs": {}}}, ["1"]) == 1  # 9 is not needed
    assert nodes_to_run("not a graph", ["1"]) is None


def test_junk_frames_are_skipped() -> None:
    tracker = Tracker()
    for raw in ("not json", "[1, 2]", '{"type": "status"}', '{"type": "executing", "data": {"node": null}}'):
        assert tracker.read(raw) == []


def test_throttle_writes_once_per_interval_and_the_latest_state_when_it_passes() -> None:
    throttle = Throttle(1.0)
    writes = [t for t in (0.0, 0.1, 0.2, 0.5, 0.9) if throttle.offer("p", t)]
    assert writes == [0.0]  # a burst: one write now...
    assert throttle.due(0.95) == []
    assert throttle.due(1.0) == ["p"]  # ...and the held-back state once the second is over
    assert throttle.due(5.0) == []  # nothing new since
    assert throttle.offer("p", 5.0) and throttle.offer("q", 5.0)  # per prompt
    throttle.offer("p", 5.5)
    throttle.forget("p")
    assert throttle.due(10.0) == []
