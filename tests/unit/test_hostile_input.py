"""Fixes found by the contract fuzzing and fault tests (tests/e2e/test_contract_fuzz.py,
tests/e2e/test_faults.py), pinned here in fast unit form."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from comfy_core import status
from comfy_core.api import MAX_JSON_DEPTH, Request, api_handler, dumps
from comfy_core.comfyui.client import ComfyUIClient
from comfy_core.config import get_settings
from comfy_core.errors import BadRequestError, ComfyUIBadResponseError, ComfyUITimeoutError
from tests.support.lambda_context import FakeLambdaContext


def parse(raw: str) -> dict[str, Any]:
    return Request(method="POST", path="/", raw_body=raw.encode("utf-8", "surrogatepass")).json_object()


# -- request bodies ---------------------------------------------------------------------------
def nested(depth: int) -> str:
    """A body whose deepest container is `depth` levels down (the body itself is level 1)."""
    return '{"a": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


def test_nesting_up_to_the_limit_is_accepted() -> None:
    assert parse(nested(MAX_JSON_DEPTH))


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 600, 990])
def test_deeper_nesting_is_a_bad_request(depth: int) -> None:
    # 600 and 990 parsed fine but crashed copy.deepcopy in the patcher (500).
    with pytest.raises(BadRequestError, match="nested deeper"):
        parse(nested(depth))


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999", "-1e400"])
def test_non_finite_numbers_are_a_bad_request(number: str) -> None:
    # They came back in ComfyUI's node_errors and made our answer invalid JSON.
    with pytest.raises(BadRequestError, match="not valid JSON"):
        parse('{"1": {"inputs": {"width": %s}}}' % number)


def test_large_finite_numbers_are_kept() -> None:
    assert parse('{"x": 1e308, "y": 123456789012345678901234567890}') == {
        "x": 1e308, "y": 123456789012345678901234567890}


@pytest.mark.parametrize("raw", ['{"client_id": "\\ud800"}', '{"\\udfff": 1}', '{"a": ["x\\ud83d"]}'])
def test_lone_surrogate_escapes_are_a_bad_request(raw: str) -> None:
    # They crashed put_event's encode (500) and the response encoding (502 at the gateway).
    with pytest.raises(BadRequestError, match="lone surrogate"):
        parse(raw)


def test_surrogate_pair_escapes_are_text() -> None:
    assert parse('{"prompt": "\\ud83d\\ude00 caf\\u00e9"}') == {"prompt": "😀 café"}


# -- answers ------------------------------------------------------------------------------------
def test_answers_are_strict_utf8_json() -> None:
    text = dumps({"nan": float("nan"), "inf": [float("-inf")], "s": "caf\u00e9", "lone": "\ud800"})
    text.encode("utf-8")
    assert json.loads(text, parse_constant=lambda name: pytest.fail(name)) == {
        "nan": None, "inf": [None], "s": "café", "lone": "\ud800"}


def test_unicode_stays_readable_in_ordinary_answers() -> None:
    assert dumps({"s": "café 😀"}) == '{"s": "café 😀"}'


def test_an_answer_that_cannot_be_serialised_is_the_500_envelope() -> None:
    loop: list[Any] = []
    loop.append(loop)

    @api_handler
    def handler(request: Request) -> Any:
        return {"loop": loop}

    response = handler({"httpMethod": "GET", "path": "/", "requestContext": {"requestId": "r"}},
                       FakeLambdaContext())
    assert response["statusCode"] == 500
    assert json.loads(response["body"]) == {"error": "Internal server error", "status_code": 500}


# -- query ------------------------------------------------------------------------------------
class _History:
    def history_items(self, count: int, offset: int | None = None) -> Any:
        return iter([("asked", {"count": count})])


@pytest.mark.parametrize("value", ["\uff11", "1_0", " 5", "+5", "5.0", "0x10", "9" * 5000])
def test_max_items_takes_ascii_digits_only(value: str) -> None:
    with pytest.raises(BadRequestError):
        status.history(_History(), {"max_items": value}, 100, 1000)  # type: ignore[arg-type]


def test_max_items_in_range_is_used() -> None:
    page = status.history(_History(), {"max_items": "1000"}, 100, 1000)  # type: ignore[arg-type]
    assert page.body == {"asked": {"count": 1000}}


# -- ComfyUI answers of the wrong shape, and hanging ---------------------------------------------
@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections and reads, never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()
    held: list[socket.socket] = []

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    listener.close()


@pytest.mark.parametrize("method", ["system_stats", "queue"])
def test_a_hanging_comfyui_is_a_timeout_not_unreachable(monkeypatch, silent_server, method) -> None:
    # GETs carry a urllib3 Retry: the read timeout arrived as ConnectionError and became 502.
    monkeypatch.setenv("COMFYUI_BASE_URL", silent_server)
    monkeypatch.setenv("COMFYUI_READ_TIMEOUT", "0.2")
    get_settings.cache_clear()
    with pytest.raises(ComfyUITimeoutError):
        getattr(ComfyUIClient(get_settings()), method)()


def test_a_hanging_prompt_submission_is_a_timeout(monkeypatch, silent_server) -> None:
    monkeypatch.setenv("COMFYUI_BASE_URL", silent_server)
    monkeypatch.setenv("COMFYUI_READ_TIMEOUT", "0.2")
    get_settings.cache_clear()
    with pytest.raises(ComfyUITimeoutError):
        ComfyUIClient(get_settings()).submit_prompt({"1": {}}, client_id="c")


@pytest.mark.parametrize("body", [[], None, "text", 3])
@pytest.mark.parametrize("method", ["system_stats", "queue", "history"])
def test_object_endpoints_refuse_other_json(method: str, body: Any) -> None:
    import responses

    with responses.RequestsMock() as mock:
        mock.add(responses.GET, f"{get_settings().comfyui_base_url}/{method}", json=body)
        client = ComfyUIClient(get_settings())
        with pytest.raises(ComfyUIBadResponseError):
            if method == "history":  # read as a stream, entry by entry
                list(client.history_items(5))
            else:
                getattr(client, method)()
