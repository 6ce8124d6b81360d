"""The local stack the handler benchmarks run against, and the Lambda-like child environment.

One moto server and three ComfyUI stand-ins (delay 0) run in the bench process; every
measured handler runs in a child process, so it shares no GIL with the servers.

* ``main``: read handlers and the archiver. Holds finished prompts (one of them the id in
  events/*.json, already archived), so every read handler takes its full "finished" path.
* ``sink``: receives run_workflow's prompts, so they never change what ``main`` answers;
  holds one finished prompt that is not archived.
* ``busy``: one prompt running (for an hour) and one pending behind it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.common import REPO

REGION = "us-east-1"
WORKFLOW_BUCKET = "bench-workflows"
IMAGE_BUCKET = "bench-images"
# The prompt id of events/task_status.json, image.json, history_entry.json, cancel_task.json.
EVENT_PROMPT_ID = "11111111-2222-3333-4444-555555555555"
# Outputs a few finished prompts leave in ComfyUI's history, like a real one has.
SEED_WORKFLOWS = ("empty_save", "text_label", "empty_save")
# Lambda's own variables that Powertools or boto3 read.
LAMBDA_VARS = {
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
    "LANG": "C.UTF-8",
}


# -- template ----------------------------------------------------------------------------------
class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation short-form tags (!Ref, !Sub...) as plain values: only the
    structure of the template matters here."""


_CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


@dataclass(frozen=True)
class FunctionInfo:
    logical_id: str
    name: str  # folder under functions/
    api: bool  # has an Api event
    uses_s3: bool  # its policies grant S3 access: it is expected to load boto3


def template_functions(path: Path = REPO / "template.yaml") -> list[FunctionInfo]:
    """Every function of template.yaml with a folder under functions/."""
    document = yaml.load(path.read_text(encoding="utf-8"), Loader=_CfnLoader)  # noqa: S506
    found = []
    for logical_id, resource in (document.get("Resources") or {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource.get("Properties") or {}
        name = str(props.get("CodeUri") or "").strip("/").removeprefix("functions/")
        events = (props.get("Events") or {}).values()
        api = any((event or {}).get("Type") == "Api" for event in events)
        if name and (REPO / "functions" / name / "app.py").exists():
            found.append(FunctionInfo(logical_id, name, api, _grants_s3(props.get("Policies"))))
    return found


def _grants_s3(policies: Any) -> bool:
    """An S3 policy template (S3ReadPolicy...) or a statement with an s3: action."""
    text = json.dumps(policies, default=str)
    return bool(re.search(r'"S3\w*Policy"|"s3:', text))


# -- the stack ---------------------------------------------------------------------------------
@dataclass
class Stack:
    endpoint: str
    standins: dict[str, Any]  # name -> devtools.comfyui_standin.ComfyUIStandIn
    s3: Any
    # "running"/"pending" (on busy), "unarchived" (finished, on sink) -> prompt id
    prompt_ids: dict[str, str] = field(default_factory=dict)

    def comfy_url(self, name: str) -> str:
        return str(self.standins[name].base_url)

    def lambda_env(self, comfy: str = "main", **extra: str) -> dict[str, str]:
        """The environment a deployed function gets (template Globals), pointed at the
        local stack. Built from scratch: a developer's AWS_PROFILE or config must not count."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            **LAMBDA_VARS,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            # Lambda has no shared config files; neither do the children.
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "COMFYUI_BASE_URL": self.comfy_url(comfy),
            "WORKFLOW_BUCKET": WORKFLOW_BUCKET,
            "WORKFLOW_PREFIX": "workflows/",
            "IMAGE_BUCKET": IMAGE_BUCKET,
            "IMAGE_PREFIX": "images/",
            "POWERTOOLS_SERVICE_NAME": "comfy-serverless-api",
            "POWERTOOLS_METRICS_NAMESPACE": "ComfyServerlessApi",
            "POWERTOOLS_LOG_LEVEL": "INFO",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "PYTHONPATH": os.pathsep.join([".", "layers/comfy_core"]),
        }
        env.update(extra)
        return env


def post_prompt(base_url: str, workflow: str, prompt_id: str | None = None) -> str:
    import requests

    graph = json.loads((REPO / "workflows" / f"{workflow}.json").read_text(encoding="utf-8"))
    body = {"prompt": graph, "client_id": "bench", "prompt_id": prompt_id or str(uuid.uuid4())}
    answer = requests.post(f"{base_url}/prompt", json=body, timeout=10)
    answer.raise_for_status()
    return str(answer.json()["prompt_id"])


def wait_for(predicate: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"stand-in: timed out waiting for {what}")
        time.sleep(0.02)


def finished(base_url: str, prompt_id: str) -> bool:
    import requests

    return prompt_id in requests.get(f"{base_url}/history/{prompt_id}", timeout=10).json()


def _running(base_url: str, prompt_id: str) -> bool:
    import requests

    queue = requests.get(f"{base_url}/queue", timeout=10).json()
    return any(item[1] == prompt_id for item in queue["queue_running"])


def _seed_main(base_url: str) -> None:
    ids = [post_prompt(base_url, "empty_preview", EVENT_PROMPT_ID)]
    ids += [post_prompt(base_url, name) for name in SEED_WORKFLOWS]
    for prompt_id in ids:
        wait_for(lambda: finished(base_url, prompt_id), f"prompt {prompt_id}")


def _seed_busy(base_url: str) -> dict[str, str]:
    running = post_prompt(base_url, "empty_save")
    wait_for(lambda: _running(base_url, running), "the running prompt")
    return {"running": running, "pending": post_prompt(base_url, "empty_save")}


def _upload_workflows(s3: Any) -> None:
    for path in sorted((REPO / "workflows").glob("*.json")):
        s3.put_object(Bucket=WORKFLOW_BUCKET, Key=f"workflows/{path.name}", Body=path.read_bytes())


def archive_main(stack: Stack) -> None:
    """Archive what ``main`` holds, as the scheduled archiver would (manifests in S3),
    in a child with the functions' own environment."""
    code = "from comfy_core import archive; import json; print(json.dumps(archive.run_sweep()))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=stack.lambda_env("main"),
        capture_output=True, text=True, timeout=120, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"archiving the seeded prompts failed:\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    if summary.get("status") != "ok" or summary.get("prompts_incomplete"):
        raise RuntimeError(f"archiving the seeded prompts failed: {summary}")


@contextmanager
def local_stack() -> Iterator[Stack]:
    import boto3
    from moto.server import ThreadedMotoServer

    from devtools.comfyui_standin import ComfyUIStandIn

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    root = Path(tempfile.mkdtemp(prefix="bench-stack-"))
    standins: dict[str, Any] = {}
    try:
        host, port = moto.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION,
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        for bucket in (WORKFLOW_BUCKET, IMAGE_BUCKET):
            s3.create_bucket(Bucket=bucket)
        _upload_workflows(s3)
        for name, delay in (("main", 0.0), ("sink", 0.0), ("busy", 3600.0)):
            standins[name] = ComfyUIStandIn(root / name, port=0, delay=delay).start()
        _seed_main(standins["main"].base_url)
        unarchived = post_prompt(standins["sink"].base_url, "empty_save")
        wait_for(lambda: finished(standins["sink"].base_url, unarchived), "the unarchived prompt")
        ids = {**_seed_busy(standins["busy"].base_url), "unarchived": unarchived}
        stack = Stack(endpoint, standins, s3, ids)
        archive_main(stack)
        yield stack
    finally:
        for standin in standins.values():
            standin.stop()
        moto.stop()
        shutil.rmtree(root, ignore_errors=True)
