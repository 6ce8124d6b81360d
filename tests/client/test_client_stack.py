"""The `comfy-api` command against the local stack (what `make dev` serves): the real
console script in a subprocess, the API on a socket, moto's S3, the ComfyUI stand-in and the
live watcher. Downloaded files are compared byte for byte with the archived objects in S3."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from comfy_api.cli import main
from devtools.comfyui_standin import decode_png, encode_pixels, with_alpha
from devtools.dev import WATCHER_FUNCTION, LocalStack
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

# The command as a user runs it: the console script pip installed beside this Python.
COMMAND = Path(sys.executable).with_name("comfy-api")
CEILING = 60  # seconds for one command, for a stuck test only
POLL = ["--poll", "0.1"]  # the stand-in finishes a prompt in 0.2 s; --poll only shortens the waits


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    # With the live watcher, as `make dev` runs: outputs are in S3 about as soon as a prompt
    # ends, so a run seldom waits out the `copying` answer's Retry-After.
    with tempfile.TemporaryFile() as log:
        with LocalStack(port=0, standin_delay=0.2, function_logs=False, watch=True, watcher_log=log) as running:
            client_id = running.template.function(WATCHER_FUNCTION).environment["WATCHER_CLIENT_ID"]
            wait_for(lambda: running.standin.ws.connected(client_id), CEILING, what="watcher connected")
            yield running


def comfy_api(stack: LocalStack, *args: str, module: bool = False) -> subprocess.CompletedProcess[str]:
    assert COMMAND.exists(), f"{COMMAND} missing: pip install -e ./client (requirements-dev.txt does)"
    command = [sys.executable, "-m", "comfy_api"] if module else [str(COMMAND)]
    return subprocess.run([*command, *args], env=environment(stack), capture_output=True, text=True,
                          timeout=CEILING, stdin=subprocess.DEVNULL)


def environment(stack: LocalStack) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMFY_API_")}
    return {**env, "COMFY_API_URL": stack.api_url, "PYTHONUNBUFFERED": "1"}


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # the whole of stdout is one document


def archived(stack: LocalStack, key: str) -> bytes:
    return stack.client("s3").get_object(Bucket=stack.buckets["ImageBucket"], Key=key)["Body"].read()


def count_objects(stack: LocalStack, prefix: str) -> int:
    listing = stack.client("s3").list_objects_v2(Bucket=stack.buckets["ImageBucket"], Prefix=prefix)
    return listing.get("KeyCount", 0)


def prompts_sent(stack: LocalStack) -> int:
    return stack.standin.requests.count(("POST", "/prompt"))


def test_workflows_as_lines_and_as_json(stack: LocalStack) -> None:
    lines = comfy_api(stack, "workflows")
    assert lines.returncode == 0 and lines.stderr == ""
    assert {"text_label", "img2img_invert", "empty_preview"} <= set(lines.stdout.split())
    assert as_json(comfy_api(stack, "workflows", "--json", module=True))["workflows"] == lines.stdout.split()


def test_run_wait_out_downloads_every_output_as_archived(stack: LocalStack, tmp_path: Path) -> None:
    out = tmp_path / "out"
    document = as_json(comfy_api(stack, "run", "empty_preview", "--wait", "--out", str(out), "--json", *POLL))

    prompt_id = document["prompt_id"]
    assert document["status"]["status"] == "completed" and document["status"]["archive"]["status"] == "archived"
    files = document["files"]
    assert len(files) == 2 and document["skipped"] == []  # batch_size 2
    for item in files:
        path = Path(item["path"])
        assert path.parent == out and path.name == f"{prompt_id}_{item['node_id']}_{item['filename']}"
        assert path.read_bytes() == archived(stack, item["s3_key"])  # byte for byte
        assert item["size"] == path.stat().st_size
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(i["path"]).name for i in files)  # no .part left


def test_run_with_prompt_and_set_in_human_mode(stack: LocalStack, tmp_path: Path) -> None:
    texts = comfy_api(stack, "run", "text_label", "--prompt", "a lighthouse at dawn", "--out", str(tmp_path), *POLL)
    assert texts.returncode == 0, texts.stderr
    [saved] = texts.stdout.splitlines()
    assert saved.startswith(f"saved {tmp_path}/") and "_2_a_lighthouse_at_dawn_" in saved  # prompt became the name
    assert texts.stderr.splitlines()[0].startswith("comfy-api: submitted ")

    sized = as_json(comfy_api(stack, "run", "empty_save", "--set", "1.width=40", "--set", "1.height=24",
                              "--out", str(tmp_path), "--json", *POLL))
    [item] = sized["files"]
    picture = decode_png(Path(item["path"]).read_bytes())
    assert (picture.width, picture.height) == (40, 24)  # the node inputs were set
    assert Path(item["path"]).read_bytes() == archived(stack, item["s3_key"])


def test_input_images_go_through_the_upload_flow(stack: LocalStack, tmp_path: Path) -> None:
    width, height = 12, 8
    pixels = bytes((x * 7 + y * 13 + c * 50) % 256 for y in range(height) for x in range(width) for c in range(3))
    photo = tmp_path / "photo.png"
    photo.write_bytes(encode_pixels(width, height, "RGB", pixels))
    mask = tmp_path / "mask.png"
    mask.write_bytes(encode_pixels(width, height, "RGBA", with_alpha(bytes(3 * width * height),
                                                                     bytes(0 if x < 6 else 255 for y in range(height)
                                                                           for x in range(width)))))
    uploads_before, sent_before = count_objects(stack, "inputs/"), stack.standin.requests.count(("POST", "/upload/image"))

    inverted = as_json(comfy_api(stack, "run", "img2img_invert", "--image", str(photo), "--out",
                                 str(tmp_path / "a"), "--json", *POLL))
    inpainted = as_json(comfy_api(stack, "run", "inpaint_composite", "--image", str(photo), "--mask", str(mask),
                                  "--out", str(tmp_path / "b"), "--json", *POLL))

    assert count_objects(stack, "inputs/") - uploads_before == 3  # one presigned PUT per file, straight to S3
    assert stack.standin.requests.count(("POST", "/upload/image")) - sent_before == 3
    for document in (inverted, inpainted):
        [item] = document["files"]
        output = Path(item["path"]).read_bytes()
        assert output == archived(stack, item["s3_key"])
        picture = decode_png(output)
        assert (picture.width, picture.height) == (width, height) and picture.data != pixels
    half = decode_png(Path(inpainted["files"][0]["path"]).read_bytes()).data
    assert half[:3] != pixels[:3] and half[-3:] == pixels[-3:]  # repainted where the mask is transparent only


def test_status_queue_cancel_and_history(stack: LocalStack) -> None:
    stack.standin.delay = 3.0  # the first prompt runs while the second waits behind it
    try:
        first = comfy_api(stack, "run", "text_label", "--prompt", "first")
        second = comfy_api(stack, "run", "text_label", "--prompt", "second")
        assert first.returncode == second.returncode == 0, first.stderr + second.stderr
        first_id, second_id = first.stdout.strip(), second.stdout.strip()  # without --wait: the id alone

        queued = as_json(comfy_api(stack, "status", second_id, "--json"))
        assert (queued["status"], queued["queue_position"]) == ("pending", 1)
        cancelled = as_json(comfy_api(stack, "cancel", second_id, "--json"))
        assert (cancelled["status"], cancelled["was"]) == ("cancelled", "pending")

        queue = as_json(comfy_api(stack, "queue", "--json"))
        waiting = [item["prompt_id"] for key in ("queue_running", "queue_pending") for item in queue[key]]
        assert first_id in waiting and second_id not in waiting
        table = comfy_api(stack, "queue")
        assert table.returncode == 0 and first_id in table.stdout

        assert as_json(comfy_api(stack, "status", second_id, "--json"))["status"] == "cancelled"
        waited = comfy_api(stack, "status", second_id, "--wait")
        assert waited.returncode == 1 and waited.stderr.splitlines()[-1] == \
            f"comfy-api: error: prompt {second_id} cancelled: Task was cancelled before it ran"

        done = as_json(comfy_api(stack, "status", first_id, "--wait", "--json", *POLL))
        assert done["status"]["status"] == "completed"
        line = comfy_api(stack, "status", first_id)
        assert line.stdout.startswith(f"{first_id}  completed  in ")
    finally:
        stack.standin.delay = 0.2

    history = as_json(comfy_api(stack, "history", "--json", "--max-items", "5"))
    assert first_id in history and history[first_id]["status"]["status_str"] == "success"
    assert first_id in comfy_api(stack, "history").stdout


def test_a_bad_workflow_name_is_one_line_and_exit_1(stack: LocalStack) -> None:
    result = comfy_api(stack, "run", "no_such_flow", "--prompt", "x", "--wait")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == ["comfy-api: error: 404 Workflow 'no_such_flow' not found"]


def test_the_same_idempotency_key_gives_the_same_prompt_and_runs_it_once(stack: LocalStack) -> None:
    key = f"client-test-{uuid.uuid4()}"
    before = prompts_sent(stack)
    first = as_json(comfy_api(stack, "run", "text_label", "--prompt", "once", "--idempotency-key", key, "--json"))
    again = as_json(comfy_api(stack, "run", "text_label", "--prompt", "once", "--idempotency-key", key, "--json"))
    assert again["prompt_id"] == first["prompt_id"] and first["idempotency_key"] == key
    assert prompts_sent(stack) - before == 1


def test_a_repeated_key_with_an_image_is_refused_not_run_twice(stack: LocalStack, tmp_path: Path) -> None:
    """Each run uploads its --image again under a new upload id: the second request differs from
    the first, so the API refuses the key (422) rather than run the workflow a second time."""
    photo = tmp_path / "photo.png"
    photo.write_bytes(encode_pixels(4, 4, "RGB", bytes(48)))
    key = f"client-test-{uuid.uuid4()}"
    before = prompts_sent(stack)
    first = comfy_api(stack, "run", "img2img_invert", "--image", str(photo), "--idempotency-key", key)
    again = comfy_api(stack, "run", "img2img_invert", "--image", str(photo), "--idempotency-key", key)
    assert first.returncode == 0 and again.returncode == 1 and again.stdout == ""
    [line] = again.stderr.splitlines()
    assert line.startswith("comfy-api: error: 422 ") and "uploaded again on every run" in line
    assert prompts_sent(stack) - before == 1


def test_ctrl_c_while_waiting_leaves_the_prompt_running(stack: LocalStack) -> None:
    stack.standin.delay = 3.0
    try:
        process = subprocess.Popen([str(COMMAND), "run", "text_label", "--prompt", "keep going", "--wait", *POLL],
                                   env=environment(stack), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, stdin=subprocess.DEVNULL)
        lines = []
        while True:  # the state lines on stderr say when it is waiting
            line = process.stderr.readline()  # type: ignore[union-attr]
            assert line, f"ended before waiting: {lines}"
            lines.append(line.rstrip())
            if line.rstrip().endswith((": running", ")")) and not line.startswith("comfy-api:"):
                break
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=CEILING)
    finally:
        stack.standin.delay = 0.2
    assert process.returncode == 130 and stdout == ""
    prompt_id = lines[0].split()[2]
    assert stderr.splitlines()[-1] in (
        f"comfy-api: prompt {prompt_id} is still {state}; follow it with: comfy-api status {prompt_id} --wait"
        for state in ("running", "queued"))
    assert as_json(comfy_api(stack, "status", prompt_id, "--wait", "--json", *POLL))["status"]["status"] == "completed"


# -- the recording in the docs ------------------------------------------------------------------
RECORDING = Path(__file__).resolve().parents[2] / "docs" / "client-run.svg"


def test_a_real_run_as_the_docs_show_it(stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`comfy-api workflows` and `comfy-api run ... --out out/` in this process, on a recording
    console drawn as a terminal draws it (the live display's last frame, then the results).
    UPDATE_RECORDING=1 writes it to docs/client-run.svg."""
    monkeypatch.chdir(tmp_path)
    console = Console(record=True, file=io.StringIO(), width=100, force_terminal=False, color_system="truecolor")
    stack.standin.delay = 1.0  # a run that takes a moment, as a real one would
    try:
        for argv in (["workflows"], ["run", "text_label", "--prompt", "a lighthouse at dawn", "--out", "out/"]):
            console.print(f"[bold green]$[/] comfy-api {shlex.join(argv)}", highlight=False)
            assert main(argv, stdout=console, stderr=console, live=True,
                        environ={"COMFY_API_URL": stack.api_url}) == 0
    finally:
        stack.standin.delay = 0.2
    console.print("[bold green]$[/]")  # the next prompt (and room below the last line's underscores)
    text = console.export_text(clear=False)
    [saved] = [line for line in text.splitlines() if line.startswith("saved ")]
    name = saved.split()[1]
    assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert re.search(r"✓ completed ━+ 100% in \d+\.\d s · 1 output", text), text
    assert stack.api_url not in text and str(tmp_path) not in text  # nothing of this machine
    svg = console.export_svg(title="comfy-api run")
    if os.environ.get("UPDATE_RECORDING"):
        RECORDING.write_text(svg, encoding="utf-8")
    assert RECORDING.exists(), "UPDATE_RECORDING=1 .venv/bin/python -m pytest tests/client -k docs_show"
    assert "comfy-api&#160;run&#160;text_label" in RECORDING.read_text(encoding="utf-8")
