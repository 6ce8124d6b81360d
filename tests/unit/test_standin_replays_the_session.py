"""The stand-in replays the recorded ComfyUI session and must answer as the real one did,
value for value.

The recordings in tests/fixtures/comfyui/ come from one run of a real ComfyUI 0.3.64:
prompts numbered 0 to 26, sent in the order the Date headers, `_notes_record.json` and the
WebSocket captures show. Sending the same requests in the same order to a fresh stand-in must
give the same answers. Only what differs between any two runs is mapped or blanked:

* prompt ids ComfyUI made up (mapped, recorded -> replayed, as the answers arrive);
* timestamps, tracebacks and the random five letters of temp file names;
* the server's folder in error messages (/srv/ComfyUI in the recording);
* the order of lists ComfyUI builds from a set (`executed`, `current_outputs`, the outputs
  to execute), the name of the regex error class (re.error before Python 3.13) and the text
  of tensors (the stand-in has none) in an error's `current_inputs`.

Everything else must match: numbers, queue order, cached nodes, file names, messages.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from devtools.comfyui_standin import ComfyUIStandIn, build_node_specs, execution_order
from tests.support.recordings import recording, recording_meta, workflow
from tests.support.standin import TIMEOUT, Client, normalise, only_entry
from tests.support.waiting import wait_for

NOTES = recording("_notes_record")
SLOW = NOTES["ids"]  # the four slow prompts of the cancel scenario
# Prompts the recorder sent one after the other, waiting for each: the POST /prompt
# recording, and the history recording of the finished prompt.
FIRST_PROMPTS = {
    "prompt_success": "history_id_success_save",
    "prompt_success_client_id_prompt_id": "history_id_success_preview",
    "prompt_success_chain": "history_id_success_chain",
    "prompt_success_text": "history_id_success_text",
    "prompt_success_resubmit_identical": "history_id_resubmit_after_other_prompts_not_cached",
}
# Refused prompts: each still takes a number (prompt_error_malformed_json does not: its
# body is not JSON, so ComfyUI never gets that far).
REFUSED_PROMPTS = [
    "prompt_error_bad_values", "prompt_error_link_to_missing_node", "prompt_error_missing_input",
    "prompt_error_missing_model", "prompt_error_no_class_type", "prompt_error_no_output_node",
    "prompt_error_unknown_class", "prompt_error_empty_prompt", "prompt_error_no_prompt_key",
    "prompt_error_prompt_is_list", "prompt_error_malformed_json",
]
FAILING_PROMPTS = {
    "prompt_accepted_exec_error_save": "history_id_exec_error_save_outside_output",
    "prompt_accepted_exec_error_regex": "history_id_exec_error_bad_regex",
}
WS_CAPTURES = ["ws_success_text", "ws_exec_error", "ws_success_preview", "ws_success_preview_cached"]
HISTORY_EVENTS = {"execution_start", "execution_cached", "execution_success", "execution_error",
                  "execution_interrupted"}
RECORDED_ROOT = "/srv"  # the folder ComfyUI ran in: /srv/ComfyUI
# Lists ComfyUI builds from a Python set, so their order changes from one process to the next
# (string hashing): nodes `executed` before an error or interrupt, its `current_outputs`, and
# the outputs to execute, item 4 of a history entry's `prompt` and of a queue item.
SET_ORDERED = {"executed", "current_outputs"}
QUEUE_KEYS = {"queue_running", "queue_pending"}
ITEM_KEYS = {"prompt", *QUEUE_KEYS}


@dataclass
class Replay:
    """The stand-in's answer to each replayed request, under the recording's name."""

    client: Client
    root: Path
    answers: dict[str, requests.Response] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)  # recorded prompt id -> replayed one
    extra: dict[str, Any] = field(default_factory=dict)  # facts checked against _notes_record

    # -- sending -----------------------------------------------------------------------------
    def send(self, name: str, method: str, path: str, body: Any = None) -> requests.Response:
        data = body.encode() if isinstance(body, str) else None if body is None else json.dumps(body).encode()
        headers = {} if data is None else {"Content-Type": "application/json"}
        response = self.client.session.request(method, self.client.base + self.to_replayed(path),
                                               data=data, headers=headers, timeout=TIMEOUT)
        self.answers[name] = response
        return response

    def again(self, name: str) -> requests.Response:
        """The recorded request `name` once more: method, path and body as recorded."""
        meta = recording_meta(name)
        return self.send(name, meta["method"], meta["path"], self.to_replayed(meta.get("request_body")))

    def submit(self, name: str, recorded_id: str, body: dict[str, Any]) -> str:
        answer = self.send(name, "POST", "/prompt", body).json()
        self.ids[recorded_id] = answer["prompt_id"]
        return answer["prompt_id"]

    def entry(self, name: str, recorded_id: str) -> dict[str, Any]:
        """Wait until the prompt is in the history, then GET /history/{id} as `name`."""
        replayed = self.ids[recorded_id]
        wait_for(lambda: self.client.history(replayed), timeout=TIMEOUT, what=f"history of {name}")
        return self.send(name, "GET", f"/history/{recorded_id}").json()

    def queue_shows(self, running: str) -> None:
        wait_for(lambda: self.client.running_id() == self.ids[running], timeout=TIMEOUT, what="running")

    # -- mapping -----------------------------------------------------------------------------
    def to_replayed(self, value: Any) -> Any:
        """A recorded value with each recorded prompt id replaced by the replayed one."""
        if isinstance(value, dict):
            return {self.to_replayed(key): self.to_replayed(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.to_replayed(item) for item in value]
        if isinstance(value, str):
            for recorded, replayed in self.ids.items():
                value = value.replace(recorded, replayed)
        return value

    def comparable(self, value: Any) -> Any:
        """A stand-in answer with its folder shown as the recorded one, then normalised."""
        text = json.dumps(value).replace(str(self.root), RECORDED_ROOT)
        return _blank(normalise(json.loads(text), ids=False))


def _blank(value: Any, key: str = "") -> Any:
    """What the stand-in cannot reproduce and ComfyUI itself varies (see the module doc)."""
    if isinstance(value, dict):
        return {k: _blank(v, k) for k, v in value.items()}
    if isinstance(value, list):
        items = [_blank(item, key if key in QUEUE_KEYS else "") for item in value]
        if key in SET_ORDERED:
            return sorted(items)
        if key in ITEM_KEYS and len(items) == 5 and isinstance(items[1], str) and isinstance(items[4], list):
            items[4] = sorted(items[4])  # outputs to execute: a set in ComfyUI
        return items
    if isinstance(value, str):
        if value.startswith("tensor("):
            return "tensor(...)"
        return "re.error" if key == "exception_type" and value == "re.PatternError" else value
    return value


def expected(replay: Replay, recorded: Any) -> Any:
    return _blank(normalise(replay.to_replayed(recorded), ids=False))


# -- the replay ----------------------------------------------------------------------------------

def _first_prompts(replay: Replay) -> None:
    for name in ("history_empty", "queue_empty", "prompt_get_idle"):
        replay.again(name)
    for name, history in FIRST_PROMPTS.items():
        recorded_id = recording(name)["prompt_id"]
        replay.submit(name, recorded_id, recording_meta(name)["request_body"])
        replay.entry(history, recorded_id)
    for name in REFUSED_PROMPTS:
        replay.again(name)
    for name, history in FAILING_PROMPTS.items():
        recorded_id = recording(name)["prompt_id"]
        replay.submit(name, recorded_id, recording_meta(name)["request_body"])
        replay.entry(history, recorded_id)


def _cancel_scenario(replay: Replay) -> None:
    """Four slow prompts: `a` runs, `b`, `c` wait, `d` jumps the queue (front). `c` is deleted,
    deleting `a` (running) and interrupting `b` (pending) change nothing, a global interrupt
    stops `a`, a targeted one stops `d`, and `b` runs to the end."""
    queue = recording("queue_running_and_pending")
    graphs = {item[1]: item[2] for item in queue["queue_running"] + queue["queue_pending"]}
    a, b, c, d = (SLOW[key] for key in ("a_slow8_interrupted_global", "b", "c_deleted", "d_front"))
    replay.client.standin.delay = 60.0  # each prompt waits at its output node until interrupted
    replay.submit("a", a, {"prompt": graphs[a]})
    replay.queue_shows(running=a)
    replay.submit("b", b, {"prompt": graphs[b]})
    replay.submit("c", c, {"prompt": graphs[c]})
    replay.submit("d", d, {"prompt": graphs[d], "front": True})
    replay.again("prompt_get_busy")
    replay.again("queue_running_and_pending")
    replay.again("queue_delete_pending")
    replay.again("queue_after_delete")
    replay.again("queue_delete_running_id")
    replay.again("queue_after_delete_running_attempt")
    replay.again("queue_delete_unknown_id")
    replay.again("interrupt_targeted_not_running")
    replay.again("queue_after_targeted_interrupt_of_pending")
    replay.again("interrupt_global")
    replay.entry("history_id_interrupted", a)
    replay.queue_shows(running=d)
    replay.again("queue_after_interrupt")
    replay.extra["running_after_interrupt"] = [replay.client.running_id()]
    replay.again("interrupt_targeted_running")
    replay.entry("history_id_interrupted_targeted", d)
    replay.client.standin.delay = 0.0  # `b` was not interrupted: it finishes
    wait_for(lambda: replay.client.history(replay.ids[b]), timeout=TIMEOUT, what="b finished")
    replay.extra["deleted_pending_in_history"] = bool(replay.client.history(replay.ids[c]))


def _history_reads(replay: Replay) -> None:
    for name in ("history_all", "history_max_items_1", "history_max_items_2_offset_0"):
        replay.again(name)
    replay.again("history_post_delete")
    deleted = replay.to_replayed(recording_meta("history_post_delete")["request_body"]["delete"][0])
    replay.extra["history_after_delete_has_id"] = deleted in replay.client.get("/history").json()


def _cached_twice(replay: Replay) -> None:
    """The same workflow twice in a row: the second run is answered from the cache."""
    for name in ("history_id_cache_first_run", "history_id_cache_identical_back_to_back"):
        number, recorded_id, graph = only_entry(recording(name))["prompt"][:3]
        replay.submit(f"prompt {number}", recorded_id, {"prompt": graph})
        replay.entry(name, recorded_id)


def ws_workflow(name: str) -> dict[str, Any]:
    """The workflow a WebSocket capture ran. Not recorded as such; what the messages show:
    the text run is prompt_success_text's graph with the text the capture's PreviewAny
    printed; the failing one names its prompt in the error; the previews (two temp images
    from nodes 1 and 2) are empty_preview.json."""
    messages = recording(name)["messages"]
    if name == "ws_success_text":
        graph = recording_meta("prompt_success_text")["request_body"]["prompt"]
        printed = next(m["data"]["output"]["text"][0] for m in messages if m["type"] == "executed"
                       and m["data"]["node"] == "9")
        graph["6"]["inputs"]["value"] = printed
        return graph
    if name == "ws_exec_error":
        error = next(m["data"] for m in messages if m["type"] == "execution_error")
        return ast.literal_eval(error["current_inputs"]["prompt"][0])
    return workflow("empty_preview.json")


def _websocket_prompts(replay: Replay) -> None:
    for name in WS_CAPTURES:
        capture = recording(name)
        recorded_id = capture["post_prompt_response"]["prompt_id"]
        replay.submit(name, recorded_id, {"prompt": ws_workflow(name), "client_id": capture["client_id"]})
        replay.entry(f"{name} history", recorded_id)


def _restart_and_idle(replay: Replay) -> None:
    replay.client.standin.restart()
    replay.again("history_after_restart")
    for name in ("history_post_clear", "history_after_clear", "free", "interrupt_no_body_idle",
                 "queue_post_malformed_json"):
        replay.again(name)
    recorded_id = recording("prompt_success_partial_node_errors")["prompt_id"]
    replay.submit("prompt_success_partial_node_errors", recorded_id,
                  recording_meta("prompt_success_partial_node_errors")["request_body"])
    replay.entry("history_id_partial_node_errors", recorded_id)


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replay]:
    root = tmp_path_factory.mktemp("session")
    standin = ComfyUIStandIn(root / "ComfyUI", port=0).start()
    try:
        session = Replay(Client(standin), root)
        for phase in (_first_prompts, _cancel_scenario, _history_reads, _cached_twice, _websocket_prompts,
                      _restart_and_idle):
            phase(session)
        yield session
    finally:
        standin.stop()


# -- the answers, compared -----------------------------------------------------------------------

JSON_ANSWERS = [
    "history_empty", "queue_empty", "prompt_get_idle",
    *FIRST_PROMPTS, *FIRST_PROMPTS.values(), *FAILING_PROMPTS, *FAILING_PROMPTS.values(),
    "prompt_get_busy", "queue_running_and_pending", "queue_after_delete",
    "queue_after_delete_running_attempt",
    "queue_after_targeted_interrupt_of_pending", "history_id_interrupted", "queue_after_interrupt",
    "history_id_interrupted_targeted",
    "history_all", "history_max_items_1", "history_max_items_2_offset_0",
    "history_id_cache_first_run", "history_id_cache_identical_back_to_back",
    "history_after_restart", "history_after_clear",
]
EMPTY_ANSWERS = [
    "queue_delete_pending", "queue_delete_running_id", "queue_delete_unknown_id",
    "interrupt_targeted_not_running", "interrupt_global", "interrupt_targeted_running",
    "history_post_delete", "history_post_clear", "free", "interrupt_no_body_idle",
]
PLAIN_TEXT_ANSWERS = [
    "prompt_error_prompt_is_list", "prompt_error_malformed_json", "queue_post_malformed_json",
]


@pytest.mark.parametrize("name", JSON_ANSWERS)
def test_replayed_json_answer_matches_the_recording(replay: Replay, name: str) -> None:
    meta = recording_meta(name)
    answer = replay.answers[name]
    assert answer.status_code == meta["status"]
    assert answer.headers["Content-Type"] == meta["headers"]["Content-Type"]
    assert replay.comparable(answer.json()) == expected(replay, recording(name))


def errors_in_order(body: dict[str, Any]) -> dict[str, Any]:
    """ComfyUI checks a node's inputs in set order (random per process): sort its errors."""
    for node in body.get("node_errors", {}).values():
        node["errors"].sort(key=lambda e: (e["type"], e["extra_info"].get("input_name", "")))
    return body


