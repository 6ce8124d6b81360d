"""A fleet of two ComfyUI stand-ins behind the handlers (issue 13): where a new prompt goes
(capability, load, draining, failover), how a prompt is found again (one lookup, one
request), and what the fleet-wide answers report. S3, DynamoDB and SSM from moto
in-process; ComfyUI from two real stand-ins on 127.0.0.1."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests

from comfy_core import reset_container_state
from comfy_core.fleet.pool import get_fleet
from comfy_core.live import state as prompt_state
from devtools.comfyui_standin import ComfyUIStandIn
from tests.support.handlers import event, invoke
from tests.support.jobs import create_prompt_state_table
from tests.support.waiting import wait_for

TABLE = "prompt-state"
CHECKPOINT = "v1-5-pruned-emaonly.safetensors"  # what workflows/sd15_txt2img.json loads
REGISTRY = "comfy/backends"


@pytest.fixture
def standins(tmp_path: Any) -> Iterator[dict[str, ComfyUIStandIn]]:
    # Only gpu-a has the checkpoint sd15_txt2img needs; both can run the image-only workflows.
    pair = {
        "gpu-a": ComfyUIStandIn(tmp_path / "a", delay=0.0, models=[CHECKPOINT]).start(),
        "gpu-b": ComfyUIStandIn(tmp_path / "b", delay=0.0, models=["other.safetensors"]).start(),
    }
    yield pair
    for standin in pair.values():
        standin.stop()


@pytest.fixture
def fleet_env(s3: Any, standins: dict[str, ComfyUIStandIn], monkeypatch: pytest.MonkeyPatch) -> dict[str, ComfyUIStandIn]:
    urls = ",".join(f"{name}={standin.base_url}" for name, standin in standins.items())
    monkeypatch.setenv("COMFYUI_BASE_URL", urls)
    monkeypatch.setenv("PROMPT_STATE_TABLE", TABLE)
    create_prompt_state_table(TABLE)
    reset_container_state()
    return standins


def run(name: str, body: dict[str, Any], **headers: str) -> tuple[int, dict[str, Any]]:
    evt = event("run_workflow", pathParameters={"workflow_name": name}, body=json.dumps(body))
    evt["headers"] = {**(evt.get("headers") or {}), **headers}
    return invoke("run_workflow", evt)


def task_status(prompt_id: str) -> dict[str, Any]:
    status, body = invoke("task_status", event("task_status", pathParameters={"prompt_id": prompt_id}))
    assert status == 200, body
    return body


def queued_ids(standin: ComfyUIStandIn) -> set[str]:
    queue = requests.get(f"{standin.base_url}/queue", timeout=5).json()
    history = requests.get(f"{standin.base_url}/history", timeout=5).json()
    return {item[1] for key in ("queue_running", "queue_pending") for item in queue[key]} | set(history)


def finished(standin: ComfyUIStandIn, prompt_id: str) -> None:
    wait_for(lambda: requests.get(f"{standin.base_url}/history/{prompt_id}", timeout=5).json(), timeout=10)


# -- routing ---------------------------------------------------------------------------------
def test_a_workflow_goes_only_to_a_backend_that_has_its_model(fleet_env) -> None:
    for _ in range(4):
        status, body = run("sd15_txt2img", {"prompt": "a lighthouse"})
        assert status == 200, body
        assert body["backend"] == "gpu-a"
        assert body["prompt_id"] in queued_ids(fleet_env["gpu-a"])
    assert not queued_ids(fleet_env["gpu-b"])


def test_a_workflow_no_backend_can_run_is_a_400_naming_what_each_lacks(fleet_env, s3) -> None:
    graph = json.loads((s3.get_object(Bucket="workflow-bucket", Key="workflows/sd15_txt2img.json")["Body"]).read())
    graph["prompt"]["99"] = {"class_type": "NoSuchNode", "inputs": {}}  # the file wraps its prompt
    s3.put_object(Bucket="workflow-bucket", Key="workflows/needs_more.json", Body=json.dumps(graph))
    status, body = run("needs_more", {"prompt": "x"})
    assert (status, body["status_code"]) == (400, 400)
    assert body["error"] == "No ComfyUI backend can run this workflow"
    assert body["backends"]["gpu-a"] == {"missing_nodes": ["NoSuchNode"], "missing_models": []}
    assert body["backends"]["gpu-b"]["missing_nodes"] == ["NoSuchNode"]
    assert body["backends"]["gpu-b"]["missing_models"] == [
        {"node": "4", "class_type": "CheckpointLoaderSimple", "input": "ckpt_name", "value": CHECKPOINT}]
    assert not queued_ids(fleet_env["gpu-a"]) and not queued_ids(fleet_env["gpu-b"])


def test_a_new_prompt_goes_to_the_less_loaded_backend(fleet_env) -> None:
    busy = fleet_env["gpu-a"]
    busy.delay = 5.0  # three prompts waiting there
    graph = json.loads(Path_workflow("empty_save"))
    for _ in range(3):
        requests.post(f"{busy.base_url}/prompt", json={"prompt": graph}, timeout=5).raise_for_status()
    for _ in range(2):  # the router counts its own submissions: both go to the idle one
        status, body = run("empty_save", {})
        assert status == 200 and body["backend"] == "gpu-b"
    busy.delay = 0.0


def Path_workflow(name: str) -> str:  # noqa: N802 - reads like the path it is
    from tests.support.handlers import ROOT

    return (ROOT / "workflows" / f"{name}.json").read_text(encoding="utf-8")


def test_a_draining_backend_in_the_registry_gets_no_new_prompts(fleet_env, monkeypatch) -> None:
    ssm = boto3.client("ssm", region_name="us-east-1")
    registry = {"backends": [{"name": name, "url": standin.base_url, "drain": name == "gpu-b"}
                             for name, standin in fleet_env.items()]}
    ssm.put_parameter(Name=f"/{REGISTRY}", Type="String", Value=json.dumps(registry))
    monkeypatch.setenv("COMFYUI_BASE_URL", "http://unused.test:8188")  # the registry wins
    monkeypatch.setenv("COMFYUI_BACKENDS_PARAMETER", REGISTRY)
    reset_container_state()
    answers = [run("empty_save", {})[1] for _ in range(3)]
    assert {answer["backend"] for answer in answers} == {"gpu-a"}

    # Drained everywhere: a 503 with Retry-After, nothing sent.
    registry["backends"][0]["drain"] = True
    ssm.put_parameter(Name=f"/{REGISTRY}", Type="String", Value=json.dumps(registry), Overwrite=True)
    reset_container_state()
    status, body = run("empty_save", {})
    assert (status, body["error"]) == (503, "Every ComfyUI backend is draining; retry later")
    response = as_response("run_workflow", event("run_workflow", pathParameters={"workflow_name": "empty_save"},
                                                 body="{}"))
    assert (response.status_code, response.headers["Retry-After"]) == (503, "30")


def test_a_backend_that_refuses_connections_is_skipped(fleet_env, monkeypatch) -> None:
    fleet_env["gpu-a"].stop()
    status, body = run("empty_save", {})
    assert status == 200 and body["backend"] == "gpu-b"


def test_a_keyed_retry_asks_the_recorded_backend_and_never_submits_twice(fleet_env) -> None:
    """A keyed submission (Idempotency-Key, job id) whose first answer was lost is retried
    with the same prompt id, from another container: the record says where it went."""
    from comfy_core import jobs
    from comfy_core.workflows.store import get_store

    prompt_id = jobs.keyed_prompt_id("http", "k-1", {"x": 1})
    first = jobs.run_workflow(get_store(), "empty_save", {}, prompt_id=prompt_id)
    for _ in range(3):
        reset_container_state()  # another container: fresh loads, shuffled ties
        again = jobs.run_workflow(get_store(), "empty_save", {}, prompt_id=prompt_id)
        assert (again["prompt_id"], again["backend"]) == (prompt_id, first["backend"])
    holders = [name for name, standin in fleet_env.items() if prompt_id in queued_ids(standin)]
    assert holders == [first["backend"]]


# -- finding a prompt again ------------------------------------------------------------------
def test_task_status_costs_one_lookup_and_one_comfyui_request(fleet_env) -> None:
    body = run("empty_save", {})[1]
    backend = fleet_env[body["backend"]]
    finished(backend, body["prompt_id"])
    reset_container_state()
    gets = count_dynamodb_calls()
    answer = task_status(body["prompt_id"])
    assert answer["status"] == "completed" and answer["backend"] == body["backend"]
    assert get_fleet().request_count == 1
    assert gets == ["GetItem"]


def count_dynamodb_calls() -> list[str]:
    calls: list[str] = []
    client = prompt_state.dynamodb_client()
    client.meta.events.register("before-call.dynamodb.*",
                                lambda model, **_: calls.append(model.name))
    return calls


def test_cancel_reaches_the_backend_that_holds_the_prompt(fleet_env) -> None:
    for standin in fleet_env.values():
        standin.delay = 5.0
    ids = [run("empty_save", {})[1] for _ in range(4)]
    pending = [answer for answer in ids if answer["prompt_id"] in pending_ids(fleet_env[answer["backend"]])]
    assert pending, ids
    target = pending[0]
    status, body = invoke("cancel_task", event("cancel_task", pathParameters={"prompt_id": target["prompt_id"]}))
    assert (status, body["status"]) == (200, "cancelled")
    assert target["prompt_id"] not in queued_ids(fleet_env[target["backend"]])
    for standin in fleet_env.values():
        standin.delay = 0.0


def pending_ids(standin: ComfyUIStandIn) -> set[str]:
    return {item[1] for item in requests.get(f"{standin.base_url}/queue", timeout=5).json()["queue_pending"]}


# -- fleet-wide answers ----------------------------------------------------------------------
def test_queue_and_status_report_per_backend_and_in_total(fleet_env) -> None:
    fleet_env["gpu-a"].delay = 5.0
    graph = json.loads(Path_workflow("empty_save"))
    for _ in range(3):
        requests.post(f"{fleet_env['gpu-a'].base_url}/prompt", json={"prompt": graph}, timeout=5)
    status, queue = invoke("queue", event("queue"))
    assert status == 200
    assert queue["running_count"] + queue["pending_count"] == 3
    assert queue["backends"]["gpu-a"]["running_count"] + queue["backends"]["gpu-a"]["pending_count"] == 3
    assert queue["backends"]["gpu-b"] == {"draining": False, "healthy": True, "running_count": 0, "pending_count": 0}
    assert {item["backend"] for item in queue["queue_pending"]} == {"gpu-a"}

    fleet_env["gpu-b"].stop()
    status, stats = invoke("system_status", event("system_status"))
    assert status == 200 and "system" in stats  # the original shape, from a backend that answered
    assert stats["fleet"] == {"backends": 2, "healthy": 1, "draining": 0}
    assert stats["backends"]["gpu-b"]["healthy"] is False and stats["backends"]["gpu-b"]["status_code"] == 502
    status, queue = invoke("queue", event("queue"))
    assert status == 200 and queue["backends"]["gpu-b"]["healthy"] is False
    fleet_env["gpu-a"].delay = 0.0


def test_history_merges_the_backends_newest_first_within_max_items(fleet_env) -> None:
    ids = {}
    for name, standin in fleet_env.items():
        for _ in range(2):
            answer = requests.post(f"{standin.base_url}/prompt",
                                   json={"prompt": json.loads(Path_workflow("empty_save"))}, timeout=5).json()
            finished(standin, answer["prompt_id"])
            ids[answer["prompt_id"]] = name
            time.sleep(0.01)  # distinct start times
    status, history = invoke("history", event("history", queryStringParameters={"max_items": "3"}))
    assert status == 200
    assert len(history) == 3
    assert all(entry["backend"] == ids[prompt_id] for prompt_id, entry in history.items())
    assert list(history) == list(ids)[1:]  # the newest three, oldest first as ComfyUI orders them

    status, body = invoke("history", event("history", queryStringParameters={"offset": "1"}))
    assert status == 400 and "backend=NAME" in body["error"]
    status, only_b = invoke("history", event("history", queryStringParameters={"backend": "gpu-b", "offset": "0"}))
    assert status == 200 and {ids[prompt_id] for prompt_id in only_b} == {"gpu-b"} and len(only_b) == 2


# -- a backend that disappears ---------------------------------------------------------------
def test_a_vanished_backends_unfinished_prompt_is_an_error_after_the_grace(fleet_env, monkeypatch) -> None:
    slow = fleet_env["gpu-b"]
    slow.delay = 30.0
    fleet_env["gpu-a"].stop()  # everything goes to gpu-b
    body = run("empty_save", {})[1]
    assert body["backend"] == "gpu-b"
    slow.stop()
    # Within the grace period: ComfyUI trouble, the prompt may come back.
    status, answer = invoke("task_status", event("task_status", pathParameters={"prompt_id": body["prompt_id"]}))
    assert status == 502 and answer["error"] == "ComfyUI is unreachable"
    # Last seen long ago: the prompt is lost, and says so.
    prompt_state.record_seen(["gpu-b"])
    monkeypatch.setattr(prompt_state, "now", lambda: time.time() + 3600)
    answer = task_status(body["prompt_id"])
    assert answer["status"] == "error" and answer["error"]["type"] == "backend_gone"
    assert "gpu-b" in answer["message"] and answer["backend"] == "gpu-b"


# -- the contract ----------------------------------------------------------------------------
def as_response(function: str, evt: dict[str, Any]) -> requests.Response:
    """A handler's answer as the HTTP response API Gateway would send."""
    import importlib

    from tests.support.lambda_context import FakeLambdaContext

    import io

    import urllib3
    from requests.adapters import HTTPAdapter

    raw = importlib.import_module(f"functions.{function}.app").lambda_handler(evt, FakeLambdaContext())
    body = raw["body"].encode()
    answer = urllib3.HTTPResponse(body=io.BytesIO(body), headers=raw["headers"], status=raw["statusCode"],
                                  preload_content=False)
    response = HTTPAdapter().build_response(requests.Request("GET", "https://api.test/").prepare(), answer)
    response._content = body  # noqa: SLF001 - read once here, as requests would
    return response


