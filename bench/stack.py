"""The local stack the handler benchmarks run against, and the Lambda-like child environment.

``devtools.dev.LocalStack`` (moto with the template's buckets, tables and workflows) and
three ComfyUI stand-ins (delay 0) run in the bench process; every measured handler runs
in a child process, so it shares no GIL with the servers.

* ``main``: read handlers and the archiver. Holds finished prompts (one of them the id in
  events/*.json, already archived), so every read handler takes its full "finished" path.
* ``sink``: receives run_workflow's prompts, so they never change what ``main`` answers;
  holds one finished prompt that is not archived.
* ``busy``: one prompt running (for an hour) and one pending behind it.
"""

from __future__ import annotations

import json
import logging
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

from bench.common import REPO
from devtools.dev import COMFYUI_PARAMETER, DEFAULT_TEMPLATE, LocalStack
from devtools.template import REGION, Template

# The prompt id of events/task_status.json, image.json, history_entry.json, cancel_task.json.
EVENT_PROMPT_ID = "11111111-2222-3333-4444-555555555555"
# Outputs a few finished prompts leave in ComfyUI's history, like a real one has.
SEED_WORKFLOWS = ("empty_save", "text_label", "empty_save")
# Lambda's own variables that Powertools or boto3 read (the memory size is the function's).
LAMBDA_VARS = {
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
    "LANG": "C.UTF-8",
}
# ComfyUIBaseUrl has no default; functions are listed before any stand-in runs.
PLACEHOLDER_COMFYUI = "http://127.0.0.1:8188"


# -- template ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class FunctionInfo:
    logical_id: str
    name: str  # folder under functions/
    api: bool  # has an Api event
    uses_s3: bool  # its policies grant S3 access: it is expected to load boto3


def load_template(comfyui_url: str = PLACEHOLDER_COMFYUI) -> Template:
    return Template.load(DEFAULT_TEMPLATE, {COMFYUI_PARAMETER: comfyui_url})


def template_functions(template: Template | None = None) -> list[FunctionInfo]:
    """Every function of template.yaml with a folder under functions/ (as devtools reads it:
    conditions applied, the same reader as `make dev`)."""
    template = template or load_template()
    with_api = {route.function_id for route in template.routes()}
    found = []
    for function in template.functions():
        if (function.code_uri / "app.py").exists():
            policies = (template.resources[function.logical_id].get("Properties") or {}).get("Policies")
            found.append(FunctionInfo(function.logical_id, function.code_uri.name,
                                      function.logical_id in with_api, _grants_s3(policies)))
    return found


def _grants_s3(policies: Any) -> bool:
    """An S3 policy template (S3ReadPolicy...) or a statement with an s3: action."""
    text = json.dumps(policies, default=str)
    return bool(re.search(r'"S3\w*Policy"|"s3:', text))


# -- the stack ---------------------------------------------------------------------------------
@dataclass
class Stack:
    local: LocalStack  # moto, buckets, tables, workflows; its ComfyUI is the ``main`` stand-in
    standins: dict[str, Any]  # name -> devtools.comfyui_standin.ComfyUIStandIn
    # "running"/"pending" (on busy), "unarchived" (finished, on sink) -> prompt id
    prompt_ids: dict[str, str] = field(default_factory=dict)
    # The template resolved once per stand-in (ComfyUIBaseUrl), read from disk once.
    templates: dict[str, Template] = field(default_factory=dict, init=False)
    # Folder under functions/ -> logical id.
    function_ids: dict[str, str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        assert self.local.template is not None, "start the LocalStack first"
        template = self.local.template
        self.templates = {name: template.with_parameters({COMFYUI_PARAMETER: self.comfy_url(name)})
                          for name in self.standins}
        self.function_ids = {f.code_uri.name: f.logical_id for f in template.functions()}

    def comfy_url(self, name: str) -> str:
        return str(self.standins[name].base_url)

    def lambda_env(self, comfy: str = "main", function: str | None = None, **extra: str) -> dict[str, str]:
        """The environment a deployed function gets, pointed at the local stack: the
        template's variables for ``function`` (a folder under functions/; default: the
        first function, every function shares the Globals environment) resolved with
        ComfyUIBaseUrl at the ``comfy`` stand-in, plus Lambda's own variables.

        Built from scratch (LocalStack.child_environment): a developer's AWS_PROFILE or
        config files must not count. The only AWS endpoint is moto's AWS_ENDPOINT_URL, with
        dummy credentials, the same for the baselines (`import boto3; boto3.client("s3")`)
        as for the handlers, so a cold start is compared on equal terms. Never
        AWS_ENDPOINT_URL_LAMBDA: the archiver invoke that task_status makes for an
        unarchived prompt reaches moto (which has no such function and answers at once),
        not a LocalLambda running the archiver in the bench process during a timed run.
        """
        template = self.templates[comfy]
        function_id = self.function_ids[function] if function else next(iter(self.function_ids.values()))
        env = {
            **self.local.child_environment(function_id, template),
            **LAMBDA_VARS,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(template.function(function_id).memory_size),
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


def archive_main(stack: Stack) -> None:
    """Archive what ``main`` holds, as the scheduled archiver would (manifests in S3),
    in a child with the functions' own environment."""
    code = "from comfy_core.archive import sweep; import json; print(json.dumps(sweep.run_sweep()))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=stack.lambda_env("main", "archiver"),
        capture_output=True, text=True, timeout=120, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"archiving the seeded prompts failed:\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    if summary.get("status") != "ok" or summary.get("prompts_incomplete"):
        raise RuntimeError(f"archiving the seeded prompts failed: {summary}")


@contextmanager
def local_stack() -> Iterator[Stack]:
    from devtools.comfyui_standin import ComfyUIStandIn

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    root = Path(tempfile.mkdtemp(prefix="bench-stack-"))
    standins: dict[str, Any] = {}
    try:
        for name, delay in (("main", 0.0), ("sink", 0.0), ("busy", 3600.0)):
            standins[name] = ComfyUIStandIn(root / name, port=0, delay=delay).start()
        # No schedules: nothing may run in the bench process while a child is timed.
        with LocalStack(port=0, comfyui_base_url=standins["main"].base_url, schedule_every=0) as local:
            _seed_main(standins["main"].base_url)
            unarchived = post_prompt(standins["sink"].base_url, "empty_save")
            wait_for(lambda: finished(standins["sink"].base_url, unarchived), "the unarchived prompt")
            ids = {**_seed_busy(standins["busy"].base_url), "unarchived": unarchived}
            stack = Stack(local, standins, ids)
            archive_main(stack)
            yield stack
    finally:
        for standin in standins.values():
            standin.stop()
        shutil.rmtree(root, ignore_errors=True)
