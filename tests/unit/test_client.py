"""comfy_core.comfyui.client: headers, bodies, retries and error mapping (responses, no sockets)."""

from __future__ import annotations

import json
import socket
import uuid
from typing import Any

import pytest

from comfy_core import reset_container_state
import requests
import responses
from urllib3.util.retry import Retry

from comfy_core.comfyui import client as client_module
from comfy_core.comfyui.client import ComfyUIClient, get_client, redact_url
from comfy_core.config import get_settings
from comfy_core.errors import (
    ComfyUIBadResponseError,
    ComfyUIRejectedError,
    ComfyUITimeoutError,
    ComfyUIUnreachableError,
)

BASE = "http://comfy.test:8188"
WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 0}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
}




@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Retry, "get_backoff_time", lambda self: 0.0)


@pytest.fixture
def refused_connections(monkeypatch: pytest.MonkeyPatch, no_backoff: None) -> list[tuple[Any, ...]]:
    """Every TCP connect fails as `connection refused`, below requests and urllib3's retry loop."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    attempts: list[tuple[Any, ...]] = []

    def refuse(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        attempts.append(address)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr("urllib3.util.connection.create_connection", refuse)
    return attempts


# -- what is sent ------------------------------------------------------------------------------
def test_no_origin_header_is_sent(rsps, client, recording) -> None:
    rsps.add(responses.GET, f"{BASE}/queue", json=recording("queue_empty"))
    rsps.add(responses.POST, f"{BASE}/prompt", json=recording("prompt_success"))
    client.queue()
    client.submit_prompt(WORKFLOW, client_id="c1")
    for call in rsps.calls:
        assert "Origin" not in call.request.headers
        assert call.request.headers["User-Agent"] == client_module.USER_AGENT


def test_submit_sends_our_prompt_id_and_client_id(rsps, client) -> None:
    ours = str(uuid.uuid4())
    rsps.add(responses.POST, f"{BASE}/prompt", json={"prompt_id": ours, "number": 4, "node_errors": {}})
    answer = client.submit_prompt(WORKFLOW, client_id="client-123", prompt_id=ours)
    body = json.loads(rsps.calls[0].request.body)
    assert body == {"prompt": WORKFLOW, "client_id": "client-123", "prompt_id": ours}
    assert rsps.calls[0].request.headers["Content-Type"] == "application/json"
    assert answer["prompt_id"] == ours and answer["number"] == 4


def test_submit_generates_a_uuid_prompt_id(rsps, client, recording) -> None:
    rsps.add(responses.POST, f"{BASE}/prompt", json=recording("prompt_success"))
    client.submit_prompt(WORKFLOW, client_id="c1")
    sent = json.loads(rsps.calls[0].request.body)["prompt_id"]
    assert str(uuid.UUID(sent)) == sent


def test_partial_node_errors_are_returned_not_raised(rsps, client, recording) -> None:
    recorded = recording("prompt_success_partial_node_errors")
    rsps.add(responses.POST, f"{BASE}/prompt", json=recorded)
    answer = client.submit_prompt(WORKFLOW, client_id="c1", prompt_id=recorded["prompt_id"])
    assert answer["prompt_id"] == recorded["prompt_id"]
    assert answer["node_errors"]["3"]["class_type"] == "SaveImage"


@pytest.mark.parametrize("body", [{"number": 1}, {"prompt_id": 5}, []])
def test_accepted_without_prompt_id_is_a_bad_response(rsps, client, body) -> None:
    rsps.add(responses.POST, f"{BASE}/prompt", json=body)
    with pytest.raises(ComfyUIBadResponseError):
        client.submit_prompt(WORKFLOW, client_id="c1")


# -- ComfyUI's own 400s ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "message", "node"),
    [
        ("prompt_error_unknown_class", "Cannot execute because node NoSuchNodeXYZ does not exist.", None),
        ("prompt_error_missing_model", "Prompt outputs failed validation", "1"),
        ("prompt_error_bad_values", "Prompt outputs failed validation", "1"),
    ],
)
def test_recorded_400s_are_rejections(rsps, client, recording, name, message, node) -> None:
    recorded = recording(name)
    rsps.add(responses.POST, f"{BASE}/prompt", json=recorded, status=400)
    with pytest.raises(ComfyUIRejectedError) as caught:
        client.submit_prompt(WORKFLOW, client_id="c1", prompt_id="pid-1")
    error = caught.value
    assert error.status_code == 400
    assert error.message == message
    assert error.extra["node_errors"] == recorded["node_errors"]
    assert error.extra["comfyui_error"] == recorded["error"]
    assert error.extra["prompt_id"] == "pid-1"
    if node is not None:
        assert node in error.extra["node_errors"]
    assert len(rsps.calls) == 1


def test_400_with_a_string_error(rsps, client) -> None:
    rsps.add(responses.POST, f"{BASE}/prompt", json={"error": "no prompt", "node_errors": []}, status=400)
    with pytest.raises(ComfyUIRejectedError) as caught:
        client.submit_prompt(WORKFLOW, client_id="c1")
    assert caught.value.message == "no prompt"
    assert caught.value.extra["node_errors"] == {}


# -- ComfyUI misbehaving -----------------------------------------------------------------------
def test_500_plain_text_is_a_bad_response_without_the_body(rsps, client, recording_meta) -> None:
    meta = recording_meta("prompt_error_malformed_json")
    rsps.add(
        responses.POST,
        f"{BASE}/prompt",
        body=meta["body_text"],
        status=meta["status"],
        content_type=meta["headers"]["Content-Type"],
    )
    with pytest.raises(ComfyUIBadResponseError) as caught:
        client.submit_prompt(WORKFLOW, client_id="c1")
    assert caught.value.status_code == 502
    assert "Server got itself in trouble" not in caught.value.message
    assert meta["body_text"] not in str(caught.value)


def test_get_500_plain_text_is_a_bad_response(rsps, client, recording_meta) -> None:
    meta = recording_meta("history_max_items_bad")
    rsps.add(responses.GET, f"{BASE}/history", body=meta["body_text"], status=500)
    with pytest.raises(ComfyUIBadResponseError) as caught:
        list(client.history_items(5))
    assert "trouble" not in caught.value.message


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_200_without_json_is_a_bad_response(rsps, client, method) -> None:
    path = "/queue" if method == "GET" else "/prompt"
    rsps.add(method, f"{BASE}{path}", body="<html>proxy page</html>", status=200, content_type="text/html")
    with pytest.raises(ComfyUIBadResponseError) as caught:
        client.queue() if method == "GET" else client.submit_prompt(WORKFLOW, client_id="c1")
    assert caught.value.status_code == 502
    assert "proxy page" not in caught.value.message


def test_400_without_json_is_a_bad_response(rsps, client) -> None:
    rsps.add(responses.POST, f"{BASE}/prompt", body="Bad Request", status=400)
    with pytest.raises(ComfyUIBadResponseError):
        client.submit_prompt(WORKFLOW, client_id="c1")


def test_history_entry_that_is_not_an_object_is_a_bad_response(rsps, client) -> None:
    rsps.add(responses.GET, f"{BASE}/history/p1", json=["p1"])
    with pytest.raises(ComfyUIBadResponseError):
        client.history_entry("p1")


@pytest.mark.parametrize(
    ("exception", "error", "status_code"),
    [
        (requests.exceptions.ConnectionError("refused"), ComfyUIUnreachableError, 502),
        (requests.exceptions.ConnectTimeout("connect"), ComfyUIUnreachableError, 502),
        (requests.exceptions.ReadTimeout("read"), ComfyUITimeoutError, 504),
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_transport_failures_are_mapped(rsps, client, exception, error, status_code, method) -> None:
    path = "/queue" if method == "GET" else "/prompt"
    rsps.add(method, f"{BASE}{path}", body=exception)
    with pytest.raises(error) as caught:
        client.queue() if method == "GET" else client.submit_prompt(WORKFLOW, client_id="c1")
    assert caught.value.status_code == status_code
    assert type(caught.value) is error


# -- retries -----------------------------------------------------------------------------------
def test_get_is_retried_on_503(rsps, monkeypatch, no_backoff, recording) -> None:
    monkeypatch.setenv("COMFYUI_GET_RETRIES", "2")
    client = ComfyUIClient(get_settings())
    rsps.add(responses.GET, f"{BASE}/queue", status=503, body="")
    rsps.add(responses.GET, f"{BASE}/queue", status=503, body="")
    rsps.add(responses.GET, f"{BASE}/queue", json=recording("queue_empty"))
    assert client.queue() == recording("queue_empty")
    assert len(rsps.calls) == 3
    assert client.request_count == 1


def test_get_gives_up_after_the_configured_retries(rsps, monkeypatch, no_backoff) -> None:
    monkeypatch.setenv("COMFYUI_GET_RETRIES", "3")
    client = ComfyUIClient(get_settings())
    rsps.add(responses.GET, f"{BASE}/queue", status=503, body="Service Unavailable: secret upstream")
    with pytest.raises(ComfyUIBadResponseError) as caught:
        client.queue()
    assert len(rsps.calls) == 4
    assert "secret" not in caught.value.message


def test_post_prompt_is_not_retried_on_503(rsps, client, no_backoff) -> None:
    rsps.add(responses.POST, f"{BASE}/prompt", status=503, body="")
    with pytest.raises(ComfyUIBadResponseError):
        client.submit_prompt(WORKFLOW, client_id="c1")
    assert len(rsps.calls) == 1


def test_post_prompt_is_not_retried_on_connection_error(rsps, client) -> None:
    rsps.add(responses.POST, f"{BASE}/prompt", body=requests.exceptions.ConnectionError("reset"))
    with pytest.raises(ComfyUIUnreachableError):
        client.submit_prompt(WORKFLOW, client_id="c1")
    assert len(rsps.calls) == 1


@pytest.mark.parametrize(("retries", "attempts"), [("0", 1), ("2", 3)])
def test_get_is_retried_on_refused_connection(monkeypatch, refused_connections, retries, attempts) -> None:
    monkeypatch.setenv("COMFYUI_GET_RETRIES", retries)
    client = ComfyUIClient(get_settings())
    with pytest.raises(ComfyUIUnreachableError):
        client.queue()
    assert len(refused_connections) == attempts
    assert refused_connections[0][0] == "comfy.test"


def test_post_prompt_is_not_retried_on_refused_connection(monkeypatch, refused_connections) -> None:
    monkeypatch.setenv("COMFYUI_GET_RETRIES", "2")
    client = ComfyUIClient(get_settings())
    with pytest.raises(ComfyUIUnreachableError):
        client.submit_prompt(WORKFLOW, client_id="c1")
    assert len(refused_connections) == 1


def test_read_timeout_is_not_retried(rsps, monkeypatch) -> None:
    monkeypatch.setenv("COMFYUI_GET_RETRIES", "2")
    client = ComfyUIClient(get_settings())
    rsps.add(responses.GET, f"{BASE}/queue", body=requests.exceptions.ReadTimeout("slow"))
    with pytest.raises(ComfyUITimeoutError):
        client.queue()
    assert len(rsps.calls) == 1


# -- URLs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://user:secret@comfy.test:8188/base", "http://comfy.test:8188/base"),
        ("https://user@comfy.test/x?y=1", "https://comfy.test/x?y=1"),
        ("http://comfy.test:8188", "http://comfy.test:8188"),
    ],
)
def test_redact_url_removes_credentials(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_url_keeps_ipv6_brackets() -> None:
    assert redact_url("http://u:p@[::1]:8188/x") == "http://[::1]:8188/x"


def test_view_url_uses_the_public_url_without_credentials(monkeypatch) -> None:
    monkeypatch.setenv("COMFYUI_PUBLIC_URL", "https://viewer:pw@images.example.com/")
    client = ComfyUIClient(get_settings())
    url = client.view_url({"filename": "a b.png", "subfolder": "s", "type": "temp"})
    assert url == "https://images.example.com/view?filename=a+b.png&subfolder=s&type=temp"
    assert client.base_url == BASE


def test_view_url_is_none_without_a_public_url(client) -> None:
    """The base URL is the functions' way in (often a private address): never shown."""
    assert client.view_url({"filename": "x.png", "subfolder": "", "type": "output"}) is None
    assert client.public_url("/system_stats") is None


def test_get_client_is_cached_until_reset(monkeypatch) -> None:
    first = get_client()
    assert get_client() is first
    assert first.base_url == BASE
    monkeypatch.setenv("COMFYUI_BASE_URL", "http://other.test:9000/")
    reset_container_state()
    assert get_client().base_url == "http://other.test:9000"