def test_the_fleets_answers_match_the_documented_contract(fleet_env) -> None:
    from tests.support.contract import check_response

    submitted = run("empty_save", {})[1]
    finished(fleet_env[submitted["backend"]], submitted["prompt_id"])
    other = next(name for name in fleet_env if name != submitted["backend"])
    fleet_env[other].stop()  # one backend down (not the prompt's): its part of each answer says so
    prompt = {"prompt_id": submitted["prompt_id"]}
    for function, method, path, evt in [
        ("queue", "get", "/api/queue", event("queue")),
        ("system_status", "get", "/api/status", event("system_status")),
        ("test_comfy", "get", "/api/test_comfy", event("test_comfy")),
        ("history", "get", "/api/history", event("history")),
        ("task_status", "get", "/api/task_status/{prompt_id}", event("task_status", pathParameters=prompt)),
        ("run_workflow", "post", "/api/workflow/{workflow_name}",
         event("run_workflow", pathParameters={"workflow_name": "empty_save"}, body="{}")),
        ("run_workflow", "post", "/api/workflow/{workflow_name}",
         event("run_workflow", pathParameters={"workflow_name": "sd15_txt2img"}, body="{}")),
    ]:
        response = as_response(function, evt)
        assert response.status_code < 500, (function, response.text)
        check_response(method, path, response)


