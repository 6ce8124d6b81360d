"""functions/archiver: the sample events in, a JSON summary out; S3 and EventBridge from
moto in-process, ComfyUI from recorded answers with /view bodies streamed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from comfy_core.archive import sweep as archive
from comfy_core.announce import events
from comfy_core.config import get_settings
from comfy_core.observability import metrics
from comfy_core.storage import s3_client
from moto import mock_aws

from functions.archiver.app import lambda_handler
from tests.support.fake_comfy import StreamingComfy, use_session
from tests.support.handlers import event
from tests.support.recordings import recorded_file, recording
from tests.support.lambda_context import FakeLambdaContext

BUCKET = "image-bucket"
SAVE_ID = "aa5001e0-e7a3-4f42-a12c-f2f26746c0e6"  # the id in events/archiver_prompt.json
PREVIEW_ID = "11111111-2222-3333-4444-555555555555"
SAVE_FILE = ("output", "", "harness_save_00001_.png")
PREVIEW_FILES = [("temp", "", f"ComfyUI_temp_oncmo_0000{n}_.png") for n in (1, 2)]


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("IMAGE_BUCKET", BUCKET)
    get_settings.cache_clear()
    events.events_client.cache_clear()
    metrics.clear_metrics()
    with mock_aws():
        s3 = s3_client()
        s3.create_bucket(Bucket=BUCKET)
        yield s3
    events.events_client.cache_clear()


@pytest.fixture
def comfy(monkeypatch: pytest.MonkeyPatch, aws: Any) -> StreamingComfy:
    session = StreamingComfy()
    use_session(monkeypatch, session)
    # /history and /history/{id} answered from one history, as ComfyUI does.
    session.history = {**recording("history_id_success_save"), **recording("history_id_success_preview")}
    session.files[SAVE_FILE] = recorded_file("view_output.png")
    for name in PREVIEW_FILES:
        session.files[name] = recorded_file("view_temp.png")
    return session


def emitted_metrics(output: str) -> dict[str, float]:
    """Metric values from the CloudWatch EMF lines the handler printed."""
    found: dict[str, float] = {}
    for line in output.splitlines():
        if '"_aws"' not in line:
            continue
        doc = json.loads(line)
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            for item in directive["Metrics"]:
                value = doc[item["Name"]]
                found[item["Name"]] = found.get(item["Name"], 0) + (
                    sum(value) if isinstance(value, list) else value
                )
    return found


def test_scheduled_event_sweeps_history(
    comfy: StreamingComfy, aws: Any, capsys: pytest.CaptureFixture
) -> None:
    summary = lambda_handler(event("archiver_scheduled"), FakeLambdaContext())

    assert summary["status"] == "ok"
    assert (summary["prompts_archived"], summary["images_archived"], summary["images_lost"]) == (2, 3, 0)
    assert json.dumps(summary)  # the return value is plain JSON
    stored = aws.get_object(Bucket=BUCKET, Key=f"images/{SAVE_ID}/2/harness_save_00001_.png")
    assert stored["Body"].read() == comfy.files[SAVE_FILE] and stored["ContentType"] == "image/png"
    assert archive.load_manifest(PREVIEW_ID)["files"][1]["filename"] == "ComfyUI_temp_oncmo_00002_.png"
    emitted = emitted_metrics(capsys.readouterr().out)
    assert emitted["ImagesArchived"] == 3
    assert emitted["BytesArchived"] == 2 * 428 + 366


def test_scheduler_event_without_fields_also_sweeps(comfy: StreamingComfy) -> None:
    # EventBridge Scheduler sends the target's Input as is: `{}` when none is configured.
    summary = lambda_handler({}, FakeLambdaContext())
    assert summary["status"] == "ok" and summary["prompts_archived"] == 2


def test_scheduled_event_again_copies_nothing(comfy: StreamingComfy) -> None:
    lambda_handler(event("archiver_scheduled"), FakeLambdaContext())
    comfy.calls.clear()
    summary = lambda_handler(event("archiver_scheduled"), FakeLambdaContext())
    assert summary["prompts_already_archived"] == 2 and summary["images_archived"] == 0
    assert comfy.paths() == ["/queue", "/history"]  # the queue: the fleet metrics' one request


def test_prompt_event_archives_that_prompt_only(comfy: StreamingComfy, aws: Any) -> None:
    result = lambda_handler(event("archiver_prompt"), FakeLambdaContext())
    assert result["status"] == "archived" and result["stored"] == 1
    assert result["manifest_key"] == f"images/{SAVE_ID}/manifest.json"
    assert comfy.paths() == [f"/history/{SAVE_ID}", "/view"]
    again = lambda_handler(event("archiver_prompt"), FakeLambdaContext())
    assert again == {"prompt_id": SAVE_ID, "status": "already_archived"}


def test_prompt_event_for_a_prompt_still_running(comfy: StreamingComfy) -> None:
    del comfy.history[SAVE_ID]  # ComfyUI: running looks like unknown (`{}`)
    assert lambda_handler(event("archiver_prompt"), FakeLambdaContext()) == {
        "prompt_id": SAVE_ID,
        "status": "not_finished",
    }


@pytest.mark.parametrize("bad", ["../etc", "", 42, "a/b"])
def test_prompt_event_with_a_bad_id_is_refused(comfy: StreamingComfy, bad: Any) -> None:
    result = lambda_handler({"prompt_id": bad}, FakeLambdaContext())
    assert result["status"] == "invalid" and "prompt_id" in result["error"]
    assert comfy.calls == []


def test_comfyui_down_ends_cleanly_with_a_metric(
    comfy: StreamingComfy, capsys: pytest.CaptureFixture
) -> None:
    comfy.down_after = 0  # every connection refused
    summary = lambda_handler(event("archiver_scheduled"), FakeLambdaContext())
    assert summary["status"] == "failed" and summary["prompts_archived"] == 0
    emitted = emitted_metrics(capsys.readouterr().out)
    fleet = {name: emitted.pop(name) for name in list(emitted) if name.startswith(("Backend", "Fleet"))}
    assert emitted == {"ArchiveRunFailed": 1}
    assert (fleet["BackendHealthy"], fleet["FleetHealthyBackends"], fleet["FleetBackends"]) == (0, 0, 1)


def test_lost_file_is_counted(comfy: StreamingComfy, capsys: pytest.CaptureFixture) -> None:
    del comfy.files[PREVIEW_FILES[0]]  # temp wiped by a restart
    summary = lambda_handler(event("archiver_scheduled"), FakeLambdaContext())
    assert (summary["images_lost"], summary["prompts_archived"]) == (1, 2)
    assert emitted_metrics(capsys.readouterr().out)["ImagesLost"] == 1
    assert archive.load_manifest(PREVIEW_ID)["files"][0]["lost"] is True
