"""The edge between API Gateway and comfy_core: events in, HTTP responses out.

This is the one place errors become status codes. Unexpected exceptions are logged with
their traceback and answered with a generic 500: their text never reaches a client.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from . import deadline
from .config import get_settings
from .errors import BadRequestError, ComfyCoreError, ComfyUIError, ComfyUIRejectedError
from .observability import capture_lambda_handler, logger, metrics

JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Request:
    """The parts of an API Gateway proxy event a handler needs."""

    method: str
    path: str
    path_params: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    raw_body: bytes = b""
    context: Any = None  # the Lambda context (remaining time), for idempotency records

    @classmethod
    def from_event(cls, event: dict[str, Any], context: Any = None) -> "Request":
        body = event.get("body") or ""
        if event.get("isBase64Encoded"):
            try:
                raw = base64.b64decode(body, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise BadRequestError("Request body is not valid base64") from exc
        else:
            raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else b""
        return cls(
            method=str(event.get("httpMethod") or ""),
            path=str(event.get("path") or ""),
            path_params=dict(event.get("pathParameters") or {}),
            query=dict(event.get("queryStringParameters") or {}),
            headers={k.lower(): v for k, v in (event.get("headers") or {}).items()},
            raw_body=raw,
            context=context,
        )

    def json_object(self, max_bytes: int | None = None) -> dict[str, Any]:
        """The body as a JSON object; an empty body is `{}`."""
        if max_bytes is None:
            max_bytes = get_settings().max_body_bytes
        if len(self.raw_body) > max_bytes:
            raise BadRequestError(f"Request body is larger than {max_bytes} bytes")
        if not self.raw_body.strip():
            return {}
        try:
            # NaN, Infinity and 1e999 are refused: they would come back in answers (ComfyUI
            # echoes inputs in node_errors) as tokens that are not JSON.
            data = json.loads(
                self.raw_body.decode("utf-8"), parse_constant=_not_json, parse_float=_finite_float
            )
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            # RecursionError: deeply nested arrays exhaust the parser's stack.
            raise BadRequestError("Request body is not valid JSON") from exc
        if not isinstance(data, dict):
            raise BadRequestError("Request body must be a JSON object")
        _check_parsed(data)
        return data


# A workflow request is a few levels deep ({node: {inputs: {name: [link]}}}); deeper input
# would only reach recursive code (copying, logging, json.dumps) that can overflow on it.
MAX_JSON_DEPTH = 32


def _not_json(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number out of range")
    return value


def _check_parsed(data: Any) -> None:
    """Refuse bodies nested deeper than MAX_JSON_DEPTH and strings holding lone surrogates
    (a "\\ud800" escape parses, but is not text: it cannot be logged, sent or answered as UTF-8).
    Iterative, so the check itself cannot overflow."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            _check_text(value)
        elif isinstance(value, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise BadRequestError(f"Request body is nested deeper than {MAX_JSON_DEPTH} levels")
            items = value.items() if isinstance(value, dict) else ((None, item) for item in value)
            for key, item in items:
                if key is not None:
                    _check_text(key)
                stack.append((item, depth + 1))


def _check_text(text: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequestError("Request body is not valid JSON: a string holds a lone surrogate") from exc


def json_response(status_code: int, body: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "statusCode": status_code,
        "headers": {**JSON_HEADERS, **(headers or {})},
        "body": dumps(body),
        "isBase64Encoded": False,
    }


def dumps(body: Any) -> str:
    """Strict JSON that is also valid UTF-8, whatever ComfyUI handed us: NaN/Infinity (not
    JSON) become null, and lone surrogates (not UTF-8) are sent as \\u escapes."""
    try:
        text = json.dumps(body, ensure_ascii=False, allow_nan=False, default=str)
    except ValueError:
        text = json.dumps(_finite(body), ensure_ascii=False, allow_nan=False, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(json.loads(text), ensure_ascii=True)
    return text


def _finite(value: Any) -> Any:
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def error_body(exc: Exception) -> dict[str, Any]:
    """The seed's envelope `{"error": ..., "status_code": ...}` of any exception; the text
    of an unexpected one never shows. Shared by HTTP answers and event-driven jobs."""
    if isinstance(exc, ComfyCoreError):
        return {"error": exc.message, "status_code": exc.status_code, **exc.extra}
    return {"error": "Internal server error", "status_code": 500}


def error_response(exc: Exception) -> dict[str, Any]:
    """The seed's envelope `{"error": ..., "status_code": ...}` for every failure."""
    if isinstance(exc, ComfyCoreError):
        status = exc.status_code
        if isinstance(exc, ComfyUIError) and not isinstance(exc, ComfyUIRejectedError):
            metrics.add_metric(name="ComfyUIUnavailable", unit=MetricUnit.Count, value=1)
            logger.warning("ComfyUI trouble", extra={"error": exc.message, "cause": repr(exc.__cause__)})
        elif status >= 500:
            logger.exception("Server-side failure")
        else:
            logger.info("Request refused", extra={"error": exc.message, "status_code": status})
        return json_response(status, error_body(exc), exc.headers)
    logger.exception("Unhandled exception")
    return json_response(500, error_body(exc))


Handler = Callable[[Request], Any]


def api_handler(func: Handler) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """Wrap a thin handler: it takes a `Request` and returns a JSON-able body (200) or a
    `(status_code, body)` or `(status_code, body, headers)` tuple; every exception becomes the error envelope here."""

    @functools.wraps(func)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        try:
            request = Request.from_event(event or {}, context)
            if request.path_params.get("prompt_id"):
                logger.append_keys(prompt_id=request.path_params["prompt_id"])
            with deadline.from_context(context):
                result = func(request)
            # Serialised inside the try: an answer that cannot be encoded is our 500 with
            # the envelope, not a Lambda error that API Gateway turns into a bare 502.
            if isinstance(result, tuple):
                return json_response(*result)  # (status, body) or (status, body, headers)
            return json_response(200, result)
        except Exception as exc:  # noqa: BLE001 - the one place every error is mapped
            return error_response(exc)

    # clear_state: keys appended for one request (prompt_id) must not leak into the next.
    wrapped = logger.inject_lambda_context(
        correlation_id_path="requestContext.requestId", clear_state=True
    )(handler)
    wrapped = metrics.log_metrics(wrapped)
    return capture_lambda_handler(wrapped)