@pytest.mark.parametrize("name", [name for name in REFUSED_PROMPTS if name not in PLAIN_TEXT_ANSWERS])
def test_replayed_refusal_matches_the_recording(replay: Replay, name: str) -> None:
    answer = replay.answers[name]
    assert answer.status_code == recording_meta(name)["status"] == 400
    recorded = errors_in_order(recording(name))
    assert replay.comparable(errors_in_order(answer.json())) == expected(replay, recorded)


@pytest.mark.parametrize("name", EMPTY_ANSWERS + PLAIN_TEXT_ANSWERS)
def test_replayed_bodiless_answer_matches_the_recording(replay: Replay, name: str) -> None:
    meta = recording_meta(name)
    answer = replay.answers[name]
    assert (answer.status_code, answer.text) == (meta["status"], meta["body_text"])
    assert answer.headers.get("Content-Type") == meta["headers"].get("Content-Type")


def test_the_noted_facts_hold(replay: Replay) -> None:
    """_notes_record.json: what the recorder noted while the session ran."""
    assert replay.extra["running_after_interrupt"] == replay.to_replayed(NOTES["running_after_interrupt"])
    assert replay.extra["deleted_pending_in_history"] is NOTES["deleted_pending_in_history"] is False
    assert replay.extra["history_after_delete_has_id"] is NOTES["history_after_delete_has_id"] is False
    save = only_entry(replay.answers["history_id_success_save"].json())
    assert save["outputs"]["2"]["images"][0] == NOTES["view_output_file"]
    preview = only_entry(replay.answers["history_id_success_preview"].json())
    assert normalise(preview["outputs"]["2"]["images"][0]) == normalise(NOTES["view_temp_file"])


