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

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> "Request":
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
            data = json.loads(self.raw_body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            # RecursionError: deeply nested arrays exhaust the parser's stack.
            raise BadRequestError("Request body is not valid JSON") from exc
        if not isinstance(data, dict):
            raise BadRequestError("Request body must be a JSON object")
        return data


def json_response(status_code: int, body: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "statusCode": status_code,
        "headers": {**JSON_HEADERS, **(headers or {})},
        "body": json.dumps(body, ensure_ascii=False, default=str),
        "isBase64Encoded": False,
    }


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
        body = {"error": exc.message, "status_code": status, **exc.extra}
        return json_response(status, body, exc.headers)
    logger.exception("Unhandled exception")
    return json_response(500, {"error": "Internal server error", "status_code": 500})


Handler = Callable[[Request], Any]


def api_handler(func: Handler) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """Wrap a thin handler: it takes a `Request` and returns a JSON-able body (200) or a
    `(status_code, body)` tuple; every exception becomes the error envelope here."""

    @functools.wraps(func)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        try:
            request = Request.from_event(event or {})
            if request.path_params.get("prompt_id"):
                logger.append_keys(prompt_id=request.path_params["prompt_id"])
            result = func(request)
        except Exception as exc:  # noqa: BLE001 - the one place every error is mapped
            return error_response(exc)
        if isinstance(result, tuple):
            return json_response(result[0], result[1])
        return json_response(200, result)

    # clear_state: keys appended for one request (prompt_id) must not leak into the next.
    wrapped = logger.inject_lambda_context(
        correlation_id_path="requestContext.requestId", clear_state=True
    )(handler)
    wrapped = metrics.log_metrics(wrapped)
    return capture_lambda_handler(wrapped)

