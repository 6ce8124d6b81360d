"""What operators see in the logs and metrics of a run."""

from __future__ import annotations

import json

from tests.support.handlers import event, invoke
from tests.support.recordings import recording

# `logs` (the JSON log lines so far) and `debug_logging` come from tests/functional/conftest.py.


def test_debug_dumps_the_seed_debug_blocks_with_prompt_id(s3, comfy, logs, debug_logging):
    comfy.routes[("POST", "/prompt")] = (200, recording("prompt_success"))
    status, body = invoke("run_workflow", event("run_workflow"))
    assert status == 200
    lines = logs()
    messages = [line["message"] for line in lines]
    assert any(m.startswith("=== Final Workflow JSON ===") for m in messages)
    assert any(m.startswith("=== Request to ComfyUI ===") for m in messages)
    dump = next(line for line in lines if line["message"].startswith("=== Request"))
    assert dump["correlation_id"] == "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"
    assert "prompt_id" in dump and "a lighthouse at dawn" in dump["message"]


def test_info_level_has_no_workflow_dumps(s3, comfy, logs):
    comfy.routes[("POST", "/prompt")] = (200, recording("prompt_success"))
    assert invoke("run_workflow", event("run_workflow"))[0] == 200
    assert not any("=== Final Workflow JSON ===" in line["message"] for line in logs())


def test_metrics_submitted_rejected_unavailable(s3, comfy, capsys):
    comfy.routes[("POST", "/prompt")] = (200, recording("prompt_success"))
    invoke("run_workflow", event("run_workflow"))
    comfy.routes[("POST", "/prompt")] = (400, recording("prompt_error_unknown_class"))
    invoke("run_workflow", event("run_workflow"))
    comfy.routes[("POST", "/prompt")] = (503, "busy")
    invoke("run_workflow", event("run_workflow"))
    out = capsys.readouterr().out
    emitted = [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]
    names = [m["Name"] for blob in emitted for d in blob["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]]
    assert names.count("PromptSubmitted") == 1
    assert names.count("PromptRejected") == 1
    assert names.count("ComfyUIUnavailable") == 1


def test_prompt_id_does_not_leak_into_the_next_request(comfy, logs):
    pid = "11111111-2222-3333-4444-555555555555"
    comfy.routes[("GET", "/system_stats")] = requests_error()
    comfy.routes[("GET", f"/history/{pid}")] = requests_error()
    invoke("task_status", event("task_status"))
    first = logs()
    assert first and first[-1]["prompt_id"] == pid
    invoke("system_status", event("system_status"))
    second = logs()[len(first):]
    assert second and all("prompt_id" not in line for line in second)


def requests_error():
    import requests

    return requests.exceptions.ConnectionError()
