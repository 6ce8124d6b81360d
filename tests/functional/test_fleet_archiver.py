"""The archiver in front of a fleet (issue 13): the schedule sweeps every backend, each on
its own; one prompt is archived from the backend that holds it; manifests and events name
the backend; the sweep emits per-backend and fleet metrics for a scaling policy.

Two ComfyUIs, `a` and `b`, each a StreamingComfy of its own (routed by base URL, so calls
are counted per backend); S3, DynamoDB, SSM and EventBridge from moto in process.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from comfy_core import reset_container_state
from comfy_core.announce import notify
from comfy_core.archive import sweep as archive
from comfy_core.comfyui import client as client_module
from comfy_core.live import state as prompt_state
from comfy_core.observability import metrics
from comfy_core.storage import s3_client
from functions.archiver.app import lambda_handler
from tests.support.fake_comfy import StreamingComfy
from tests.support.handlers import event
from tests.support.jobs import capture_events, create_prompt_state_table, events_in
from tests.support.lambda_context import FakeLambdaContext
from tests.support.recordings import recorded_file, recording

BUCKET = "image-bucket"
TABLE = "prompt-state"
URLS = {"a": "http://gpu-a.test:8188", "b": "http://gpu-b.test:8188"}
SAVE_ID = "aa5001e0-e7a3-4f42-a12c-f2f26746c0e6"  # on a: one output file
PREVIEW_ID = "11111111-2222-3333-4444-555555555555"  # on b: two temp files
SAVE_FILE = ("output", "", "harness_save_00001_.png")
PREVIEW_FILES = [("temp", "", f"ComfyUI_temp_oncmo_0000{n}_.png") for n in (1, 2)]
REGISTRY = "comfy/backends"


def queued(prompt_id: str) -> list[Any]:
    """A queue item as GET /queue lists it: [number, prompt_id, graph, extra_data, outputs]."""
    return [1, prompt_id, {}, {}, []]


@pytest.fixture
def comfy(monkeypatch: pytest.MonkeyPatch) -> dict[str, StreamingComfy]:
    """Backend name -> its ComfyUI. `a` runs one prompt and has two waiting; `b` is idle."""
    a = StreamingComfy(history=dict(recording("history_id_success_save")))
    a.files[SAVE_FILE] = recorded_file("view_output.png")
    a.routes[("GET", "/queue")] = (200, {
        "queue_running": [queued("0c0ffee0-0000-4000-8000-00000000000a")],
        "queue_pending": [queued(f"0c0ffee0-0000-4000-8000-00000000000{n}") for n in (1, 2)]})
    b = StreamingComfy(history=dict(recording("history_id_success_preview")))
    for name in PREVIEW_FILES:
        b.files[name] = recorded_file("view_temp.png")
    sessions = {"a": a, "b": b}
    by_url = {URLS[name]: session for name, session in sessions.items()}
    monkeypatch.setattr(client_module, "_new_session", lambda settings: by_url[settings.comfyui_base_url])
    return sessions


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, comfy: dict[str, StreamingComfy]) -> Iterator[str]:
    """The fleet's environment; yields the URL of a queue receiving every event."""
    monkeypatch.setenv("COMFYUI_BASE_URL", ",".join(f"{name}={url}" for name, url in URLS.items()))
    monkeypatch.setenv("IMAGE_BUCKET", BUCKET)
    monkeypatch.setenv("PROMPT_STATE_TABLE", TABLE)
    reset_container_state()
    metrics.clear_metrics()
    with mock_aws():
        s3_client().create_bucket(Bucket=BUCKET)
        create_prompt_state_table(TABLE)
        yield capture_events({"source": ["comfy-serverless-api"]})
    metrics.clear_metrics()


def sweep() -> dict[str, Any]:
    return lambda_handler(event("archiver_scheduled"), FakeLambdaContext())


def emf(output: str) -> dict[tuple[str | None, str], float]:
    """(Backend dimension or None, metric name) -> value, from the EMF lines printed."""
    found: dict[tuple[str | None, str], float] = {}
    for line in output.splitlines():
        if '"_aws"' not in line:
            continue
        document = json.loads(line)
        for directive in document["_aws"]["CloudWatchMetrics"]:
            dimensions = {name for names in directive["Dimensions"] for name in names}
            backend = document["Backend"] if "Backend" in dimensions else None
            for item in directive["Metrics"]:
                value = document[item["Name"]]
                key = (backend, item["Name"])
                found[key] = found.get(key, 0) + (sum(value) if isinstance(value, list) else value)
    return found


