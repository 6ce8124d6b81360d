"""`python -m devtools.invoke` (`make invoke`): sam local invoke's flags, without Docker, run as
a user runs it (a child process), against a stack of its own or the running local stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import requests

from devtools.dev import LocalStack, aws_environment
from tests.support.handlers import ROOT

TIMEOUT = 120


def invoke(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> tuple[int, dict, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "COMFYUI_"))}
    done = subprocess.run([sys.executable, "-m", "devtools.invoke", *args], cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=TIMEOUT, env={**base, **(env or {})})
    answer = json.loads(done.stdout) if done.stdout.strip() else {}
    return done.returncode, answer, done.stderr


def test_a_sample_event_runs_on_a_stack_of_its_own() -> None:
    code, answer, logs = invoke("ListWorkflowsFunction", "-e", "events/list_workflows.json")
    assert code == 0 and answer["statusCode"] == 200
    assert "img2img_invert" in json.loads(answer["body"])["workflows"]
    assert "starting moto and the ComfyUI stand-in" in logs


def test_event_on_stdin_env_vars_and_parameter_overrides(tmp_path: Path) -> None:
    env_file = tmp_path / "env.json"
    env_file.write_text(json.dumps({"Parameters": {"MAX_BODY_BYTES": "10"}}))
    body = json.dumps({"prompt": "a lighthouse at dawn"})
    event = json.loads((ROOT / "events" / "run_workflow.json").read_text()) | {"body": body}
    code, answer, _ = invoke("RunWorkflowFunction", "-e", "-", "--env-vars", str(env_file),
                             "--parameter-overrides", "MaxQueueDepth=5", stdin=json.dumps(event))
    assert code == 0 and answer["statusCode"] == 400  # the env var applied: 10-byte bodies
    assert "larger than 10 bytes" in json.loads(answer["body"])["error"]


def test_against_the_running_local_stack() -> None:
    with LocalStack(port=0, standin_delay=0.05, schedule_every=0) as stack:
        env = {**aws_environment(stack.moto_endpoint), "COMFYUI_BASE_URL": stack.standin.base_url}
        code, answer, logs = invoke("RunJobFunction", "-e", "events/run_job_direct.json", env=env)
        assert code == 0 and answer["status"] == "success", logs
        assert "starting moto" not in logs
        # The prompt went to that stack's ComfyUI: it is queued there or already finished.
        base = stack.standin.base_url
        known = json.dumps(requests.get(f"{base}/queue", timeout=5).json()) + json.dumps(
            requests.get(f"{base}/history/{answer['prompt_id']}", timeout=5).json())
        assert answer["prompt_id"] in known


def test_an_unknown_function_names_the_template_s_functions() -> None:
    code, _, logs = invoke("NoSuchFunction")
    assert code == 2 and "TaskStatusFunction" in logs
