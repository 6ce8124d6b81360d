"""Each error kind of the API's envelope is its own exception, and the command prints it
as one line on stderr with exit code 1 (2 for usage errors)."""

from __future__ import annotations

import json

import pytest
import requests
import responses

from comfy_api import ComfyAPI, RetryPolicy
from comfy_api import errors
from comfy_api.errors import error_for

from .fakes import API_URL

KINDS = [
    (400, errors.BadRequestError), (401, errors.AuthError), (403, errors.AuthError),
    (404, errors.NotFoundError), (409, errors.ConflictError), (413, errors.TooLargeError),
    (415, errors.UnsupportedMediaError), (422, errors.UnprocessableError), (429, errors.RateLimitedError),
    (500, errors.ServerError), (502, errors.ComfyUIUnavailableError), (503, errors.StorageUnavailableError),
    (504, errors.ComfyUITimeoutError), (418, errors.ComfyAPIError),
]


@pytest.mark.parametrize(("status", "kind"), KINDS)
def test_each_status_is_its_own_exception_carrying_code_and_message(status: int, kind: type) -> None:
    error = error_for(status, {"error": "what went wrong", "status_code": status, "node_id": "3"}, "Reason")
    assert type(error) is kind and isinstance(error, errors.ComfyAPIError)
    assert (error.status_code, error.message, str(error)) == (status, "what went wrong", f"{status} what went wrong")
    assert error.details["node_id"] == "3"


def test_messages_come_from_the_envelope_or_api_gateway_or_the_reason() -> None:
    assert error_for(403, {"message": "Forbidden"}).message == "Forbidden"  # a gateway without GatewayResponses
    assert error_for(502, None, "Bad Gateway").message == "Bad Gateway"  # an HTML page from a proxy
    assert error_for(400, {"error": "line one\n  line two"}).message == "line one line two"


@responses.activate
def test_an_html_error_page_does_not_leak_into_the_message() -> None:
    api = ComfyAPI(API_URL, retry=RetryPolicy(max_attempts=1))
    responses.get(f"{API_URL}/api/queue", status=502, body="<html><body>nginx</body></html>",
                  content_type="text/html")
    with pytest.raises(errors.ComfyUIUnavailableError) as raised:
        api.queue()
    assert str(raised.value) == "502 Bad Gateway"


@responses.activate
def test_an_api_error_is_one_stderr_line_and_exit_1(cli) -> None:
    responses.post(f"{API_URL}/api/workflow/nope", status=404,
                   json={"error": "Workflow 'nope' not found", "status_code": 404})
    result = cli("run", "nope", "--prompt", "x", "--json")
    assert result.code == 1
    assert result.stdout == ""  # --json prints nothing when there is no answer to print
    assert result.stderr_lines == ["comfy-api: error: 404 Workflow 'nope' not found"]


def test_no_answer_at_all_is_one_line_too(cli) -> None:
    result = cli("--api-url", "http://127.0.0.1:9", "workflows", env={})
    assert result.code == 1
    assert result.stderr_lines == ["comfy-api: error: cannot reach http://127.0.0.1:9: connection refused"]


def test_no_configuration_is_one_line(cli) -> None:
    result = cli("workflows", env={})
    assert result.code == 1
    assert result.stderr_lines == [
        "comfy-api: error: no API URL: pass --api-url, set COMFY_API_URL, or name the deployment with --stack NAME"]


@responses.activate
def test_a_failed_prompt_exits_1_after_printing_its_json(cli) -> None:
    responses.get(f"{API_URL}/api/task_status/p1", json={
        "status": "error", "message": "Task failed", "prompt_id": "p1", "images": [], "execution_time": 0.1,
        "node_errors": {}, "error": {"type": "execution_error", "node_id": "3", "node_type": "KSampler",
                                     "exception_type": "RuntimeError", "exception_message": "out of memory"}})
    result = cli("status", "p1", "--wait", "--json")
    assert result.code == 1
    assert json.loads(result.stdout)["status"]["status"] == "error"
    assert result.stderr_lines[-1] == \
        "comfy-api: error: prompt p1 failed: node 3 (KSampler): RuntimeError: out of memory"


@pytest.mark.parametrize("argv", [
    ["run"],  # no workflow name
    ["run", "text_label", "--poll", "0"],
    ["history", "--max-items", "-1"],
    ["frobnicate"],
])
def test_argparse_usage_errors_exit_2(cli, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        cli(*argv)
    assert raised.value.code == 2
    assert "usage: comfy-api" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "said"), [
    (["run", "text_label", "--prompt", "x", "--set", "6.text=y"], "cannot combine with --prompt"),
    (["run", "text_label", "--set", "novalue"], "expected NODE.INPUT=VALUE"),
    (["run", "text_label", "--set", ".seed=1"], "expected NODE.INPUT=VALUE"),
    (["run", "text_label", "--idempotency-key", "has space"], "--idempotency-key"),
])
def test_requests_that_cannot_be_made_are_usage_errors_before_any_call(cli, argv: list[str], said: str) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        result = cli(*argv)
        assert len(mock.calls) == 0
    assert result.code == 2
    assert len(result.stderr_lines) == 1 and said in result.stderr_lines[0]


def test_a_local_file_that_is_no_image_is_refused_before_any_upload(cli, tmp_path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("hello")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        result = cli("run", "img2img_invert", "--image", str(text))
        assert len(mock.calls) == 0
    assert result.code == 1
    assert result.stderr_lines == [f"comfy-api: error: {text} is not a PNG, JPEG, WebP or GIF image"]


def test_the_connection_error_keeps_its_cause() -> None:
    api = ComfyAPI("http://127.0.0.1:9", retry=RetryPolicy(max_attempts=1))
    with pytest.raises(errors.APIConnectionError) as raised:
        api.workflows()
    assert isinstance(raised.value.__cause__, requests.ConnectionError)
    assert raised.value.status_code is None


@responses.activate
def test_queue_names_each_prompts_backend_only_with_a_fleet(cli) -> None:
    one = {"queue_running": [{"prompt_id": "p-run", "number": 1}], "queue_pending": [],
           "running_count": 1, "pending_count": 0}
    responses.get(f"{API_URL}/api/queue", json=one)
    shown = cli("queue")
    assert shown.code == 0 and "p-run" in shown.stdout and "backend" not in shown.stdout
    fleet = {"queue_running": [{"prompt_id": "p-run", "number": 1, "backend": "gpu-a"}],
             "queue_pending": [{"prompt_id": "p-wait", "number": 2, "position": 1, "backend": "gpu-b"}],
             "running_count": 1, "pending_count": 1, "backends": {}}
    responses.replace(responses.GET, f"{API_URL}/api/queue", json=fleet)
    rows = {line.split()[1]: line.split() for line in cli("queue").stdout.splitlines()[1:]}
    assert rows["p-run"][-1] == "gpu-a" and rows["p-wait"][-1] == "gpu-b"
