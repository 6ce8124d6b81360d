"""One error tree. `api.error_response` is the only place these become HTTP."""

from __future__ import annotations

from typing import Any


class ComfyCoreError(Exception):
    """Base of every error this library raises on purpose.

    `message` is safe to show a client; `extra` holds additional JSON fields for the body.
    """

    status_code = 500
    # Seconds a client should wait before trying again, sent as Retry-After; None: no header.
    retry_after_seconds: int | None = None

    @property
    def headers(self) -> dict[str, str]:
        """Extra HTTP headers the answer needs (Retry-After...)."""
        return {} if self.retry_after_seconds is None else {"Retry-After": str(self.retry_after_seconds)}

    def __init__(self, message: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra or {}


class BadRequestError(ComfyCoreError):
    status_code = 400


class NotFoundError(ComfyCoreError):
    status_code = 404


class DuplicateInProgressError(ComfyCoreError):
    """The same job (idempotency key) is running right now: ask again shortly, and the
    first run's answer comes back."""

    status_code = 409


class IdempotencyKeyReusedError(ComfyCoreError):
    """The idempotency key was used before for a different request."""

    status_code = 422


class QueueFullError(ComfyCoreError):
    """ComfyUI already holds MAX_QUEUE_DEPTH prompts: come back later (Retry-After)."""

    status_code = 429
    retry_after_seconds = 10


class WorkflowFormatError(ComfyCoreError):
    """The stored workflow cannot be run as is (UI-format export, not a JSON object...)."""

    status_code = 422


class WorkflowConversionError(WorkflowFormatError):
    """A UI-format workflow the converter cannot turn into a prompt; names the node and why."""

    def __init__(
        self,
        message: str,
        *,
        node_id: str | None = None,
        node_type: str | None = None,
        reason: str | None = None,
    ) -> None:
        extra: dict[str, Any] = {}
        if node_id is not None:
            extra = {"node_id": node_id, "node_type": node_type, "reason": reason}
        super().__init__(message, extra=extra)


class ConfigurationError(ComfyCoreError):
    """The deployment is missing a setting; the operator, not the client, must act."""

    status_code = 500


class ComfyUIError(ComfyCoreError):
    """ComfyUI misbehaved or could not be reached."""

    status_code = 502


class ComfyUIUnreachableError(ComfyUIError):
    status_code = 502
    # Set by the client: no connection was made, so nothing reached ComfyUI.
    never_connected = False


class ComfyUITimeoutError(ComfyUIError):
    status_code = 504


class ComfyUIBadResponseError(ComfyUIError):
    """ComfyUI answered, but not with what its API promises (5xx, plain text, bad JSON)."""

    status_code = 502


class ComfyUIRejectedError(ComfyUIError):
    """ComfyUI validated the prompt and refused it (its own 400): the client's to fix."""

    status_code = 400


class StorageError(ComfyCoreError):
    """S3 failed for a reason that is not the client's."""

    status_code = 503


class ComfyUIFileMissingError(ComfyUIError):
    """ComfyUI answered 404 for a file it listed: gone for good (temp folder wiped on restart)."""

    status_code = 404


class FetchError(ComfyCoreError):
    """A host a client named (a webhook receiver, an image URL) could not be reached, or
    answered with something that is not HTTP. The host is named; the cause is logged only."""

    status_code = 502


class FetchTimeoutError(FetchError):
    """The host did not finish within the request's total deadline."""

    status_code = 504


class FetchTooLargeError(FetchError):
    """The host sent (or announced) more bytes than the caller accepts."""

    status_code = 413
