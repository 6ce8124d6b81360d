"""The archiver over real sockets: the local stack's moto server + ComfyUI stand-in on 127.0.0.1.

* A 200 MiB output file is streamed into S3 by a child process whose peak memory stays
  far below the file size; the stored object has the source's size and hash.
* Prompts really run on the stand-in are archived, a second run copies nothing, and
  after a restart the wiped temp files are recorded as lost.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from comfy_core import reset_container_state  # noqa: E402
from comfy_core.archive import sweep as archive  # noqa: E402

from devtools.archive_probe import MIB, make_file, probe, sha256_chunks, sha256_file  # noqa: E402
from devtools.dev import LocalStack  # noqa: E402

pytestmark = pytest.mark.e2e

WORKFLOWS = Path(__file__).resolve().parents[1] / "fixtures" / "comfyui" / "workflows"
MEMORY_LIMIT = 64 * MIB


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(port=0, standin_delay=0, schedule_every=0) as running:
        running.empty_bucket("ImageBucket")
        yield running


@pytest.fixture(scope="module")
def s3(stack: LocalStack) -> Any:
    return stack.client("s3")


@pytest.fixture(scope="module")
def bucket(stack: LocalStack) -> str:
    return stack.buckets["ImageBucket"]


def objects(s3: Any, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
    return s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])


def test_200_mib_file_is_streamed_with_bounded_memory(stack: LocalStack, s3: Any, bucket: str) -> None:
    source = Path(stack.standin.output_dir) / "clip_00001_.mp4"
    make_file(source, 200 * MIB)
    try:
        report = probe(stack, "archive", source.name, memory=True)
        growth = report["rss_growth"]
        assert growth < MEMORY_LIMIT, f"peak RSS grew {growth / MIB:.1f} MiB for a 200 MiB file"
        assert report["tracemalloc_peak"] < MEMORY_LIMIT
        assert report["bytes"] == 200 * MIB

        (stored,) = [o for o in objects(s3, bucket, "images/") if o["Key"].endswith(f"/{source.name}")]
        head = s3.head_object(Bucket=bucket, Key=stored["Key"])
        assert head["ContentLength"] == source.stat().st_size
        assert head["ContentType"] == "video/mp4"  # ComfyUI's Content-Type is kept
        body = s3.get_object(Bucket=bucket, Key=stored["Key"])["Body"]
        assert sha256_chunks(body.iter_chunks(MIB)) == sha256_file(source)

        manifest_key = stored["Key"].rsplit("/", 2)[0] + "/manifest.json"
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
        assert manifest["files"][0]["size"] == 200 * MIB and manifest["files"][0]["archived"] is True
    finally:
        source.unlink(missing_ok=True)
        stack.empty_bucket("ImageBucket")


# -- a sweep against prompts the stand-in really ran ------------------------------------------
@pytest.fixture
def archiver_env(stack: LocalStack, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process archiver runs against the stack (AWS_ENDPOINT_URL is set while it runs):
    its ComfyUI and its image bucket."""
    monkeypatch.setenv("COMFYUI_BASE_URL", stack.standin.base_url)
    monkeypatch.setenv("IMAGE_BUCKET", bucket)
    monkeypatch.delenv("ARCHIVE_TYPES", raising=False)
    reset_container_state()


def run_prompt(base_url: str, name: str) -> str:
    workflow = json.loads((WORKFLOWS / name).read_text())
    prompt_id = requests.post(f"{base_url}/prompt", json={"prompt": workflow}, timeout=5).json()["prompt_id"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if requests.get(f"{base_url}/history/{prompt_id}", timeout=5).json():
            return prompt_id
        time.sleep(0.05)
    raise AssertionError(f"{name} did not finish")


def test_sweep_of_real_prompts_then_restart(
    stack: LocalStack, s3: Any, bucket: str, archiver_env: None
) -> None:
    base = stack.standin.base_url
    preview = run_prompt(base, "empty_preview.json")
    saved = run_prompt(base, "empty_save.json")

    first = archive.run_sweep()
    assert first["status"] == "ok" and first["images_archived"] >= 3
    for prompt_id in (preview, saved):
        doc = archive.load_manifest(prompt_id)
        assert doc is not None and all(f["archived"] for f in doc["files"])
        for file in doc["files"]:
            query = {k: file[k] for k in ("filename", "subfolder", "type")}
            original = requests.get(f"{base}/view", params=query, timeout=5).content
            stored = s3.get_object(Bucket=bucket, Key=file["s3_key"])["Body"].read()
            assert stored == original and file["size"] == len(original)

    second = archive.run_sweep()
    assert second["images_archived"] == 0 and second["prompts_already_archived"] >= 2

    # Temp files wiped while the history still lists them: recorded as lost over a real 404.
    again = run_prompt(base, "empty_preview.json")  # cached: lists the same temp files
    for path in Path(stack.standin.temp_dir).iterdir():
        path.unlink()
    wiped = archive.run_sweep()
    assert wiped["status"] == "ok" and wiped["images_lost"] == 2
    assert [f.get("lost") for f in archive.load_manifest(again)["files"]] == [True, True]

    # A restart before the archiver runs: ComfyUI's history is gone too, nothing to do.
    run_prompt(base, "empty_preview.json")
    stack.standin.restart()
    after = archive.run_sweep()
    assert after["status"] == "ok" and after["prompts_seen"] == 0
    stack.empty_bucket("ImageBucket")
