"""Results out: the archiver announces each finished prompt once (`ComfyUI Prompt
Completed` / `Failed`, beside `ComfyUI Images Archived`) and POSTs its job's webhook.
S3 and EventBridge from moto in-process (a rule copies events to a queue the test reads);
ComfyUI from recorded history entries with their files streamed."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from comfy_core.archive import sweep as archive
from comfy_core.announce import webhooks
from comfy_core.config import get_settings
from comfy_core.storage import s3_client
from functions.archiver.app import lambda_handler as archiver
from moto import mock_aws
from tests.support.fake_comfy import StreamingComfy, use_session
from tests.support.handlers import event
from tests.support.recordings import recorded_file, recording
from tests.support.jobs import capture_events, events_in
from tests.support.lambda_context import FakeLambdaContext

BUCKET = "image-bucket"
SAVE_ID = "aa5001e0-e7a3-4f42-a12c-f2f26746c0e6"  # success, one output file
ERROR_ID = "3ce22237-4fda-469c-800a-47f11d6ef536"  # execution error after a preview ran
INTERRUPTED_ID = "29a077c4-a4d9-49c7-a4fe-a762e23c14a3"  # no outputs; submitted by another client
HOOK = "https://hooks.example.com/comfy"


def with_job(name: str, job: dict[str, Any]) -> dict[str, Any]:
    """A recorded history entry as if submitted through this API with `job` (jobs.run_workflow
    records it in extra_data, which ComfyUI keeps as entry["prompt"][3])."""
    history = copy.deepcopy(recording(name))
    for entry in history.values():
        entry["prompt"][3] = {"comfy_serverless": job}
    return history


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("IMAGE_BUCKET", BUCKET)
    get_settings.cache_clear()
    with mock_aws():
        s3_client().create_bucket(Bucket=BUCKET)
        session = StreamingComfy()
        history = {
            **with_job("history_id_success_save", {"workflow": "empty_save", "job_id": "order-1",
                                                   "trigger": "sqs", "webhook_url": HOOK}),
            **with_job("history_id_exec_error_bad_regex",
                       {"workflow": "text_label", "job_id": "order-2", "trigger": "api"}),
            **recording("history_id_interrupted"),
        }
        session.routes[("GET", "/history")] = (200, history)
        for pid, entry in history.items():
            session.routes[("GET", f"/history/{pid}")] = (200, {pid: entry})
        files = {("output", "", "harness_save_00001_.png"): "view_output.png",
                 ("temp", "", "ComfyUI_temp_ulehj_00001_.png"): "view_temp.png"}
        for source, recorded in files.items():
            session.files[source] = recorded_file(recorded)
        use_session(monkeypatch, session)
        yield capture_events({"source": ["comfy-serverless-api"]})


@pytest.fixture
def hooks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, dict[str, Any]]]:
    """Webhook deliveries the archiver made (delivery itself is tested in test_webhooks)."""
    sent: list[tuple[str, str, dict[str, Any]]] = []
    monkeypatch.setattr(webhooks, "deliver", lambda url, kind, detail, settings=None: sent.append(
        (url, kind, detail)) or True)
    return sent


def by_type(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for item in events:
        found.setdefault(item["detail-type"], []).append(item["detail"])
    return found


def sweep() -> dict[str, Any]:
    return archiver(event("archiver_scheduled"), FakeLambdaContext())


def test_each_finished_prompt_is_announced_once_across_sweeps(stack, hooks):
    sweep()
    first = by_type(events_in(stack))
    sweep()
    assert events_in(stack) == []  # the second sweep finds every manifest: nothing again

    assert [d["prompt_id"] for d in first["ComfyUI Prompt Completed"]] == [SAVE_ID]
    failed = sorted(d["prompt_id"] for d in first["ComfyUI Prompt Failed"])
    assert failed == sorted([ERROR_ID, INTERRUPTED_ID])
    # The existing event stays, for prompts that had files.
    assert sorted(d["prompt_id"] for d in first["ComfyUI Images Archived"]) == sorted([SAVE_ID, ERROR_ID])
    assert len(hooks) == 1


def test_completed_event_names_the_job_and_the_archived_keys(stack, hooks):
    sweep()
    (completed,) = by_type(events_in(stack))["ComfyUI Prompt Completed"]
    assert completed == {
        "prompt_id": SAVE_ID,
        "workflow": "empty_save",
        "job_id": "order-1",
        "backend": "default",
        "status": "success",
        "execution_time": completed["execution_time"],
        "bucket": BUCKET,
        "manifest_key": f"images/{SAVE_ID}/manifest.json",
        "keys": [f"images/{SAVE_ID}/2/harness_save_00001_.png"],
        "sizes": [len(recorded_file("view_output.png"))],
        "lost": 0,
        "truncated": False,
    }
    assert isinstance(completed["execution_time"], float)
    manifest = archive.load_manifest(SAVE_ID)
    assert (manifest["workflow"], manifest["job_id"]) == ("empty_save", "order-1")
    # The webhook gets the very same detail, as the Completed event.
    assert hooks == [(HOOK, "ComfyUI Prompt Completed", completed)]


def test_failed_events_carry_the_error_for_any_prompt(stack, hooks):
    sweep()
    failed = {d["prompt_id"]: d for d in by_type(events_in(stack))["ComfyUI Prompt Failed"]}
    error = failed[ERROR_ID]
    assert (error["workflow"], error["job_id"], error["status"]) == ("text_label", "order-2", "error")
    assert error["error"]["type"] == "execution_error" and error["error"]["node_id"]
    assert error["keys"] == [f"images/{ERROR_ID}/2/ComfyUI_temp_ulehj_00001_.png"]  # made before it failed
    # Submitted by another client of the same ComfyUI: announced all the same, without a job.
    other = failed[INTERRUPTED_ID]
    assert (other["workflow"], other["job_id"], other["keys"]) == (None, None, [])
    assert other["error"]["type"] == "interrupted"
    assert other["manifest_key"] == f"images/{INTERRUPTED_ID}/manifest.json"


def test_archiving_one_prompt_early_then_sweeping_still_announces_once(stack, hooks):
    assert archiver({"prompt_id": SAVE_ID}, FakeLambdaContext())["status"] == "archived"
    sweep()
    sweep()
    completed = by_type(events_in(stack))["ComfyUI Prompt Completed"]
    assert [d["prompt_id"] for d in completed] == [SAVE_ID]
    assert len(hooks) == 1


def test_a_failed_prompt_with_a_huge_error_is_announced_once(stack, hooks, monkeypatch):
    """Its event detail used to exceed EventBridge's limit and was dropped after the manifest
    was written: never announced. Now the error is cut and the event goes out once."""
    session = archive.get_client().session
    history = session.routes[("GET", "/history")][1]
    for message in history[ERROR_ID]["status"]["messages"]:
        if message[0] == "execution_error":
            message[1]["exception_message"] = "x" * 400_000
            message[1]["traceback"] = ["  File \"/srv/ComfyUI/execution.py\", line 1\n"] * 5_000
    sweep()
    sweep()
    failed = [d for d in by_type(events_in(stack))["ComfyUI Prompt Failed"] if d["prompt_id"] == ERROR_ID]
    assert len(failed) == 1
    assert failed[0]["error"]["exception_message"].startswith("xxxx")
    assert len(failed[0]["error"]["exception_message"]) < 10_000
