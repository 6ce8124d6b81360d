"""The live watcher's code under WatcherFunction's own role (and task_status's progress read
under its role), against the IAM-enforcing moto server: the lease, progress, announcement
claims, the archive copy and the events it makes are all allowed, and asked for. With a
fleet (HasBackendsRegistry) the one invocation watches every backend, a lease each."""

from __future__ import annotations

import threading
import time
from typing import Any

import requests

from devtools.comfyui_standin import ComfyUIStandIn
from functions.task_status.app import lambda_handler as task_status_handler
from functions.watcher.app import lambda_handler as watcher_handler
from tests.iam.test_function_roles import (arn, assert_allowed, body, bus_arn, comfyui_reads, run,
                                           second_backend_token, wait_finished)
from tests.support.handlers import event
from tests.support.iam import IamStack
from tests.support.lambda_context import FakeLambdaContext
from tests.support.recordings import workflow
from tests.support.waiting import wait_for

WATCH_SECONDS = 4.0  # connected this long: enough for a prompt of a second to run and finish


class ShortContext(FakeLambdaContext):
    def __init__(self, seconds: float) -> None:
        from comfy_core.live.watcher import SHUTDOWN_MARGIN
        super().__init__(function_name="WatcherFunction")
        self.end = time.monotonic() + SHUTDOWN_MARGIN + seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.end - time.monotonic()) * 1000))


def post_prompt(standin: ComfyUIStandIn, client_id: str, tag: str) -> str:
    """A prompt of ours posted straight to ComfyUI (no AWS involved), as jobs.run_workflow sends it."""
    graph = workflow("empty_save.json")
    graph["2"]["inputs"]["filename_prefix"] = f"iam_{tag}"
    answer = requests.post(f"{standin.base_url}/prompt", timeout=5, json={
        "prompt": graph, "client_id": client_id,
        "extra_data": {"comfy_serverless": {"workflow": "empty_save"}}})
    answer.raise_for_status()
    return answer.json()["prompt_id"]


def test_watcher_runs_under_its_own_role(stack: IamStack, standin: ComfyUIStandIn) -> None:
    client_id = stack.environment("WatcherFunction")["WATCHER_CLIENT_ID"]
    # Finished before the watcher connects (submitted under the run role): caught up from history.
    answer, _ = run(stack, "RunWorkflowFunction", event("run_workflow_advanced"))
    earlier = body(answer)["prompt_id"]
    wait_finished(stack, earlier)
    live: list[str] = []

    def while_connected() -> None:
        wait_for(lambda: standin.ws.connected(client_id), 10, what="watcher connected")
        standin.delay = 1.0  # runs long enough for progress to be written
        live.append(post_prompt(standin, client_id, f"live_{time.monotonic_ns()}"))

    helper = threading.Thread(target=while_connected)
    helper.start()
    try:
        with stack.running_as("WatcherFunction") as role_run:
            summary: dict[str, Any] = watcher_handler(event("watcher_scheduled"), ShortContext(WATCH_SECONDS))
    finally:
        helper.join()
        standin.delay = 0.0
    # One socket per backend (a fleet's are listed in the registry).
    backends = len(stack.backends) or 1
    assert summary["status"] == "handed_over" and summary["connects"] == backends, summary
    assert summary["prompts_archived"] + summary["prompts_already_archived"] >= 1, summary
    table, images = arn(stack, "PromptStateTable"), arn(stack, "ImageBucket")
    assert_allowed(role_run,
                   ("dynamodb:PutItem", table),  # the lease
                   ("dynamodb:UpdateItem", table),  # progress, announcement claims
                   ("dynamodb:GetItem", table),  # run times of the workflow (ETA)
                   ("dynamodb:DeleteItem", table),  # the lease released
                   ("s3:ListBucket", images),  # the catch-up sweep
                   ("s3:PutObject", f"{images}/images/{earlier}/manifest.json"),
                   ("s3:PutObject", f"{images}/images/{live[0]}/manifest.json"),
                   ("events:PutEvents", bus_arn(stack)), *comfyui_reads(stack), *second_backend_token(stack))


def test_a_running_prompts_progress_is_read_under_task_status_role(stack: IamStack,
                                                                    standin: ComfyUIStandIn) -> None:
    standin.delay = 30.0
    try:
        prompt_id = post_prompt(standin, "someone", f"running_{time.monotonic_ns()}")
        wait_for(lambda: any(item[1] == prompt_id for item in requests.get(
            f"{standin.base_url}/queue", timeout=5).json()["queue_running"]), 10)
        with stack.running_as("TaskStatusFunction") as role_run:
            answer = task_status_handler(event("task_status", pathParameters={"prompt_id": prompt_id}),
                                         FakeLambdaContext(function_name="TaskStatusFunction"))
    finally:
        standin.delay = 0.0
        requests.post(f"{standin.base_url}/interrupt", json={}, timeout=5)
    assert answer["statusCode"] == 200 and body(answer)["status"] == "running", answer
    assert "progress" in body(answer)
    # One GetItem: a fleet's lookup of the prompt's backend reads the item progress is in.
    assert_allowed(role_run, ("dynamodb:GetItem", arn(stack, "PromptStateTable")), *comfyui_reads(stack))