def test_an_input_image_goes_to_the_backend_that_runs_the_prompt(fleet_env) -> None:
    import base64

    from tests.support.recordings import recorded_file

    png = base64.b64encode(recorded_file("view_temp.png")).decode()
    for _ in range(4):
        body = run("img2img_invert", {"image": {"base64": png}})[1]
        for name, standin in fleet_env.items():
            uploads = standin.requests.count(("POST", "/upload/image"))
            prompts = standin.requests.count(("POST", "/prompt"))
            assert uploads == prompts, (name, uploads, prompts)  # each upload beside its prompt
        assert body["prompt_id"] in queued_ids(fleet_env[body["backend"]])


def test_a_prompt_whose_backend_cannot_be_recorded_is_not_sent(fleet_env, monkeypatch) -> None:
    """A retry trusts "no record, never sent": so without the record nothing goes out."""
    monkeypatch.setattr(prompt_state, "record_backend", lambda *args, **kwargs: False)
    status, body = run("empty_save", {})
    assert (status, body["status_code"]) == (503, 503) and body["prompt_id"]
    assert all(("POST", "/prompt") not in standin.requests for standin in fleet_env.values())


def test_a_first_keyed_submission_does_not_ask_every_backend_for_its_prompt(fleet_env) -> None:
    from comfy_core import jobs
    from comfy_core.workflows.store import get_store

    prompt_id = jobs.keyed_prompt_id("http", "k-2", {"x": 2})
    jobs.run_workflow(get_store(), "empty_save", {}, prompt_id=prompt_id)
    asked = [request for standin in fleet_env.values() for request in standin.requests
             if request[1] == "/queue" or request[1].startswith("/history")]
    assert asked == []  # its missing record is the answer: one GetItem, no probe


