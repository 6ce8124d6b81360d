"""The ComfyUI stand-in must answer like the recordings of a real ComfyUI 0.3.64.

Recordings live in tests/fixtures/comfyui/ (<name>.headers.json: request and response
meta, <name>.json: JSON body). Ids, timestamps, tracebacks and the random part of temp
file names differ between runs and are normalised before comparing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.comfyui_standin import ComfyUIStandIn, build_node_specs
from tests.support.recordings import RECORDINGS, recording, recording_meta, workflow
from tests.support.standin import TIMEOUT, UUID_RE, Client, normalise, only_entry
from tests.support.waiting import wait_for

# Each recorded 400 and the workflow file that should produce it (None: only the recorded body).
VALIDATION_CASES = {
    "prompt_error_bad_values": "invalid_bad_values.json",
    "prompt_error_link_to_missing_node": "invalid_link_to_missing_node.json",
    "prompt_error_missing_input": "invalid_missing_input.json",
    "prompt_error_missing_model": "invalid_missing_model.json",
    "prompt_error_no_class_type": "invalid_no_class_type.json",
    "prompt_error_no_output_node": "invalid_no_output_node.json",
    "prompt_error_unknown_class": "invalid_unknown_class.json",
    "prompt_error_empty_prompt": None,
    "prompt_error_no_prompt_key": None,
}
SERVER_ERROR_CASES = [
    "prompt_error_malformed_json",
    "prompt_error_prompt_is_list",
    "queue_post_malformed_json",
    "history_max_items_bad",
]


# -- helpers --------------------------------------------------------------------------------

def recorded_request(name: str) -> Any:
    return recording_meta(name)["request_body"]


def sort_errors(body: dict[str, Any]) -> dict[str, Any]:
    """ComfyUI checks inputs in set order (random per process): compare errors order-free."""
    for node in body.get("node_errors", {}).values():
        node["errors"].sort(key=lambda e: (e["type"], e["extra_info"].get("input_name", "")))
    return body


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Callable[..., Client]]:
    started: list[ComfyUIStandIn] = []

    def make(delay: float = 0.0, **kwargs: Any) -> Client:
        standin = ComfyUIStandIn(tmp_path / f"root{len(started)}", port=0, delay=delay, **kwargs).start()
        started.append(standin)
        return Client(standin)

    yield make
    for standin in started:
        standin.stop()


@pytest.fixture
def client(make_client: Callable[..., Client]) -> Client:
    return make_client()


# -- simple endpoints -----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["system_stats", "api_prefix_system_stats"])
def test_system_stats_match_the_recording(client: Client, name: str) -> None:
    """ComfyUI's own values as recorded; the machine's (memory, OS, Python and PyTorch
    builds, the port in argv) only as keys."""
    meta, recorded = recording_meta(name), recording(name)
    response = client.get(meta["path"])
    assert response.status_code == meta["status"] == 200
    assert response.headers["Content-Type"] == meta["headers"]["Content-Type"]
    stats = response.json()
    machine = {"os", "ram_total", "ram_free", "python_version", "pytorch_version", "argv"}
    assert stats["system"].keys() == recorded["system"].keys()
    assert ({k: v for k, v in stats["system"].items() if k not in machine}
            == {k: v for k, v in recorded["system"].items() if k not in machine})
    port = str(client.standin.port)
    assert stats["system"]["argv"] == [port if arg == "8188" else arg for arg in recorded["system"]["argv"]]
    assert [device.keys() for device in stats["devices"]] == [device.keys() for device in recorded["devices"]]
    assert ([(d["name"], d["type"], d["index"]) for d in stats["devices"]]
            == [(d["name"], d["type"], d["index"]) for d in recorded["devices"]])


def recordings(pattern: str) -> list[str]:
    return sorted(p.name[: -len(".headers.json")] for p in RECORDINGS.glob(f"{pattern}.headers.json"))


# object_info_full is compared node by node below; the lists of input files after the
# recorded uploads in test_standin_inputs.py, which makes those uploads first.
@pytest.mark.parametrize("name", [name for name in recordings("object_info_*")
                                  if name != "object_info_full" and not name.endswith("_after_uploads")])
def test_object_info_matches_recording(client: Client, name: str) -> None:
    response = client.get(recording_meta(name)["path"])
    assert response.status_code == 200
    assert response.json() == recording(name)


@pytest.mark.parametrize("node_class", sorted(build_node_specs([])))
def test_each_node_is_described_as_in_the_full_object_info(client: Client, node_class: str) -> None:
    """The stand-in knows a few core nodes of the 496 in object_info_full (GET /object_info
    of ComfyUI 0.3.64 with no model installed); each is described exactly as recorded."""
    meta = recording_meta("object_info_full")
    response = client.get(meta["path"])
    assert response.status_code == meta["status"]
    assert response.headers["Content-Type"] == meta["headers"]["Content-Type"]
    assert response.json()[node_class] == recording("object_info_full")[node_class]


def test_features_free_and_get_prompt(client: Client) -> None:
    assert client.get("/features").json() == recording("features")
    free = client.post("/free", json=recorded_request("free"))
    assert (free.status_code, free.content) == (200, b"")
    assert client.get("/prompt").json() == recording("prompt_get_idle")


def test_unknown_route_is_aiohttp_404(client: Client) -> None:
    response = client.get("/no/such/route")
    assert response.status_code == 404
    assert response.text == "404: Not Found"


# -- POST /prompt ---------------------------------------------------------------------------

def test_prompt_success_shape_and_numbers(client: Client) -> None:
    recorded = recording("prompt_success")
    first = client.post("/api/prompt", json=recorded_request("prompt_success"))
    second = client.post("/prompt", json={"prompt": workflow("empty_preview.json")})
    assert first.status_code == second.status_code == 200
    assert first.headers["Content-Type"] == "application/json; charset=utf-8"
    assert first.json().keys() == recorded.keys()
    assert UUID_RE.fullmatch(first.json()["prompt_id"])
    assert first.json()["node_errors"] == {}
    assert second.json()["number"] == first.json()["number"] + 1


def test_caller_prompt_id_and_client_id_are_kept(client: Client) -> None:
    body = recorded_request("prompt_success_client_id_prompt_id")
    response = client.post("/prompt", json=body)
    assert response.json() == recording("prompt_success_client_id_prompt_id") | {"number": 0}
    entry = client.finished(body["prompt_id"])
    recorded = only_entry(recording("history_id_success_preview"))
    assert entry["prompt"][3] == recorded["prompt"][3]  # extra_data gains client_id


@pytest.mark.parametrize("name", sorted(VALIDATION_CASES))
def test_validation_errors_match_recordings(client: Client, name: str) -> None:
    meta = recording_meta(name)
    expected = sort_errors(normalise(recording(name)))
    bodies = [meta["request_body"]]
    if VALIDATION_CASES[name]:
        bodies.append({"prompt": workflow(VALIDATION_CASES[name])})
    for body in bodies:
        response = client.post("/prompt", json=body)
        assert response.status_code == meta["status"] == 400
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        assert sort_errors(normalise(response.json())) == expected
    assert client.get("/queue").json() == recording("queue_empty")


def test_missing_model_accepted_when_the_model_exists(make_client: Callable[..., Client]) -> None:
    client = make_client(models=["missing_model.safetensors"])
    _, entry = client.run({"prompt": workflow("invalid_missing_model.json")})
    assert entry["status"]["status_str"] == "success"
    assert entry["outputs"]["4"]["images"][0]["filename"] == "x_00001_.png"


def test_partial_node_errors_run_the_valid_outputs(client: Client) -> None:
    response = client.post("/prompt", json=recorded_request("prompt_success_partial_node_errors"))
    assert response.status_code == 200
    recorded = recording("prompt_success_partial_node_errors")
    assert response.json()["node_errors"] == recorded["node_errors"]
    entry = client.finished(response.json()["prompt_id"])
    expected = only_entry(recording("history_id_partial_node_errors"))
    expected["prompt"][0] = entry["prompt"][0]
    assert normalise(entry) == normalise(expected)


@pytest.mark.parametrize("name", SERVER_ERROR_CASES)
def test_malformed_requests_get_a_plain_text_500(client: Client, name: str) -> None:
    meta = recording_meta(name)
    body = meta.get("request_body")
    data = body if isinstance(body, str) else None
    response = client.session.request(meta["method"], client.base + meta["path"], data=data, timeout=TIMEOUT)
    assert response.status_code == 500
    assert response.headers["Content-Type"] == meta["headers"]["Content-Type"]
    assert response.text == meta["body_text"]


def test_origin_mismatch_is_403_with_empty_body(client: Client) -> None:
    body = recorded_request("prompt_origin_mismatch_403")
    refused = client.post("/prompt", json=body, headers={"Origin": "http://evil.example"})
    assert (refused.status_code, refused.content) == (403, b"")
    allowed = client.post("/prompt", json=body, headers={"Origin": client.base})
    assert allowed.status_code == 200


# -- queue, history, interrupt --------------------------------------------------------------

def test_queue_items_pending_quirk_and_queue_edits(make_client: Callable[..., Client]) -> None:
    client = make_client(delay=2.0)
    running = client.submit({"prompt": workflow("empty_preview.json")})
    wait_for(lambda: client.running_id() == running, timeout=TIMEOUT)
    later = client.submit({"prompt": workflow("empty_save.json")})
    front = client.post("/prompt", json={"prompt": workflow("empty_save.json"), "front": True}).json()

    queue = client.get("/queue").json()
    recorded = recording("queue_running_and_pending")
    assert queue.keys() == recorded.keys()
    for item in queue["queue_running"] + queue["queue_pending"]:
        assert [type(x) for x in item] == [type(x) for x in recorded["queue_running"][0]]
    assert [item[1] for item in queue["queue_running"]] == [running]
    assert {item[1] for item in queue["queue_pending"]} == {later, front["prompt_id"]}
    assert front["number"] < 0  # "front" jumps the queue with a negative number
    assert client.get("/prompt").json() == {"exec_info": {"queue_remaining": 3}}
    # Recorded quirk: pending and running prompts have no history entry yet.
    assert client.history(running) == {} and client.history(later) == {}

    deleted = client.post("/queue", json={"delete": [later, "not-a-real-id"]})
    assert (deleted.status_code, deleted.content) == (200, b"")
    assert [item[1] for item in client.get("/queue").json()["queue_pending"]] == [front["prompt_id"]]
    cleared = client.post("/queue", json=recorded_request("queue_clear"))
    assert (cleared.status_code, cleared.content) == (200, b"")
    assert client.get("/queue").json()["queue_pending"] == []
    client.post("/interrupt")
    assert client.finished(running)["status"]["status_str"] == "error"
    assert client.history(later) == {}


def test_unknown_history_id_is_empty(client: Client) -> None:
    meta = recording_meta("history_id_unknown")
    response = client.get(meta["path"])
    assert response.status_code == 200
    assert response.json() == recording("history_id_unknown") == {}
    assert client.get("/history").json() == recording("history_empty")


def test_finished_save_entry_matches_recording(client: Client) -> None:
    _, entry = client.run(recorded_request("prompt_success"))
    expected = only_entry(recording("history_id_success_save"))
    assert normalise(entry) == normalise(expected)
    assert entry["outputs"]["2"]["images"][0]["type"] == "output"


def test_finished_preview_entry_matches_recording(client: Client) -> None:
    _, entry = client.run(recorded_request("prompt_success_client_id_prompt_id"))
    expected = only_entry(recording("history_id_success_preview"))
    expected["prompt"][0] = entry["prompt"][0]
    assert normalise(entry) == normalise(expected)
    assert {image["type"] for image in entry["outputs"]["2"]["images"]} == {"temp"}


def test_text_nodes_compute_the_linked_filename_prefix(client: Client) -> None:
    _, entry = client.run(recorded_request("prompt_success_text"))
    expected = only_entry(recording("history_id_success_text"))
    assert entry["outputs"] == expected["outputs"]
    assert (Path(client.standin.output_dir) / "txt" / "Hello_patched_world_123_00001_.png").is_file()


def test_identical_back_to_back_prompt_is_cached(client: Client) -> None:
    body = {"prompt": workflow("empty_save.json")}
    _, first = client.run(body)
    _, second = client.run(body)
    recorded = only_entry(recording("history_id_cache_identical_back_to_back"))
    assert second["outputs"] == first["outputs"]
    assert second["status"]["messages"][1][1]["nodes"] == recorded["status"]["messages"][1][1]["nodes"]
    client.run({"prompt": workflow("empty_preview.json")})
    _, third = client.run(body)  # not back to back any more: runs again, next counter
    assert third["outputs"]["2"]["images"][0]["filename"] == "harness_save_00002_.png"


def test_history_paging_like_comfyui(client: Client) -> None:
    ids = [client.run({"prompt": workflow("empty_preview.json") | {"3": {
        "class_type": "PreviewAny", "inputs": {"source": f"run {i}"}}}})[0] for i in range(3)]
    assert list(client.get("/history").json()) == ids  # oldest first
    assert list(client.get("/history?max_items=1").json()) == ids[-1:]
    assert list(client.get("/history?max_items=2&offset=0").json()) == ids[:2]
    deleted = client.post("/history", json={"delete": [ids[0]]})
    assert (deleted.status_code, deleted.content) == (200, b"")
    assert list(client.get("/history").json()) == ids[1:]
    cleared = client.post("/history", json=recorded_request("history_post_clear"))
    assert (cleared.status_code, cleared.content) == (200, b"")
    assert client.get("/history").json() == recording("history_after_clear")


def test_history_is_capped_oldest_first(make_client: Callable[..., Client]) -> None:
    client = make_client(history_limit=2)
    ids = [client.run({"prompt": {"1": {"class_type": "PreviewAny", "inputs": {"source": str(i)}}}})[0]
           for i in range(5)]
    assert list(client.get("/history").json()) == ids[-3:]  # limit + 1 stay, like ComfyUI


def test_global_interrupt_matches_recording(make_client: Callable[..., Client]) -> None:
    client = make_client(delay=5.0)
    prompt_id = client.submit({"prompt": workflow("slow_noise_blur.json")})
    wait_for(lambda: client.running_id() == prompt_id, timeout=TIMEOUT)
    response = client.post("/interrupt", data=recorded_request("interrupt_global"))
    assert (response.status_code, response.content) == (200, b"")
    # Interruptible: the entry arrives long before the 5 s delay would have run out.
    entry = only_entry(wait_for(lambda: client.history(prompt_id), timeout=3.0))
    expected = only_entry(recording("history_id_interrupted"))
    assert entry.keys() == expected.keys()
    assert (entry["outputs"], entry["meta"]) == (expected["outputs"], expected["meta"]) == ({}, {})
    assert {k: v for k, v in entry["status"].items() if k != "messages"} == {"status_str": "error",
                                                                             "completed": False}
    events = [message[0] for message in entry["status"]["messages"]]
    assert events == [message[0] for message in expected["status"]["messages"]]
    last, recorded_last = entry["status"]["messages"][-1][1], expected["status"]["messages"][-1][1]
    assert last.keys() == recorded_last.keys()
    assert (last["node_id"], last["node_type"]) == (recorded_last["node_id"], recorded_last["node_type"])
    assert sorted(last["executed"]) == sorted(recorded_last["executed"])
    assert list(Path(client.standin.temp_dir).iterdir()) == []


def test_targeted_interrupt_only_hits_the_running_prompt(make_client: Callable[..., Client]) -> None:
    client = make_client(delay=0.6)
    first = client.submit({"prompt": workflow("empty_preview.json")})
    second = client.submit({"prompt": workflow("empty_save.json")})
    wait_for(lambda: client.running_id() == first, timeout=TIMEOUT)
    client.post("/interrupt", json={"prompt_id": second})  # pending, not running: no effect
    assert client.finished(first)["status"]["status_str"] == "success"
    wait_for(lambda: client.running_id() == second, timeout=TIMEOUT)
    client.post("/interrupt", json={"prompt_id": second})
    last = client.finished(second)["status"]["messages"][-1]
    assert last[0] == "execution_interrupted"
    idle = client.post("/interrupt")
    assert (idle.status_code, idle.content) == (200, b"")


def test_save_outside_output_is_an_execution_error(client: Client) -> None:
    _, entry = client.run({"prompt": workflow("exec_error_save_outside_output.json")})
    expected = only_entry(recording("history_id_exec_error_save_outside_output"))
    assert entry["outputs"] == expected["outputs"] == {}
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    last, recorded_last = entry["status"]["messages"][-1], expected["status"]["messages"][-1]
    assert last[0] == recorded_last[0] == "execution_error"
    assert last[1].keys() == recorded_last[1].keys()
    for key in ("node_id", "node_type", "executed", "exception_type", "current_outputs"):
        assert last[1][key] == recorded_last[1][key], key
    assert last[1]["exception_message"].startswith("**** ERROR: Saving image outside the output folder")
    assert last[1]["current_inputs"].keys() == recorded_last[1]["current_inputs"].keys()
    assert isinstance(last[1]["traceback"], list) and last[1]["traceback"]


def test_bad_regex_keeps_outputs_finished_before_the_error(client: Client) -> None:
    _, entry = client.run(recorded_request("prompt_accepted_exec_error_regex"))
    expected = only_entry(recording("history_id_exec_error_bad_regex"))
    assert normalise(entry["outputs"]) == normalise(expected["outputs"])
    last = entry["status"]["messages"][-1][1]
    assert (last["node_id"], last["node_type"]) == ("4", "RegexReplace")
    assert last["exception_message"] == expected["status"]["messages"][-1][1]["exception_message"]
    assert last["exception_type"] in {"re.error", "re.PatternError"}  # name depends on Python version


# -- /view ----------------------------------------------------------------------------------

# Views of what the recorded input session made (uploads, pictures loaded and saved): that
# session is replayed in order, and each of its views compared, in test_standin_inputs.py.
INPUT_SESSION_PATTERNS = ("view_input_*", "view_mask_*", "view_load_image_*", "view_inpaint_*",
                          "view_temp_upload")
INPUT_SESSION_VIEWS = {name for pattern in INPUT_SESSION_PATTERNS for name in recordings(pattern)}
VIEW_CASES = [name for name in recordings("view_*") if name not in INPUT_SESSION_VIEWS]


@pytest.fixture
def view_client(client: Client) -> tuple[Client, str]:
    """A stand-in holding the files the recorded /view requests ask for, made by running
    the recorded prompts."""
    client.run(recorded_request("prompt_success"))  # harness_save_00001_.png
    client.run(recorded_request("prompt_success_chain"))  # harness/chain_00001_.png
    _, preview = client.run(recorded_request("prompt_success_client_id_prompt_id"))
    return client, preview["outputs"]["2"]["images"][0]["filename"]


@pytest.mark.parametrize("name", VIEW_CASES)
def test_view_status_codes_match_recordings(view_client: tuple[Client, str], name: str) -> None:
    client, temp_name = view_client
    meta = recording_meta(name)
    path = meta["path"].replace("ComfyUI_temp_oncmo_00001_.png", temp_name)
    response = client.session.request(meta["method"], client.base + path, timeout=TIMEOUT)
    assert response.status_code == meta["status"]
    if meta["status"] != 200:
        assert response.content == b""
        return
    assert int(response.headers["Content-Length"]) > 0
    if "preview=" not in path:  # the stand-in serves the original instead of re-encoding
        for header in ("Content-Type", "Content-Disposition", "Etag", "Accept-Ranges"):
            assert header in response.headers
        assert response.headers["Content-Type"] == meta["headers"]["Content-Type"]
    if meta["method"] == "GET":
        assert response.content.startswith(b"\x89PNG\r\n\x1a\n")  # the stand-in's own PNG


def test_view_streams_a_large_file(client: Client) -> None:
    size = 210 * 1024 * 1024
    big = Path(client.standin.output_dir) / "big.bin"
    with open(big, "wb") as handle:
        handle.truncate(size)  # sparse: cheap to create
    head = client.head("/view?filename=big.bin")
    assert (head.status_code, int(head.headers["Content-Length"])) == (200, size)
    received = 0
    with client.get("/view?filename=big.bin", stream=True) as response:
        assert response.status_code == 200
        for chunk in response.iter_content(1 << 20):
            received += len(chunk)
    assert received == size
    partial = client.get("/view?filename=big.bin", headers={"Range": "bytes=10-19"})
    assert (partial.status_code, partial.content) == (206, b"\x00" * 10)
    os.remove(big)


# -- restart --------------------------------------------------------------------------------

def test_restart_clears_history_and_temp_but_keeps_output(client: Client) -> None:
    base = client.base
    save_id, save = client.run(recorded_request("prompt_success"))
    _, preview = client.run({"prompt": workflow("empty_preview.json")})
    output_file = Path(client.standin.output_dir) / save["outputs"]["2"]["images"][0]["filename"]
    temp_name = preview["outputs"]["2"]["images"][0]["filename"]
    assert (Path(client.standin.temp_dir) / temp_name).is_file()

    client.standin.restart()

    assert client.standin.base_url == base
    assert client.get("/history").json() == recording("history_after_restart")
    assert client.history(save_id) == {}
    assert output_file.is_file()
    assert list(Path(client.standin.temp_dir).iterdir()) == []
    assert client.get(f"/view?filename={temp_name}&type=temp").status_code == 404
    assert client.get(f"/view?filename={output_file.name}&type=output").status_code == 200
    again = client.post("/prompt", json=recorded_request("prompt_success")).json()
    assert again["number"] == 0  # a restarted ComfyUI counts from 0 again
    # Not cached after a restart, and numbering continues from the files on disk.
    images = client.finished(again["prompt_id"])["outputs"]["2"]["images"]
    assert images[0]["filename"] == "harness_save_00002_.png"


def test_requests_are_counted(client: Client) -> None:
    client.get("/queue")
    client.get("/history?max_items=1")
    assert client.standin.requests[-2:] == [("GET", "/queue"), ("GET", "/history?max_items=1")]
