"""Input images through the handlers (issue 11): POST /api/uploads, then a run request that
names the upload; inline images; jobs with an s3 reference. S3 from moto in-process (the
sample workflows uploaded), ComfyUI faked at the session level with /upload/image answered
as recorded (`upload_image_new`)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
import requests

from comfy_core.config import get_settings
from functions.run_job.app import lambda_handler as run_job
from tests.support.fake_comfy import UploadingComfy, use_session
from tests.support.handlers import event, invoke
from tests.support.lambda_context import FakeLambdaContext
from tests.support.recordings import recorded_file, recording

PNG = recorded_file("view_temp.png")
NAME = f"{hashlib.sha256(PNG).hexdigest()[:40]}.png"
BUCKET = "image-bucket"


@pytest.fixture
def comfy(s3: Any, monkeypatch: pytest.MonkeyPatch) -> UploadingComfy:
    s3.create_bucket(Bucket=BUCKET)
    monkeypatch.setenv("IMAGE_BUCKET", BUCKET)
    get_settings.cache_clear()
    session = UploadingComfy()
    session.routes[("POST", "/prompt")] = (200, recording("prompt_success_load_image"))
    use_session(monkeypatch, session)
    return session


def run(name: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return invoke("run_workflow", event("run_workflow", pathParameters={"workflow_name": name},
                                        body=json.dumps(body)))


def submitted(comfy: UploadingComfy) -> dict[str, Any]:
    [call] = [c for c in comfy.calls if c["path"] == "/prompt" and c["method"] == "POST"]
    return call["json"]["prompt"]


def test_upload_then_run_img2img(comfy, s3) -> None:
    status, upload = invoke("uploads", event("uploads", body=json.dumps(
        {"filename": "photo.png", "content_type": "image/png", "size": len(PNG)})))
    assert status == 201 and upload["method"] == "PUT"
    assert requests.put(upload["upload_url"], data=PNG, headers=upload["headers"], timeout=5).status_code == 200

    status, body = run("img2img_invert", {"image": {"upload_id": upload["upload_id"]}})
    assert status == 200 and body["status"] == "success"
    assert submitted(comfy)["1"]["inputs"]["image"] == NAME  # the name ComfyUI answered
    assert len(comfy.uploads) == 1 and PNG in comfy.uploads[0]


def test_inline_inpaint_uploads_identical_image_and_mask_once(comfy) -> None:
    data = base64.b64encode(PNG).decode()
    status, _ = run("inpaint_composite", {"image": {"base64": data}, "mask": f"data:image/png;base64,{data}"})
    assert status == 200
    prompt = submitted(comfy)
    assert prompt["1"]["inputs"]["image"] == prompt["3"]["inputs"]["image"] == NAME
    assert len(comfy.uploads) == 1


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"image": {"base64": base64.b64encode(b"just text").decode()}}, 415, "'image': not a PNG"),
    ({"image": {"upload_id": "0" * 32}}, 400, "unknown or expired"),
    ({"mask": {"base64": "AAAA"}}, 400, "exactly one LoadImageMask node"),
    ({"image": "photo.png"}, 400, "input reference"),
])
def test_bad_inputs_are_refused_before_comfyui(comfy, body, status, words) -> None:
    answer_status, answer = run("img2img_invert", body)
    assert (answer_status, answer["status_code"]) == (status, status)
    assert words in answer["error"]
    assert comfy.calls == []  # nothing uploaded, nothing queued


def test_a_job_takes_an_s3_reference_under_the_input_prefix(comfy, s3) -> None:
    s3.put_object(Bucket=BUCKET, Key="inputs/batch-7/photo.png", Body=PNG)
    job = {"workflow": "img2img_invert", "image": {"s3": f"s3://{BUCKET}/inputs/batch-7/photo.png"}}
    answer = run_job(job, FakeLambdaContext())
    assert answer["status"] == "success"
    assert submitted(comfy)["1"]["inputs"]["image"] == NAME
    outside = run_job({**job, "job_id": "j2", "image": {"s3": "s3://workflow-bucket/workflows/x.png"}},
                      FakeLambdaContext())
    assert outside["status_code"] == 400 and "must name an object under" in outside["error"]


def test_the_fake_answers_uploads_in_comfyuis_recorded_shape(comfy) -> None:
    """UploadingComfy stands in for ComfyUI here: its answer must be the recorded one's."""
    recorded = recording("upload_image_new")
    run("img2img_invert", {"image": {"base64": base64.b64encode(PNG).decode()}})
    answer = comfy.routes[("POST", "/upload/image")][1]
    assert set(answer) == set(recorded) and (answer["subfolder"], answer["type"]) == ("", "input")
