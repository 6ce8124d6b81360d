"""The stand-in's /ws says what a real ComfyUI 0.3.64 was recorded saying, message by
message, compared by value (ids, timestamps, tracebacks and temp-name parts normalised):
who gets what (per-client routing, broadcasts), in which order, `executing` null last,
the same-clientId takeover, the replay for a socket that connects mid-run."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from devtools.comfyui_standin import ComfyUIStandIn
from tests.support.recordings import recording
from tests.support.standin import Client, normalise
from tests.support.waiting import wait_for
from tests.support.ws import TIMEOUT, Listener


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[ComfyUIStandIn]:
    with ComfyUIStandIn(tmp_path, delay=0.0) as comfy:
        yield comfy


def status_values(messages: list[Any]) -> list[int]:
    return [m["data"]["status"]["exec_info"]["queue_remaining"] for m in messages if m["type"] == "status"]


def of_prompt(messages: list[Any], prompt_id: str) -> list[Any]:
    """The messages about one prompt (status, which names none, left out)."""
    return [m for m in messages if m["type"] != "status" and m["data"].get("prompt_id") == prompt_id]


def _comparable(messages: list[Any]) -> list[Any]:
    """normalise(), and what the HTTP comparisons let differ too: the exception's class name
    (re.error became re.PatternError in Python 3.13), and `executed` and current_outputs
    (ComfyUI lists sets, in an order random per process)."""
    out = normalise(messages)
    for message in out:
        if message["type"] in ("execution_error", "execution_interrupted"):
            message["data"]["executed"] = sorted(message["data"]["executed"])
        if message["type"] == "execution_error":
            data = message["data"]
            data["exception_type"] = {"re.PatternError": "re.error"}.get(data["exception_type"],
                                                                        data["exception_type"])
            data["current_outputs"] = sorted(data["current_outputs"])
    return out


def same(got: list[Any], recorded: list[Any]) -> None:
    assert [m["type"] for m in got] == [m["type"] for m in recorded]
    assert _comparable(got) == _comparable(recorded)


@pytest.mark.parametrize("name, client_id, first", [
    ("ws_connect_only", "harness-ws-connect", None),
    ("ws_connect_no_client_id_param", None, None),
    ("ws_connect_feature_flags", "harness-ws-flags", {"type": "feature_flags",
                                                       "data": {"supports_preview_metadata": True}}),
    ("ws_connect_feature_flags_not_first", "harness-ws-flags-late", {"type": "hello", "data": {}}),
])
def test_connect(standin: ComfyUIStandIn, name: str, client_id: str | None, first: Any) -> None:
    recorded = recording(name)
    listener = Listener(standin.base_url, client_id, first)
    for sent in recorded.get("sent", [])[1:]:  # a later feature_flags gets no answer
        listener.ws.send(json.dumps(sent["message"]))
    got = listener.wait_for_count(len(recorded["messages"]))
    requests.get(standin.base_url + "/prompt", timeout=5)  # a round trip: anything more has arrived
    got = listener.snapshot()
    listener.close()
    if client_id is None:  # a server-made sid: 32 hex digits, like ComfyUI's uuid4().hex
        assert len(got[0]["data"].pop("sid")) == 32
        recorded["messages"][0]["data"].pop("sid")
    assert got == recorded["messages"]


def test_four_prompts_on_one_client_and_what_another_socket_sees(standin: ComfyUIStandIn,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """ws_fixed_client_multi: success, the identical prompt (cached), an execution error and
    an interrupt, all for client C; ws_other_client_view: socket W saw only `status`."""
    recorded = recording("ws_fixed_client_multi")
    observer = recording("ws_other_client_view")
    client = Client(standin)
    watcher = Listener(standin.base_url, observer["client_id"])
    own = Listener(standin.base_url, recorded["client_id"])
    wait_for(lambda: standin.ws.connected(recorded["client_id"]), 5)
    # The prompts' "work" (the stand-in's pause before the first output node), held by the
    # test: the first runs until the other three are queued; the fourth until interrupted.
    release_first = threading.Event()
    ids: list[str] = []

    def work() -> None:
        running = standin._queue.running_ids()
        if running == ids[:1]:
            release_first.wait(TIMEOUT)
        elif len(ids) == 4 and running == ids[3:]:
            standin._executor.interrupt.wait(TIMEOUT)

    monkeypatch.setattr(standin._executor, "pause", work)
    bodies = [item["request_body"] for item in recorded["post_prompt_responses"]]
    ids.append(client.submit(bodies[0]))
    wait_for(lambda: client.running_id() == ids[0], 5)
    ids.extend(client.submit(body) for body in bodies[1:])
    release_first.set()
    wait_for(lambda: any(m["type"] == "executing" and m["data"].get("node") == "3"
                         for m in of_prompt(own.snapshot(), ids[3])), 5)
    client.post("/interrupt", json={"prompt_id": ids[3]})
    got = own.wait_for_done(ids[3])
    seen_by_other = watcher.wait_for_count(len(observer["messages"]))
    own.close()
    watcher.close()
    recorded_ids = [item["response"]["prompt_id"] for item in recorded["post_prompt_responses"]]
    for ours, theirs in zip(ids, recorded_ids):
        same(of_prompt(got, ours), of_prompt(recorded["messages"], theirs))
    assert status_values(got) == status_values(recorded["messages"])
    assert {m["type"] for m in seen_by_other} == {"status"}
    assert status_values(seen_by_other) == status_values(observer["messages"])


def test_prompts_without_client_id_send_others_only_progress_state_and_interrupts(standin: ComfyUIStandIn) -> None:
    recorded = recording("ws_no_client_id")
    client = Client(standin)
    bodies = [item["request_body"] for item in recorded["post_prompt_responses"]]
    # In the recording session node 1 (the same EmptyImage) had just run: cached, as here.
    warm_up = copy.deepcopy(bodies[0])
    warm_up["prompt"]["2"]["inputs"]["seed"] += 1
    client.run(warm_up)
    observer = Listener(standin.base_url, recorded["client_id"])
    wait_for(lambda: standin.ws.connected(recorded["client_id"]), 5)
    ids = []
    for body in bodies[:2]:
        ids.append(client.submit(body))
        client.finished(ids[-1])
    standin.delay = 30.0
    ids.append(client.submit(bodies[2]))
    wait_for(lambda: client.running_id() == ids[2], 5)
    client.post("/interrupt", json={"prompt_id": ids[2]})
    client.finished(ids[2])
    got = wait_for(lambda: (m := observer.snapshot()) and m[-1]["type"] == "status"
                   and status_values(m)[-1] == 0 and m, 5)
    observer.close()
    recorded_ids = [item["response"]["prompt_id"] for item in recorded["post_prompt_responses"]]
    assert {m["type"] for m in got} == {m["type"] for m in recorded["messages"]} \
        == {"status", "progress_state", "execution_interrupted"}
    for ours, theirs in zip(ids, recorded_ids):
        same(of_prompt(got, ours), of_prompt(recorded["messages"], theirs))


def test_same_client_id_twice_newest_wins_until_an_older_one_closes(standin: ComfyUIStandIn) -> None:
    recorded = recording("ws_same_client_id_twice")
    client_id = recorded["client_id"]
    client = Client(standin)
    bodies = [item["request_body"] for item in recorded["post_prompt_responses"]]
    first = Listener(standin.base_url, client_id)
    first.wait_for_count(1)
    second = Listener(standin.base_url, client_id)
    second.wait_for_count(1)
    one = client.submit(bodies[0])
    second.wait_for_done(one)
    first.close()  # ComfyUI now forgets the id: the open second socket hears nothing more
    wait_for(lambda: not standin.ws.connected(client_id), 5)
    two = client.submit(bodies[1])
    client.finished(two)
    third = Listener(standin.base_url, client_id)
    third.wait_for_count(1)
    three = client.submit(bodies[2])
    third.wait_for_done(three)
    got = {"first": first.snapshot(), "second": second.snapshot(), "third": third.snapshot()}
    second.close()
    third.close()
    for name, listener_messages in got.items():
        same(listener_messages, recorded["sockets"][name]["messages"])


def test_a_socket_that_connects_mid_run_gets_the_running_node_without_a_prompt_id(
        standin: ComfyUIStandIn) -> None:
    recorded = recording("ws_reconnect_while_running")
    client = Client(standin)
    standin.delay = 30.0
    prompt_id = client.submit(recorded["post_prompt_responses"][0]["request_body"])
    wait_for(lambda: client.running_id() == prompt_id, 5)
    listener = Listener(standin.base_url, recorded["client_id"])
    listener.wait_for_count(2)
    standin.delay = 0.0
    got = listener.wait_for_done(prompt_id)
    listener.close()
    same(got, recorded["messages"])
