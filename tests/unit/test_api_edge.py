"""comfy_core.api: events in, the error envelope and JSON responses out."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from comfy_core import errors
from comfy_core.api import Request, api_handler
from comfy_core.config import get_settings
from tests.support.lambda_context import FakeLambdaContext


def event(body: Any = None, *, b64: bool = False, **extra: Any) -> dict[str, Any]:
    return {
        "httpMethod": "POST",
        "path": "/api/workflow/x",
        "headers": {"Content-Type": "application/json"},
        "pathParameters": {"workflow_name": "x"},
        "queryStringParameters": None,
        "requestContext": {"requestId": "req-1"},
        "body": body,
        "isBase64Encoded": b64,
        **extra,
    }


def call(handler: Any, evt: dict[str, Any]) -> tuple[int, Any, dict[str, Any]]:
    response = handler(evt, FakeLambdaContext())
    assert response["headers"]["Content-Type"] == "application/json"
    assert response["isBase64Encoded"] is False
    return response["statusCode"], json.loads(response["body"]), response


def body_echo() -> Any:
    @api_handler
    def handler(request: Request) -> Any:
        return {"body": request.json_object()}

    return handler


def raising(exc: BaseException) -> Any:
    @api_handler
    def handler(request: Request) -> Any:
        raise exc

    return handler


@pytest.fixture(autouse=True)
def _no_tracing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")


# -- error mapping -------------------------------------------------------------------------
# Every class of comfy_core.errors with the status and headers a client gets, written out
# rather than read from the classes: changing an error's status must fail a test.
ERROR_TABLE: dict[str, tuple[int, dict[str, str]]] = {
    "ComfyCoreError": (500, {}),
    "BadRequestError": (400, {}),
    "NotFoundError": (404, {}),
    "DuplicateInProgressError": (409, {}),
    "IdempotencyKeyReusedError": (422, {}),
    "QueueFullError": (429, {"Retry-After": "10"}),
    "WorkflowFormatError": (422, {}),
    "WorkflowConversionError": (422, {}),
    "ConfigurationError": (500, {}),
    "ComfyUIError": (502, {}),
    "ComfyUIUnreachableError": (502, {}),
    "ComfyUITimeoutError": (504, {}),
    "ComfyUIBadResponseError": (502, {}),
    "ComfyUIRejectedError": (400, {}),
    "ComfyUIFileMissingError": (404, {}),
    "StorageError": (503, {}),
    "FetchError": (502, {}),
    "FetchTimeoutError": (504, {}),
    "FetchTooLargeError": (413, {}),
}


@pytest.mark.parametrize(("name", "status", "headers"),
                         [(name, status, headers) for name, (status, headers) in ERROR_TABLE.items()],
                         ids=list(ERROR_TABLE))
def test_each_error_class_maps_to_its_status_and_envelope(
    name: str, status: int, headers: dict[str, str]
) -> None:
    code, body, response = call(raising(getattr(errors, name)("something specific")), event())
    assert code == status
    assert body == {"error": "something specific", "status_code": status}
    assert response["headers"] == {"Content-Type": "application/json", **headers}


def test_the_table_names_every_error_class() -> None:
    classes = {name for name, value in vars(errors).items()
               if isinstance(value, type) and issubclass(value, errors.ComfyCoreError)}
    assert classes == set(ERROR_TABLE), "add each new error class to ERROR_TABLE with its status"


def test_error_extra_fields_are_added_to_the_envelope() -> None:
    exc = errors.ComfyUIRejectedError(
        "Prompt outputs failed validation", extra={"node_errors": {"1": {"errors": []}}, "prompt_id": "p"}
    )
    code, body, _ = call(raising(exc), event())
    assert code == 400
    assert body == {
        "error": "Prompt outputs failed validation",
        "status_code": 400,
        "node_errors": {"1": {"errors": []}},
        "prompt_id": "p",
    }


@pytest.mark.parametrize(
    "exc", [RuntimeError("db password=hunter2"), KeyError("hunter2"), ZeroDivisionError("hunter2")]
)
def test_unexpected_exception_is_a_generic_500(exc: Exception) -> None:
    code, body, response = call(raising(exc), event())
    assert code == 500
    assert body == {"error": "Internal server error", "status_code": 500}
    assert "hunter2" not in response["body"]


# -- results --------------------------------------------------------------------------------
def test_plain_result_is_200() -> None:
    code, body, _ = call(body_echo(), event('{"prompt": "ünïcode"}'))
    assert code == 200
    assert body == {"body": {"prompt": "ünïcode"}}


@pytest.mark.parametrize(("status", "payload"), [(201, {"created": True}), (202, ["a", 1]), (404, {"x": None})])
def test_tuple_result_sets_the_status(status: int, payload: Any) -> None:
    @api_handler
    def handler(request: Request) -> Any:
        return status, payload

    code, body, _ = call(handler, event())
    assert (code, body) == (status, payload)


# -- bodies ---------------------------------------------------------------------------------
@pytest.mark.parametrize("raw", [None, "", "   \n"])
def test_empty_body_is_an_empty_object(raw: Any) -> None:
    code, body, _ = call(body_echo(), event(raw))
    assert (code, body) == (200, {"body": {}})


def test_body_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_BODY_BYTES", "64")
    get_settings.cache_clear()
    small = json.dumps({"prompt": "x" * 40})
    assert call(body_echo(), event(small))[0] == 200
    big = json.dumps({"prompt": "x" * 64})
    code, body, _ = call(body_echo(), event(big))
    assert code == 400
    assert body["status_code"] == 400 and "64" in body["error"]


def test_size_is_counted_in_bytes_not_characters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_BODY_BYTES", "40")
    get_settings.cache_clear()
    text = json.dumps({"p": "é" * 20}, ensure_ascii=False)  # 29 characters, 49 bytes
    assert len(text) <= 40 < len(text.encode("utf-8"))
    assert call(body_echo(), event(text))[0] == 400


@pytest.mark.parametrize("raw", ["{not json", "{'single': 1}", '{"a": 1', "nul\x00"])
def test_body_that_is_not_json(raw: str) -> None:
    code, body, _ = call(body_echo(), event(raw))
    assert code == 400
    assert body == {"error": "Request body is not valid JSON", "status_code": 400}


@pytest.mark.parametrize("raw", ["[1, 2]", '"text"', "42", "null", "true"])
def test_body_that_is_not_an_object(raw: str) -> None:
    code, body, _ = call(body_echo(), event(raw))
    assert code == 400
    assert body == {"error": "Request body must be a JSON object", "status_code": 400}


def test_invalid_utf8_is_a_bad_request() -> None:
    raw = base64.b64encode(b'{"prompt": "\xff\xfe"}').decode()
    code, body, _ = call(body_echo(), event(raw, b64=True))
    assert code == 400
    assert body["status_code"] == 400


def test_lone_surrogate_in_a_text_body_is_a_bad_request() -> None:
    code, body, _ = call(body_echo(), event('{"prompt": "\ud800"}'))
    assert code == 400


def test_base64_body_is_decoded() -> None:
    payload = {"prompt": "a lighthouse at dawn", "seed": 7}
    raw = base64.b64encode(json.dumps(payload).encode()).decode()
    code, body, _ = call(body_echo(), event(raw, b64=True))
    assert (code, body) == (200, {"body": payload})


def test_invalid_base64_body_is_a_bad_request() -> None:
    code, body, _ = call(body_echo(), event("not base64 !!", b64=True))
    assert code == 400
    assert "base64" in body["error"]


def test_request_fields_from_the_event() -> None:
    seen: dict[str, Any] = {}

    @api_handler
    def handler(request: Request) -> Any:
        seen["request"] = request
        return {}

    call(handler, event(None, headers={"X-Api-Key": "k", "Content-Type": "text/plain"},
                        queryStringParameters={"max_items": "5"}, httpMethod="GET", path="/api/history"))
    request = seen["request"]
    assert request.method == "GET" and request.path == "/api/history"
    assert request.headers == {"x-api-key": "k", "content-type": "text/plain"}
    assert request.query == {"max_items": "5"}
    assert request.path_params == {"workflow_name": "x"}


def test_deeply_nested_body_is_a_bad_request() -> None:
    code, body, _ = call(body_echo(), event('{"a": ' + "[" * 100_000))
    assert (code, body["error"]) == (400, "Request body is not valid JSON")