def test_convert_uses_the_named_backends_node_definitions(fleet_env) -> None:
    ui = Path_workflow("ui_text_label")
    status, body = invoke("convert", event("convert", body=ui, queryStringParameters={"backend": "gpu-b"}))
    assert status == 200 and body["prompt"]
    asked = {name: ("GET", "/object_info") in standin.requests for name, standin in fleet_env.items()}
    assert asked == {"gpu-a": False, "gpu-b": True}
    status, body = invoke("convert", event("convert", body=ui, queryStringParameters={"backend": "gpu-z"}))
    assert (status, body["error"]) == (400, "No ComfyUI backend named 'gpu-z'; GET /api/queue lists them")


def test_an_unknown_prompt_reads_its_prompt_state_once(fleet_env) -> None:
    """The fleet's lookup already read the item that would say `cancelled`: not read again."""
    reset_container_state()
    gets = count_dynamodb_calls()
    answer = task_status("00000000-0000-4000-8000-000000000000")
    assert answer["status"] == "not_found"
    assert gets == ["GetItem"]


def test_max_queue_depth_applies_per_backend_on_the_loads_routing_read(fleet_env, monkeypatch) -> None:
    monkeypatch.setenv("MAX_QUEUE_DEPTH", "2")
    reset_container_state()
    full = fleet_env["gpu-a"]  # the only one with sd15_txt2img's checkpoint
    full.delay = 5.0
    for _ in range(2):
        requests.post(f"{full.base_url}/prompt", json={"prompt": json.loads(Path_workflow("empty_save"))}, timeout=5)
    status, body = run("sd15_txt2img", {"prompt": "x"})
    assert (status, body["status_code"]) == (429, 429)
    assert full.requests.count(("GET", "/prompt")) == 1  # routing's read, not asked twice
    status, body = run("empty_save", {})
    assert status == 200 and body["backend"] == "gpu-b"  # the full one is passed over
    full.delay = 0.0
