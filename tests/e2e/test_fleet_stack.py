"""A fleet through the local stack (issue 13): two ComfyUI stand-ins behind one API, as
`COMFYUI_STANDINS=2 make dev` runs them, with the live watcher in its own process and the
archiver's schedule on.

One story, in order: twenty prompts are spread over both backends by queue depth; then one
backend stops in the middle of its queue. New prompts go to the other, nothing already
archived is lost, and the stopped backend's finished prompts are still answered, from S3.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from devtools.dev import LocalStack
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

TIMEOUT = 10  # seconds per HTTP call
CEILING = 30.0  # for a stuck test only: each wait returns as soon as its condition holds
# Seconds per prompt in each stand-in: long enough that a queue builds while twenty prompts
# are submitted, short enough that both queues drain in a few seconds.
DELAY = 0.3
PROMPTS = 20
AFTER_STOP = 4
# Least-loaded routing with ties shuffled and the router's own submissions counted: twenty
# prompts split about evenly. Six is far from what a fair router gives and far above what
# "everything to one backend, a few to the other" would.
AT_LEAST_EACH = 6
# The stopped backend has finished this many prompts (and has more queued) when it stops.
FINISHED_BEFORE_STOP = 3
FROZEN = 3600.0  # a delay no prompt finishes within: the backend's state holds still


@pytest.fixture
def fleet() -> Iterator[LocalStack]:
    # Stopped with its test: the next test's stack must not share the process with this
    # one's schedule and watcher. The watcher process writes to this process's stderr:
    # pytest shows it with a failure.
    with LocalStack(port=0, standins=2, standin_delay=DELAY, schedule_every=2.0, watch=True,
                    function_logs=False) as stack:
        yield stack


# -- helpers ----------------------------------------------------------------------------------
def submit(stack: LocalStack, text: str) -> dict[str, Any]:
    answer = requests.post(f"{stack.api_url}/api/workflow/text_label", json={"prompt": text}, timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text
    return answer.json()


def history(base_url: str) -> dict[str, Any]:
    """The stand-in's own history (straight from ComfyUI, not through the API)."""
    return requests.get(f"{base_url}/history", timeout=TIMEOUT).json()


def output_files(entry: dict[str, Any]) -> list[dict[str, Any]]:
    return [item for node in (entry.get("outputs") or {}).values() for item in node.get("images") or []]


def served(base_url: str, prompt_ids: set[str]) -> dict[str, dict[tuple[str, str, str], bytes]]:
    """prompt id -> {(type, subfolder, filename): the bytes ComfyUI's /view serves}."""
    finished = history(base_url)
    files: dict[str, dict[tuple[str, str, str], bytes]] = {}
    for prompt_id in prompt_ids & set(finished):
        files[prompt_id] = {}
        for item in output_files(finished[prompt_id]):
            params = {"filename": item["filename"], "subfolder": item["subfolder"], "type": item["type"]}
            response = requests.get(f"{base_url}/view", params=params, timeout=TIMEOUT)
            assert response.status_code == 200, (prompt_id, item)
            files[prompt_id][(item["type"], item["subfolder"], item["filename"])] = response.content
    return files


def manifest(stack: LocalStack, prompt_id: str) -> dict[str, Any] | None:
    s3 = stack.client("s3")
    try:
        body = s3.get_object(Bucket=stack.buckets["ImageBucket"], Key=f"images/{prompt_id}/manifest.json")["Body"]
    except s3.exceptions.NoSuchKey:
        return None
    return json.loads(body.read())


def archived(stack: LocalStack, prompt_ids: set[str]) -> set[str]:
    return {prompt_id for prompt_id in prompt_ids if manifest(stack, prompt_id) is not None}


def assert_archived_as_served(stack: LocalStack, files: dict[str, dict[tuple[str, str, str], bytes]]) -> None:
    """Each prompt's manifest lists every file ComfyUI served, and the S3 object of each is
    byte for byte what ComfyUI served."""
    s3, bucket = stack.client("s3"), stack.buckets["ImageBucket"]
    for prompt_id, expected in files.items():
        found = manifest(stack, prompt_id)
        assert found is not None, f"no manifest for {prompt_id}"
        records = {(record["type"], record["subfolder"], record["filename"]): record for record in found["files"]}
        assert set(records) == set(expected), (prompt_id, found)
        for key, content in expected.items():
            assert records[key].get("archived") is True, (prompt_id, records[key])
            stored = s3.get_object(Bucket=bucket, Key=records[key]["s3_key"])["Body"].read()
            assert stored == content, (prompt_id, key)


