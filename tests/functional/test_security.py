"""Secrets stay secret: the ComfyUI auth token comes from SSM and appears in no log line,
nor does the caller's API key; answers never carry internal exception text."""

from __future__ import annotations

import json

import boto3
import pytest

from comfy_core.config import get_settings
from tests.support.handlers import event, invoke
from tests.support.recordings import recording

TOKEN = "Bearer s3cr3t-comfy-token-0123456789"
API_KEY = "example-key"  # the x-api-key of the sample events


@pytest.fixture
def auth(s3, monkeypatch):
    boto3.client("ssm", region_name="us-east-1").put_parameter(
        Name="/comfy/token", Value=TOKEN, Type="SecureString"
    )
    monkeypatch.setenv("COMFYUI_AUTH_PARAMETER", "comfy/token")
    monkeypatch.setenv("COMFYUI_AUTH_HEADER", "X-Proxy-Auth")
    get_settings.cache_clear()


def test_auth_header_is_sent_from_ssm_and_never_logged(auth, comfy, logs, debug_logging, capsys):
    comfy.routes[("POST", "/prompt")] = (200, recording("prompt_success"))
    comfy.routes[("GET", "/system_stats")] = (200, recording("system_stats"))
    pid = "11111111-2222-3333-4444-555555555555"
    comfy.routes[("GET", f"/history/{pid}")] = (500, "Traceback (most recent call last): secret internals")
    assert invoke("run_workflow", event("run_workflow"))[0] == 200
    assert invoke("system_status", event("system_status"))[0] == 200
    status, body = invoke("task_status", event("task_status"))
    assert status == 502 and "Traceback" not in json.dumps(body) and "internals" not in json.dumps(body)
    assert all(call["headers"]["X-Proxy-Auth"] == TOKEN for call in comfy.calls)
    captured = logs.text() + capsys.readouterr().out
    assert "=== Request to ComfyUI ===" in captured  # DEBUG really was on
    assert TOKEN not in captured and "s3cr3t" not in captured
    assert API_KEY not in captured


def test_missing_secret_is_a_clear_server_error_without_detail(s3, comfy, monkeypatch):
    monkeypatch.setenv("COMFYUI_AUTH_PARAMETER", "comfy/missing")
    get_settings.cache_clear()
    status, body = invoke("system_status", event("system_status"))
    assert status == 500 and body == {"error": "Secret parameter /comfy/missing could not be read", "status_code": 500}
    assert comfy.calls == []