def by_type(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for item in events:
        found.setdefault(item["detail-type"], []).append(item["detail"])
    return found


# -- the schedule -------------------------------------------------------------------------------
def test_the_schedule_archives_the_prompts_of_every_backend(aws: str, comfy: dict[str, StreamingComfy]) -> None:
    summary = sweep()
    assert summary["status"] == "ok" and summary["error"] is None
    assert (summary["prompts_archived"], summary["images_archived"]) == (2, 3)  # totals
    assert {name: (part["status"], part["prompts_archived"], part["images_archived"])
            for name, part in summary["backends"].items()} == {"a": ("ok", 1, 1), "b": ("ok", 1, 2)}
    assert {p["prompt_id"]: p["backend"] for p in summary["prompts"]} == {SAVE_ID: "a", PREVIEW_ID: "b"}
    assert archive.load_manifest(SAVE_ID)["backend"] == "a"
    assert archive.load_manifest(PREVIEW_ID)["backend"] == "b"
    # Each backend asked once for its queue and once for its history, then only for its files.
    assert comfy["a"].paths() == ["/queue", "/history", "/view"]
    assert comfy["b"].paths() == ["/queue", "/history", "/view", "/view"]
    assert json.dumps(summary)


def test_a_backend_that_is_down_fails_alone(aws: str, comfy: dict[str, StreamingComfy],
                                            capsys: pytest.CaptureFixture) -> None:
    comfy["b"].down_after = 0  # every connection to b refused
    summary = sweep()
    assert summary["status"] == "failed" and summary["prompts_archived"] == 1
    assert summary["backends"]["a"]["status"] == "ok"
    down = summary["backends"]["b"]
    assert (down["status"], down["healthy"], down["queue_running"]) == ("failed", False, None)
    assert summary["error"].startswith("b: ComfyUI queue unavailable") and "a:" not in summary["error"]
    assert archive.load_manifest(SAVE_ID)["files"][0]["archived"] is True
    assert archive.load_manifest(PREVIEW_ID) is None
    assert comfy["b"].paths() == ["/queue"]  # not asked for its history after that
    emitted = emf(capsys.readouterr().out)
    assert emitted[(None, "ArchiveRunFailed")] == 1  # one per failed backend
    assert (emitted[("a", "BackendHealthy")], emitted[("b", "BackendHealthy")]) == (1, 0)
    assert ("b", "BackendQueueDepth") not in emitted  # unknown, not zero
    assert emitted[(None, "FleetHealthyBackends")] == 1


def test_only_backends_that_answered_are_stamped_as_seen(aws: str, comfy: dict[str, StreamingComfy],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prompt_state, "now", lambda: 1_700_000_000.0)
    comfy["a"].down_after = 0
    sweep()
    assert prompt_state.last_seen("a") is None
    assert prompt_state.last_seen("b") == 1_700_000_000.0


def test_one_backends_sweep_going_wrong_does_not_stop_the_other(aws: str, comfy: dict[str, StreamingComfy],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    original = archive._candidates

    def broken_on_b(items: Any) -> Any:
        found = original(items)
        if any(prompt_id == PREVIEW_ID for prompt_id, _ in found):
            raise KeyError("a bug")
        return found

    monkeypatch.setattr(archive, "_candidates", broken_on_b)
    summary = sweep()
    assert summary["backends"]["a"]["prompts_archived"] == 1
    assert summary["backends"]["b"]["status"] == "failed"
    assert "KeyError" not in summary["error"] and "a bug" not in summary["error"]


# -- metrics ------------------------------------------------------------------------------------
def test_metrics_per_backend_and_for_the_fleet(aws: str, comfy: dict[str, StreamingComfy],
                                               capsys: pytest.CaptureFixture) -> None:
    sweep()
    emitted = emf(capsys.readouterr().out)
    per_backend = {key: value for key, value in emitted.items() if key[0] is not None}
    assert per_backend == {
        ("a", "BackendQueueDepth"): 3, ("a", "BackendRunning"): 1,
        ("a", "BackendHealthy"): 1, ("a", "BackendDraining"): 0,
        ("b", "BackendQueueDepth"): 0, ("b", "BackendRunning"): 0,
        ("b", "BackendHealthy"): 1, ("b", "BackendDraining"): 0,
    }
    fleet = {name: value for (backend, name), value in emitted.items()
             if backend is None and name.startswith("Fleet")}
    assert fleet == {"FleetQueueDepth": 3, "FleetRunning": 1, "FleetHealthyBackends": 2,
                     "FleetDrainingBackends": 0, "FleetBackends": 2}


def test_a_draining_backend_is_swept_and_left_out_of_the_totals(
        aws: str, comfy: dict[str, StreamingComfy], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    boto3.client("ssm", region_name="us-east-1").put_parameter(
        Name=f"/{REGISTRY}", Type="String", Value=json.dumps({"backends": [
            {"name": "a", "url": URLS["a"]}, {"name": "b", "url": URLS["b"], "drain": True}]}))
    monkeypatch.setenv("COMFYUI_BACKENDS_PARAMETER", f"/{REGISTRY}")
    reset_container_state()
    comfy["b"].routes[("GET", "/queue")] = (200, {"queue_running": [queued(PREVIEW_ID)], "queue_pending": []})
    summary = sweep()
    assert summary["backends"]["b"]["draining"] is True
    assert archive.load_manifest(PREVIEW_ID)["backend"] == "b"  # what it holds is still archived
    emitted = emf(capsys.readouterr().out)
    assert (emitted[("b", "BackendDraining")], emitted[("b", "BackendQueueDepth")]) == (1, 1)
    assert (emitted[(None, "FleetQueueDepth")], emitted[(None, "FleetRunning")]) == (3, 1)  # a's only
    assert (emitted[(None, "FleetHealthyBackends")], emitted[(None, "FleetDrainingBackends")],
            emitted[(None, "FleetBackends")]) == (1, 1, 2)


# -- one prompt ---------------------------------------------------------------------------------
def test_a_prompt_event_naming_its_backend_asks_that_backend_only(aws: str,
                                                                  comfy: dict[str, StreamingComfy]) -> None:
    result = lambda_handler({"prompt_id": PREVIEW_ID, "backend": "b"}, FakeLambdaContext())
    assert result["status"] == "archived" and result["stored"] == 2
    assert comfy["a"].calls == []
    assert comfy["b"].paths() == [f"/history/{PREVIEW_ID}", "/view", "/view"]


def test_a_prompt_event_without_a_backend_finds_the_recorded_one(aws: str,
                                                                 comfy: dict[str, StreamingComfy]) -> None:
    prompt_state.record_backend(PREVIEW_ID, "b", None)
    result = lambda_handler({"prompt_id": PREVIEW_ID}, FakeLambdaContext())
    assert result["status"] == "archived"
    assert comfy["a"].calls == []


@pytest.mark.parametrize("named", [None, "no-such-backend", 42])
def test_without_a_record_or_with_an_unknown_name_every_backend_is_asked(
        aws: str, comfy: dict[str, StreamingComfy], named: Any) -> None:
    request = {"prompt_id": PREVIEW_ID} if named is None else {"prompt_id": PREVIEW_ID, "backend": named}
    result = lambda_handler(request, FakeLambdaContext())
    assert result["status"] == "archived"
    assert archive.load_manifest(PREVIEW_ID)["backend"] == "b"
    assert "/view" not in comfy["a"].paths()  # a was asked whether it knows the prompt, no more


def test_a_prompt_no_backend_knows_is_not_finished(aws: str, comfy: dict[str, StreamingComfy]) -> None:
    unknown = "0c0ffee0-0000-4000-8000-0000000000ff"
    assert lambda_handler({"prompt_id": unknown}, FakeLambdaContext()) == {
        "prompt_id": unknown, "status": "not_finished"}


# -- events ---------------------------------------------------------------------------------------
def test_every_event_names_the_backend(aws: str, comfy: dict[str, StreamingComfy]) -> None:
    sweep()
    found = by_type(events_in(aws))
    completed = {d["prompt_id"]: d["backend"] for d in found["ComfyUI Prompt Completed"]}
    archived = {d["prompt_id"]: d["backend"] for d in found["ComfyUI Images Archived"]}
    assert completed == archived == {SAVE_ID: "a", PREVIEW_ID: "b"}
    notify.prompt_submitted({"prompt_id": SAVE_ID, "number": 3, "client_id": "c", "backend": "a"},
                            workflow="empty_save")
    (submitted,) = by_type(events_in(aws))["ComfyUI Prompt Submitted"]
    assert submitted["backend"] == "a"


def test_the_webhook_carries_the_backend(aws: str, comfy: dict[str, StreamingComfy],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from comfy_core.announce import webhooks

    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(webhooks, "deliver", lambda url, kind, detail, settings=None: sent.append(detail) or True)
    entry = comfy["b"].history[PREVIEW_ID]
    entry["prompt"][3] = {"comfy_serverless": {"workflow": "empty_preview", "webhook_url": "https://h.example/x"}}
    sweep()
    assert [(d["prompt_id"], d["backend"]) for d in sent] == [(PREVIEW_ID, "b")]