def test_an_interrupt_while_idle_does_not_stop_the_next_prompt(replay: Replay) -> None:
    """Recorded after a restart and an idle POST /interrupt: the next prompt ran, its valid
    output only. Its number (10100) came from thousands of prompts sent in between to fill
    the history, which this replay skips: the number is the one thing not compared."""
    answer = replay.answers["prompt_success_partial_node_errors"].json()
    recorded = replay.to_replayed(recording("prompt_success_partial_node_errors"))
    assert answer == recorded | {"number": answer["number"]}
    entry = replay.answers["history_id_partial_node_errors"].json()
    recorded_entry = recording("history_id_partial_node_errors")
    only_entry(recorded_entry)["prompt"][0] = answer["number"]
    assert replay.comparable(entry) == expected(replay, recorded_entry)


# -- the WebSocket captures: what /history shows of the same prompts ----------------------------

@pytest.mark.parametrize("name", WS_CAPTURES)
def test_websocket_capture_prompt_answer(replay: Replay, name: str) -> None:
    """POST /prompt with a client_id: the answer the capture recorded, number included."""
    assert replay.answers[name].json() == replay.to_replayed(recording(name)["post_prompt_response"])


@pytest.mark.parametrize("name", WS_CAPTURES)
def test_websocket_capture_agrees_with_the_history_entry(replay: Replay, name: str) -> None:
    """History keeps the capture's start/cached/success-or-error messages, each output the
    capture's `executed` message showed, and the client_id in extra_data."""
    capture = replay.to_replayed(recording(name))
    entry = only_entry(replay.answers[f"{name} history"].json())
    kept = [[m["type"], m["data"]] for m in capture["messages"] if m["type"] in HISTORY_EVENTS]
    assert replay.comparable(entry["status"]["messages"]) == expected(replay, kept)
    executed = {m["data"]["node"]: m["data"]["output"]
                for m in capture["messages"] if m["type"] == "executed"}
    assert replay.comparable(entry["outputs"]) == expected(replay, executed)
    assert entry["prompt"][3] == {"client_id": capture["client_id"]}


@pytest.mark.parametrize("name", WS_CAPTURES)
def test_websocket_capture_node_order_is_the_standin_execution_order(replay: Replay, name: str) -> None:
    """`executing` messages name the nodes in the order ComfyUI ran them (none when cached)."""
    entry = only_entry(replay.answers[f"{name} history"].json())
    prompt, outputs = entry["prompt"][2], entry["prompt"][4]
    cached = set(entry["status"]["messages"][1][1]["nodes"])
    specs = build_node_specs([])
    order = execution_order(prompt, outputs, cached,
                            lambda node_id: specs[prompt[node_id]["class_type"]].output_node)
    run = [node_id for node_id in order if node_id not in cached]
    ran = [m["data"]["node"] for m in recording(name)["messages"]
           if m["type"] == "executing" and m["data"]["node"] is not None]
    failed = [m["data"]["node_id"] for m in recording(name)["messages"] if m["type"] == "execution_error"]
    assert ran == (run[: run.index(failed[0]) + 1] if failed else run)
