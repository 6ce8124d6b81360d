"""The archiver over real sockets: moto S3 server + ComfyUI stand-in on 127.0.0.1.

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

pytest.importorskip("devtools.comfyui_standin", reason="ComfyUI stand-in not available")

from comfy_core import archive, events  # noqa: E402
from comfy_core.config import get_settings  # noqa: E402

from bench.archiver import BUCKET, MIB, Stack, local_stack, make_file, run_child, sha256_chunks, sha256_file  # noqa: E402

pytestmark = pytest.mark.e2e

WORKFLOWS = Path(__file__).resolve().parents[1] / "fixtures" / "comfyui" / "workflows"
MEMORY_LIMIT = 64 * MIB


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with local_stack() as running:
        yield running


def objects(stack: Stack, prefix: str = "") -> list[dict[str, Any]]:
    return stack.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])


def test_200_mib_file_is_streamed_with_bounded_memory(stack: Stack) -> None:
    stack.empty_bucket()
    source = stack.output_dir / "clip_00001_.mp4"
    make_file(source, 200 * MIB)
    make_file(stack.output_dir / "warmup.bin", 256 * 1024)
    try:
        report = run_child(stack, "archive", source.name, memory=True)
        growth = report["rss_peak"] - report["rss_before"]
        assert growth < MEMORY_LIMIT, f"peak RSS grew {growth / MIB:.1f} MiB for a 200 MiB file"
        assert report["tracemalloc_peak"] < MEMORY_LIMIT
        assert report["bytes"] == 200 * MIB

        (stored,) = [o for o in objects(stack, "images/") if o["Key"].endswith(f"/{source.name}")]
        head = stack.s3.head_object(Bucket=BUCKET, Key=stored["Key"])
        assert head["ContentLength"] == source.stat().st_size
        assert head["ContentType"] == "video/mp4"  # ComfyUI's Content-Type is kept
        body = stack.s3.get_object(Bucket=BUCKET, Key=stored["Key"])["Body"]
        assert sha256_chunks(body.iter_chunks(MIB)) == sha256_file(source)

        manifest_key = stored["Key"].rsplit("/", 2)[0] + "/manifest.json"
        manifest = json.loads(stack.s3.get_object(Bucket=BUCKET, Key=manifest_key)["Body"].read())
        assert manifest["files"][0]["size"] == 200 * MIB and manifest["files"][0]["archived"] is True
    finally:
        source.unlink(missing_ok=True)
        stack.empty_bucket()


# -- a sweep against prompts the stand-in really ran ------------------------------------------
@pytest.fixture
def archiver_env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in stack.child_env().items():
        if name.startswith(("AWS_", "COMFYUI_", "IMAGE_")):
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("ARCHIVE_TYPES", raising=False)
    get_settings.cache_clear()
    events.events_client.cache_clear()
    yield
    events.events_client.cache_clear()


def run_prompt(base_url: str, name: str) -> str:
    workflow = json.loads((WORKFLOWS / name).read_text())
    prompt_id = requests.post(f"{base_url}/prompt", json={"prompt": workflow}, timeout=5).json()["prompt_id"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if requests.get(f"{base_url}/history/{prompt_id}", timeout=5).json():
            return prompt_id
        time.sleep(0.05)
    raise AssertionError(f"{name} did not finish")


def test_sweep_of_real_prompts_then_restart(stack: Stack, archiver_env: None) -> None:
    stack.empty_bucket()
    base = stack.comfyui_url
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
            stored = stack.s3.get_object(Bucket=BUCKET, Key=file["s3_key"])["Body"].read()
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
    stack.empty_bucket()
