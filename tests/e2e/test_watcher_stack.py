"""The live watcher through the local stack: the real WatcherFunction in a process of its own
(as `make dev` runs it), the stand-in's /ws, moto's S3, DynamoDB and EventBridge. The
archiver's schedule is off, and nobody polls the API: whatever gets archived and announced
here, the watcher did."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests

from devtools.dev import WATCHER_FUNCTION, LocalStack
from tests.support.jobs import capture_events, events_in
from tests.support.waiting import wait_for

CEILING = 30.0  # for a stuck test only; bench/watcher.py measures how fast it really is


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with tempfile.TemporaryFile() as log:
        with LocalStack(port=0, standin_delay=0.2, schedule_every=0, watch=True, watcher_log=log) as running:
            client_id = running.template.function(WATCHER_FUNCTION).environment["WATCHER_CLIENT_ID"]
            try:
                wait_for(lambda: running.standin.ws.connected(client_id), CEILING, what="watcher connected")
            except AssertionError:
                log.seek(0)
                raise AssertionError(log.read().decode(errors="replace")[-4000:]) from None
            yield running


@pytest.fixture
def completed(stack: LocalStack) -> Iterator[str]:
    """A queue receiving this test's prompt events."""
    name = f"captured-{id(object())}"
    url = capture_events({"source": ["comfy-serverless-api"],
                          "detail-type": ["ComfyUI Prompt Completed", "ComfyUI Prompt Failed"]}, name)
    yield url
    boto3.client("events", region_name="us-east-1").remove_targets(Rule=name, Ids=["queue"])
    boto3.client("events", region_name="us-east-1").delete_rule(Name=name)


def submit(stack: LocalStack, workflow: str = "empty_save", body: dict[str, Any] | None = None) -> str:
    answer = requests.post(f"{stack.api_url}/api/workflow/{workflow}", json=body or {}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["prompt_id"]


def manifests(stack: LocalStack, prompt_ids: list[str]) -> set[str]:
    s3 = stack.client("s3")
    bucket = stack.buckets["ImageBucket"]
    found = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="images/"):
        for item in page.get("Contents") or []:
            if item["Key"].endswith("/manifest.json"):
                found.add(item["Key"].split("/")[1])
    return found & set(prompt_ids)


class Collected:
    def __init__(self, url: str) -> None:
        self.url = url
        self.events: list[dict[str, Any]] = []

    def until(self, count: int) -> list[dict[str, Any]]:
        def enough() -> bool:
            self.events += events_in(self.url)
            return len(self.events) >= count
        wait_for(enough, CEILING, interval=0.1, what=f"{count} prompt events")
        return self.events


def test_a_finished_prompt_is_in_s3_and_announced_without_anyone_asking(stack: LocalStack, completed: str) -> None:
    prompt_id = submit(stack, "text_label", {"prompt": "one"})
    wait_for(lambda: manifests(stack, [prompt_id]), CEILING, interval=0.05, what="manifest")
    (announced,) = Collected(completed).until(1)
    assert announced["detail-type"] == "ComfyUI Prompt Completed"
    assert announced["detail"]["prompt_id"] == prompt_id and announced["detail"]["keys"]


def test_a_burst_of_fifty_is_archived_without_loss_or_duplicates(stack: LocalStack, completed: str) -> None:
    stack.standin.delay = 0.01
    try:
        ids = [submit(stack, "text_label", {"prompt": f"burst {n}"}) for n in range(50)]
        wait_for(lambda: len(manifests(stack, ids)) == 50, CEILING * 2, interval=0.2, what="50 manifests")
        collected = Collected(completed)
        events = collected.until(50)
        wait_for(lambda: not events_in(completed), 2.0)  # nothing more trickles in
    finally:
        stack.standin.delay = 0.2
    announced = sorted(event["detail"]["prompt_id"] for event in events)
    assert announced == sorted(ids)  # each once


def test_comfyui_restarting_mid_connection_is_reconnected_and_caught_up(stack: LocalStack, completed: str) -> None:
    sockets_before = sum(1 for method, path in stack.standin.requests if path.startswith("/ws"))
    stack.standin.restart()  # drops every socket, forgets history
    # Submitted at once: some finish before the watcher is back, and come from the catch-up.
    ids = [submit(stack, "text_label", {"prompt": f"after restart {n}"}) for n in range(5)]
    wait_for(lambda: len(manifests(stack, ids)) == 5, CEILING, interval=0.1, what="5 manifests")
    events = Collected(completed).until(5)
    assert sorted(e["detail"]["prompt_id"] for e in events) == sorted(ids)
    sockets_after = sum(1 for method, path in stack.standin.requests if path.startswith("/ws"))
    assert sockets_after > sockets_before  # it did connect again
    client_id = stack.template.function(WATCHER_FUNCTION).environment["WATCHER_CLIENT_ID"]
    assert stack.standin.ws.connected(client_id)
