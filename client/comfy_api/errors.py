"""One exception per kind of failure, all under `ComfyAPIError`.

The API answers every error with the envelope `{"error": "<message>", "status_code": N}`
(API Gateway's own refusals too); `error_for` turns such an answer into the exception of
its kind, so callers catch `NotFoundError` rather than compare numbers.
"""

from __future__ import annotations

from typing import Any


class ComfyAPIError(Exception):
    """Base of every error this package raises.

    `status_code` is the HTTP status (None when no answer came back), `message` the
    envelope's `error` text, `details` the whole envelope (some errors add fields:
    `node_errors`, `prompt_id`, `node_id`...), `retry_after` the seconds the API asked to wait.
    """

    status_code: int | None = None

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        details: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        self.details = dict(details or {})
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.status_code} {self.message}" if self.status_code else self.message


class BadRequestError(ComfyAPIError):
    """400: the request is wrong (bad name, body or parameter, or ComfyUI refused the workflow)."""

    status_code = 400


class AuthError(ComfyAPIError):
    """401/403: a missing or wrong API key."""

    status_code = 403


class NotFoundError(ComfyAPIError):
    """404: no such workflow, prompt, history entry or images (or route)."""

    status_code = 404


class ConflictError(ComfyAPIError):
    """409: a request with the same Idempotency-Key is still being submitted."""

    status_code = 409


class TooLargeError(ComfyAPIError):
    """413: an input image or the body is over the deployment's limit."""

    status_code = 413


class UnsupportedMediaError(ComfyAPIError):
    """415: an input is not a PNG, JPEG, WebP or GIF."""

    status_code = 415


class UnprocessableError(ComfyAPIError):
    """422: the stored workflow cannot be run, or the Idempotency-Key was used for another request."""

    status_code = 422


class RateLimitedError(ComfyAPIError):
    """429: ComfyUI's queue is full (MaxQueueDepth) or API Gateway throttled the request."""

    status_code = 429


class ServerError(ComfyAPIError):
    """500: an unexpected failure inside the API (details only in its logs)."""

    status_code = 500


class ComfyUIUnavailableError(ComfyAPIError):
    """502: the API could not reach ComfyUI, or ComfyUI answered with an error."""

    status_code = 502


class StorageUnavailableError(ComfyAPIError):
    """503: S3 (workflow store or image archive) failed."""

    status_code = 503


class ComfyUITimeoutError(ComfyAPIError):
    """504: ComfyUI did not answer in time. After a run, `details["prompt_id"]` may still run."""

    status_code = 504


class APIConnectionError(ComfyAPIError):
    """No answer at all: DNS, refused connection, TLS, or a timeout on our side."""


class DownloadError(ComfyAPIError):
    """An output could not be downloaded whole (failed request, wrong size, no link)."""


class TaskFailedError(ComfyAPIError):
    """A waited-for prompt ended in `error`, `cancelled` or `not_found`."""


class InputFileError(ComfyAPIError):
    """A local file given as an input image cannot be read, or is no PNG, JPEG, WebP or GIF."""


class ConfigError(ComfyAPIError):
    """No usable API URL or key: nothing given, or the CloudFormation stack could not be read."""


_BY_STATUS: dict[int, type[ComfyAPIError]] = {
    400: BadRequestError,
    401: AuthError,
    403: AuthError,
    404: NotFoundError,
    409: ConflictError,
    413: TooLargeError,
    415: UnsupportedMediaError,
    422: UnprocessableError,
    429: RateLimitedError,
    500: ServerError,
    502: ComfyUIUnavailableError,
    503: StorageUnavailableError,
    504: ComfyUITimeoutError,
}


def error_class(status_code: int) -> type[ComfyAPIError]:
    return _BY_STATUS.get(status_code, ComfyAPIError)


def envelope_message(body: Any, reason: str) -> str:
    """The human message of an error answer: the envelope's `error`, API Gateway's bare
    `message`, else the HTTP reason phrase (an HTML page or a proxy's text is not shown)."""
    if isinstance(body, dict):
        for field in ("error", "message"):
            value = body.get(field)
            if isinstance(value, str) and value.strip():
                return " ".join(value.split())
    return reason or "error"


def error_for(status_code: int, body: Any, reason: str = "", retry_after: float | None = None) -> ComfyAPIError:
    """The exception for one error answer."""
    cls = error_class(status_code)
    return cls(
        envelope_message(body, reason),
        status_code=status_code,
        details=body if isinstance(body, dict) else None,
        retry_after=retry_after,
    )
