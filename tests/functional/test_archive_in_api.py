"""task_status, image and history after archiving: S3 links, and answers from the manifest
once ComfyUI has forgotten the prompt (restart or history eviction)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from comfy_core.archive import results
from comfy_core.config import get_settings
from comfy_core.storage import s3_client
from functions.archiver.app import lambda_handler as archiver
from moto import mock_aws
from tests.support.fake_comfy import StreamingComfy, use_session
from tests.support.handlers import event, invoke
from tests.support.lambda_context import FakeLambdaContext
from tests.support.recordings import recorded_file, recording

PID = "11111111-2222-3333-4444-555555555555"  # PreviewImage: two temp files
PNG = recorded_file("view_temp.png")


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("IMAGE_BUCKET", "image-bucket")
    monkeypatch.setenv("ARCHIVER_FUNCTION_NAME", "stack-archiver")
    monkeypatch.setenv("PRESIGN_EXPIRY_SECONDS", "900")
    get_settings.cache_clear()
    requested: list[tuple[str, dict]] = []
    monkeypatch.setattr(results, "invoke_async", lambda name, payload: requested.append((name, payload)) or True)
    with mock_aws():
        s3_client().create_bucket(Bucket="image-bucket")
        session = StreamingComfy()
        session.routes[("GET", f"/history/{PID}")] = (200, recording("history_id_success_preview"))
        session.routes[("GET", "/queue")] = (200, recording("queue_empty"))
        for n in (1, 2):
            session.files[("temp", "", f"ComfyUI_temp_oncmo_0000{n}_.png")] = PNG
        use_session(monkeypatch, session)
        yield session, requested


def restart_comfyui(session: StreamingComfy) -> None:
    """What a ComfyUI restart does: history empty, temp files gone."""
    session.routes[("GET", f"/history/{PID}")] = (200, {})
    session.files.clear()


def test_first_completed_status_asks_the_archiver_and_marks_images_not_archived(stack):
    session, requested = stack
    status, body = invoke("task_status", event("task_status"))
    assert status == 200 and body["status"] == "completed"
    assert [(i["archived"], i["s3_key"], i["download_url"], i["size"]) for i in body["images"]] == \
        [(False, None, None, None)] * 2
    assert requested == [("stack-archiver", {"prompt_id": PID})]
    assert len(session.calls) == 1  # still one ComfyUI request


def test_archived_images_get_s3_key_and_presigned_download_url(stack):
    session, requested = stack
    assert archiver({"prompt_id": PID}, FakeLambdaContext())["status"] == "archived"
    status, body = invoke("task_status", event("task_status"))
    image = body["images"][0]
    assert image["archived"] is True
    assert image["s3_key"] == f"images/{PID}/2/ComfyUI_temp_oncmo_00001_.png"
    assert image["url"] is None  # ComfyUI's address only with COMFYUI_PUBLIC_URL
    assert image["size"] == len(PNG)  # what the download must be
    link = urlsplit(image["download_url"])
    assert link.path.endswith(image["s3_key"]) and parse_qs(link.query)["X-Amz-Expires"] == ["900"]
    assert requested == []  # archived already: nothing to ask


def test_after_restart_status_image_and_history_answer_from_the_manifest(stack):
    session, _ = stack
    archiver({"prompt_id": PID}, FakeLambdaContext())
    restart_comfyui(session)
    status, body = invoke("task_status", event("task_status"))
    assert status == 200 and body["status"] == "completed" and body["source"] == "archive"
    assert [i["archived"] for i in body["images"]] == [True, True]
    key = body["images"][1]["s3_key"]
    assert s3_client().get_object(Bucket="image-bucket", Key=key)["Body"].read() == PNG
    status, body = invoke("image", event("image"))
    assert status == 200 and len(body["images"]) == 2 and body["images"][0]["download_url"]
    status, body = invoke("history_entry", event("history_entry"))
    assert status == 200 and body[PID]["status"]["status_str"] == "success"
    assert body[PID]["outputs"]["2"]["images"][0]["type"] == "temp"


def test_unknown_everywhere_is_still_not_found(stack):
    session, _ = stack
    restart_comfyui(session)
    assert invoke("task_status", event("task_status"))[1]["status"] == "not_found"
    assert invoke("image", event("image"))[0] == 404
    assert invoke("history_entry", event("history_entry"))[0] == 404


def test_lost_files_are_listed_as_not_archived(stack):
    session, _ = stack
    session.files.pop(("temp", "", "ComfyUI_temp_oncmo_00002_.png"))  # gone before the run
    archiver({"prompt_id": PID}, FakeLambdaContext())
    restart_comfyui(session)
    body = invoke("task_status", event("task_status"))[1]
    assert [(i["archived"], i.get("lost", False)) for i in body["images"]] == [(True, False), (False, True)]


def test_polling_a_finished_prompt_asks_the_archiver_at_most_once_per_interval(stack, monkeypatch):
    """A client polling every few hundred ms used to queue one archiver run per poll."""
    session, requested = stack
    clock = [1000.0]
    monkeypatch.setattr("comfy_core.deadline.now", lambda: clock[0])
    for _ in range(10):
        assert invoke("task_status", event("task_status"))[0] == 200
        assert invoke("image", event("image"))[0] == 200
        clock[0] += 0.2  # 20 polls in 4 s
    assert requested == [("stack-archiver", {"prompt_id": PID})]
    clock[0] += results.ARCHIVE_REQUEST_INTERVAL_SECONDS
    invoke("task_status", event("task_status"))
    assert len(requested) == 2  # still unarchived after the interval: asked again