# -- the story ----------------------------------------------------------------------------------
def test_prompts_spread_by_load_and_a_stopped_backend_loses_nothing_archived(fleet: LocalStack) -> None:
    (first_name, first_url), (second_name, second_url) = fleet.backends
    assert (first_name, second_name) == ("standin-1", "standin-2")
    first, second = fleet.standins

    # 1. Twenty prompts through the API, one after another, as fast as it answers.
    answers = [submit(fleet, f"fleet {n}") for n in range(PROMPTS)]
    by_backend = Counter(answer["backend"] for answer in answers)
    assert set(by_backend) == {first_name, second_name}, by_backend
    assert min(by_backend.values()) >= AT_LEAST_EACH, by_backend
    on = {name: {a["prompt_id"] for a in answers if a["backend"] == name} for name in (first_name, second_name)}
    # The backend an answer names is the one that holds the prompt.
    assert on[second_name] <= {item[1] for item in _queued(second_url)} | set(history(second_url))

    # 2. The second backend stops in the middle of its queue. Its state is held still first
    # (no prompt finishes after this), so "finished before the stop" is a fixed set.
    wait_for(lambda: len(on[second_name] & set(history(second_url))) >= FINISHED_BEFORE_STOP, CEILING,
             interval=0.05, what=f"{FINISHED_BEFORE_STOP} prompts finished on {second_name}")
    second.delay = FROZEN
    finished_there = on[second_name] & set(history(second_url))
    assert finished_there < on[second_name], "stopped too late: nothing left in its queue"
    wait_for(lambda: archived(fleet, finished_there) == finished_there, CEILING, interval=0.1,
             what=f"{second_name}'s finished prompts archived by the watcher or the sweep")
    files_there = served(second_url, finished_there)
    second.stop()

    # 3. New prompts go to the backend still up.
    later = [submit(fleet, f"after the stop {n}") for n in range(AFTER_STOP)]
    assert [answer["backend"] for answer in later] == [first_name] * AFTER_STOP
    on[first_name] |= {answer["prompt_id"] for answer in later}

    # 4. Nothing archived is lost: the stopped backend's finished prompts, byte for byte...
    assert_archived_as_served(fleet, files_there)
    # ...and everything the running backend finishes, the prompts sent after the stop too.
    wait_for(lambda: on[first_name] <= set(history(first_url)), CEILING, interval=0.1,
             what=f"every prompt on {first_name} finished")
    wait_for(lambda: archived(fleet, on[first_name]) == on[first_name], CEILING, interval=0.1,
             what=f"every prompt on {first_name} archived")
    assert_archived_as_served(fleet, served(first_url, on[first_name]))

    # 5. The stopped backend's finished prompts are still answered, from the archive.
    for prompt_id, expected in files_there.items():
        status = requests.get(f"{fleet.api_url}/api/task_status/{prompt_id}", timeout=TIMEOUT)
        assert status.status_code == 200, status.text
        body = status.json()
        assert (body["status"], body.get("source")) == ("completed", "archive"), body
        assert_downloads(body["images"], expected)

        images = requests.get(f"{fleet.api_url}/api/image/{prompt_id}", timeout=TIMEOUT)
        assert images.status_code == 200, images.text
        assert_downloads(images.json()["images"], expected)


def _queued(base_url: str) -> list[list[Any]]:
    queue = requests.get(f"{base_url}/queue", timeout=TIMEOUT).json()
    return queue["queue_running"] + queue["queue_pending"]


def assert_downloads(images: list[dict[str, Any]], expected: dict[tuple[str, str, str], bytes]) -> None:
    """Every file of the prompt listed, each with a download_url serving ComfyUI's bytes."""
    assert {(image["type"], image["subfolder"], image["filename"]) for image in images} == set(expected), images
    for image in images:
        assert image.get("download_url"), image
        fetched = requests.get(image["download_url"], timeout=TIMEOUT)
        assert fetched.status_code == 200
        assert fetched.content == expected[(image["type"], image["subfolder"], image["filename"])]


SD15 = "v1-5-pruned-emaonly.safetensors"  # the checkpoint workflows/sd15_txt2img.json names


def test_a_prompt_goes_only_to_backends_that_have_its_checkpoint() -> None:
    """Backends that differ in what they can run: sd15_txt2img names a checkpoint only the
    second stand-in has, so every such prompt goes there, however loaded it is; a
    checkpoint no backend has is a 400 that says what each one lacks."""
    with LocalStack(port=0, standins=2, standin_models=[[], [SD15]], standin_delay=DELAY,
                    schedule_every=0, function_logs=False) as stack:
        api = f"{stack.api_url}/api/workflow/sd15_txt2img"
        sent = [requests.post(api, json={"prompt": f"a red fox {n}"}, timeout=TIMEOUT) for n in range(4)]
        assert [(answer.status_code, answer.json().get("backend")) for answer in sent] == [(200, "standin-2")] * 4

        missing = requests.post(api, json={"4": {"inputs": {"ckpt_name": "sdxl.safetensors"}}}, timeout=TIMEOUT)
        assert missing.status_code == 400, missing.text
        lacks = missing.json()["backends"]
        assert set(lacks) == {"standin-1", "standin-2"}
        assert {"node": "4", "class_type": "CheckpointLoaderSimple", "input": "ckpt_name",
                "value": "sdxl.safetensors"} in lacks["standin-2"]["missing_models"]
