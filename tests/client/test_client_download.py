"""Outputs to files: `<prompt_id>_<node>_<filename>`, streamed to a temporary name, checked
against Content-Length (and the answer's size when it gives one), renamed only when whole;
and wait(), which polls until the prompt is finished and its files are in S3."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import responses

from comfy_api import ComfyAPI, RetryPolicy, TaskStatus, download_outputs, output_name
from comfy_api.download import target_names
from comfy_api.errors import DownloadError
from comfy_api.models import Image

from .fakes import API_URL, Sleeps

S3 = "https://bucket.s3.test/images/p1/9/out_00001_.png?X-Amz-Signature=abc"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def image(**fields: Any) -> dict[str, Any]:
    return {"filename": "out_00001_.png", "subfolder": "", "type": "output", "node_id": "9", "url": None,
            "archived": True, "s3_key": "images/p1/9/out_00001_.png", "download_url": S3, **fields}


def completed(*images: dict[str, Any], archive: str = "archived") -> TaskStatus:
    return TaskStatus.from_json({"status": "completed", "message": "done", "prompt_id": "p1",
                                 "images": list(images), "execution_time": 1.5, "node_errors": {},
                                 "archive": {"status": archive, "retry_after": None}})


def leftovers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


# -- names --------------------------------------------------------------------------------------
def test_files_are_named_prompt_node_filename() -> None:
    assert output_name("p1", Image.from_json(image())) == "p1_9_out_00001_.png"


def test_names_are_safe_file_names() -> None:
    sub = Image.from_json(image(node_id="6:3", filename="../../etc/passwd"))
    assert output_name("p1", sub) == "p1_6_3_passwd"
    odd = Image.from_json(image(filename='a<b>|c?.png'))
    assert output_name("p1", odd) == "p1_9_a_b__c_.png"


def test_two_outputs_with_one_name_get_distinct_files() -> None:
    twins = (Image.from_json(image(subfolder="a")), Image.from_json(image(subfolder="b")),
             Image.from_json(image(subfolder="c")))
    assert target_names("p1", twins) == ["p1_9_out_00001_.png", "p1_9_out_00001_-2.png", "p1_9_out_00001_-3.png"]


# -- downloads ----------------------------------------------------------------------------------
@responses.activate
def test_a_download_is_saved_whole_under_its_name_and_without_the_api_key(api: ComfyAPI, tmp_path: Path) -> None:
    responses.get(S3, body=PNG, headers={"Content-Length": str(len(PNG))})
    report = download_outputs(api, completed(image()), tmp_path / "out")
    [saved] = report.saved
    assert saved.path == tmp_path / "out" / "p1_9_out_00001_.png"
    assert saved.path.read_bytes() == PNG and saved.size == len(PNG)
    assert leftovers(tmp_path / "out") == ["p1_9_out_00001_.png"]  # no .part file
    assert "x-api-key" not in responses.calls[0].request.headers  # S3 never sees the API's key


@responses.activate
def test_a_short_body_is_tried_again_and_never_saved_under_the_final_name(api: ComfyAPI, sleeps: Sleeps,
                                                                         tmp_path: Path) -> None:
    # The server promises more bytes than it sends, every time.
    responses.get(S3, body=PNG[:100], headers={"Content-Length": str(len(PNG))})
    with pytest.raises(DownloadError, match="out_00001_.png"):
        download_outputs(api, completed(image()), tmp_path)
    assert leftovers(tmp_path) == []
    assert len(responses.calls) == api.retry.max_attempts and len(sleeps) == api.retry.max_attempts - 1


@responses.activate
def test_a_cut_transfer_is_resumed_by_a_second_try(api: ComfyAPI, tmp_path: Path) -> None:
    responses.get(S3, body=PNG[:100], headers={"Content-Length": str(len(PNG))})
    responses.get(S3, body=PNG, headers={"Content-Length": str(len(PNG))})
    [saved] = download_outputs(api, completed(image()), tmp_path).saved
    assert saved.path.read_bytes() == PNG and len(responses.calls) == 2


@responses.activate
def test_a_size_the_answer_gives_is_checked_too(api: ComfyAPI, tmp_path: Path) -> None:
    responses.get(S3, body=PNG, headers={"Content-Length": str(len(PNG))})
    with pytest.raises(DownloadError, match=f"S3 has {len(PNG)} bytes, the answer says 5"):
        download_outputs(api, completed(image(size=5)), tmp_path)
    assert leftovers(tmp_path) == []


@responses.activate
def test_an_expired_link_is_a_download_error_that_says_so(sleeps: Sleeps, tmp_path: Path) -> None:
    api = ComfyAPI(API_URL, sleep=sleeps, retry=RetryPolicy(max_attempts=1))
    responses.get(S3, status=403, body="<Error><Code>AccessDenied</Code></Error>", content_type="application/xml")
    with pytest.raises(DownloadError, match="403 Forbidden .*the link may have expired"):
        download_outputs(api, completed(image()), tmp_path)
    assert leftovers(tmp_path) == []


def test_outputs_without_a_link_are_reported_not_downloaded(api: ComfyAPI, tmp_path: Path) -> None:
    lost = image(archived=False, s3_key=None, download_url=None, lost=True)
    report = download_outputs(api, completed(lost), tmp_path)
    assert report.saved == () and [s.reason for s in report.skipped] == ["lost from ComfyUI before it was archived"]


# -- waiting --------------------------------------------------------------------------------------
STATUS = f"{API_URL}/api/task_status/p1"


@responses.activate
def test_wait_follows_queue_running_copying_and_stops_once_archived(api: ComfyAPI, sleeps: Sleeps) -> None:
    progress = {"fraction": 0.5, "nodes_done": 1, "nodes_total": 2, "node": "3", "step": 5, "steps": 10,
                "eta_seconds": 4.0}
    responses.get(STATUS, json={"status": "pending", "message": "", "prompt_id": "p1", "queue_position": 2})
    responses.get(STATUS, json={"status": "running", "message": "", "prompt_id": "p1",
                                "execution_info": {"prompt_id": "p1"}, "progress": progress})
    copying = completed(image(archived=False, s3_key=None, download_url=None), archive="copying").raw
    responses.get(STATUS, json={**copying, "archive": {"status": "copying", "retry_after": 2}},
                  headers={"Retry-After": "2"})
    responses.get(STATUS, json=completed(image()).raw)
    seen: list[TaskStatus] = []

    final = api.wait("p1", on_update=seen.append, poll_seconds=1.0)

    assert [s.status for s in seen] == ["pending", "running", "completed", "completed"]
    assert seen[0].queue_position == 2 and seen[1].progress is not None and seen[1].progress.step == 5
    assert seen[2].copying and not final.copying and final.images[0].download_url == S3
    assert sleeps == [1.0, 1.0, 2.0]  # the poll interval, then the Retry-After of `copying`


@responses.activate
def test_wait_gives_up_on_the_archive_after_its_timeout(sleeps: Sleeps) -> None:
    now = [0.0]
    api = ComfyAPI(API_URL, sleep=lambda s: (sleeps(s), now.__setitem__(0, now[0] + s)), clock=lambda: now[0])
    copying = completed(image(archived=False, s3_key=None, download_url=None), archive="copying").raw
    responses.get(STATUS, json={**copying, "archive": {"status": "copying", "retry_after": 2}},
                  headers={"Retry-After": "2"})
    final = api.wait("p1", archive_timeout=10)
    assert final.copying and len(responses.calls) == 6  # asked at 0, 2, 4, 6, 8 and 10 s
