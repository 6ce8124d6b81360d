"""HTTP client for one ComfyUI server.

Quirks it relies on are recorded in tests/fixtures/comfyui/NOTES.md, each covered by a test.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .. import deadline
from ..config import Settings
from ..errors import (
    ComfyUIBadResponseError,
    ComfyUIError,
    ComfyUIFileMissingError,
    ComfyUIRejectedError,
    ComfyUITimeoutError,
    ComfyUIUnreachableError,
)

USER_AGENT = "comfy-serverless-api"
# Below this many seconds before the deadline a call is not started: it could not finish.
MIN_CALL_SECONDS = 0.5
# The longest one attempt of the current call may take (connect + read timeout), for the
# retry policy to tell whether another attempt still fits before the deadline.
_attempt_seconds: ContextVar[float] = ContextVar("comfy_core_attempt_seconds", default=0.0)


def redact_url(url: str) -> str:
    """The URL without user:password, safe for logs and responses."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal: hostname drops the brackets the URL needs
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


class IdempotentOnlyRetry(Retry):
    """urllib3 applies `allowed_methods` to read and status retries only and retries
    connection errors for every verb. POST /prompt must go out at most once, whatever
    failed, so any method outside `allowed_methods` gets no retry at all."""

    def increment(self, method=None, url=None, *args, **kwargs):  # type: ignore[no-untyped-def]
        allowed = self.allowed_methods
        if method and allowed and method.upper() not in allowed:
            return Retry(total=0, raise_on_status=False).increment(method, url, *args, **kwargs)
        retry = super().increment(method, url, *args, **kwargs)
        left = deadline.remaining()
        if left is not None and left < _attempt_seconds.get() + retry.get_backoff_time():
            # Another attempt could outlive the invocation: give up now, while there is
            # still time to answer with our own 502/504.
            return Retry(total=0, raise_on_status=False).increment(method, url, *args, **kwargs)
        return retry


def _new_session(settings: Settings) -> requests.Session:
    session = requests.Session()
    # Only GETs are retried: re-sending POST /prompt could queue the same job twice.
    # Read timeouts are not retried either: a hung ComfyUI would multiply the wait past
    # API Gateway's 29 s. Connect errors and 502/503/504 from a proxy in front are.
    retry = IdempotentOnlyRetry(
        total=settings.get_retries,
        connect=settings.get_retries,
        read=0,
        status=settings.get_retries,
        backoff_factor=0.2,
        status_forcelist=(502, 503, 504),
        allowed_methods=frozenset({"GET", "HEAD"}),
        raise_on_status=False,
    )
    adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=4)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    # ComfyUI answers 403 to an Origin that does not match its host; requests sends none,
    # and we never add one.
    session.headers["User-Agent"] = USER_AGENT
    return session


class ComfyUIClient:
    """Typed access to the ComfyUI endpoints the API uses."""

    def __init__(self, settings: Settings, session: requests.Session | None = None,
                 backend: str = "default") -> None:
        self.settings = settings
        self.base_url = settings.comfyui_base_url
        self.backend = backend  # the fleet's name for this server (fleet.backends)
        self.session = session or _new_session(settings)
        self.request_count = 0  # round trips made; tests and bench assert on it

    # -- plumbing -------------------------------------------------------------------
    def _auth_headers(self) -> dict[str, str]:
        if not self.settings.comfyui_auth_parameter:
            return {}
        from ..secrets import ssm_secret

        return {self.settings.comfyui_auth_header: ssm_secret(self.settings.comfyui_auth_parameter)}

    def _timeouts(self) -> tuple[float, float]:
        """(connect, read) for the next call: the configured ones, cut to the time left
        before the invocation's deadline. No time left is our 504, not a call."""
        connect, read = self.settings.connect_timeout, self.settings.read_timeout
        left = deadline.remaining()
        if left is not None:
            if left < MIN_CALL_SECONDS:
                raise ComfyUITimeoutError("ComfyUI did not answer in time")
            connect, read = min(connect, left), min(read, left)
        return connect, read

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = f"{self.base_url}{path}"
        timeouts = self._timeouts()
        self.request_count += 1
        auth = self._auth_headers()
        if auth:
            kwargs["headers"] = {**(kwargs.get("headers") or {}), **auth}
        token = _attempt_seconds.set(sum(timeouts))
        try:
            return self.session.request(method, url, timeout=timeouts, **kwargs)
        except requests.exceptions.ConnectTimeout as exc:
            error = ComfyUIUnreachableError("ComfyUI is unreachable (connect timed out)")
            error.never_connected = True
            raise error from exc
        except requests.exceptions.Timeout as exc:
            raise ComfyUITimeoutError("ComfyUI did not answer in time") from exc
        except requests.exceptions.RetryError as exc:
            raise ComfyUIBadResponseError("ComfyUI kept answering with a server error") from exc
        except requests.exceptions.ConnectionError as exc:
            if _is_read_timeout(exc):
                raise ComfyUITimeoutError("ComfyUI did not answer in time") from exc
            error = ComfyUIUnreachableError("ComfyUI is unreachable")
            error.never_connected = _never_connected(exc)
            raise error from exc
        except requests.exceptions.RequestException as exc:
            raise ComfyUIBadResponseError("Request to ComfyUI failed") from exc
        finally:
            _attempt_seconds.reset(token)

    @staticmethod
    def _json(response: requests.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise ComfyUIBadResponseError(
                f"ComfyUI answered {response.status_code} without valid JSON"
            ) from exc

    def _expect_ok(self, response: requests.Response) -> None:
        if response.status_code >= 400:
            # ComfyUI's 5xx bodies are plain-text tracebacks: never pass them on.
            raise ComfyUIBadResponseError(f"ComfyUI answered HTTP {response.status_code}")

    def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        response = self._request("GET", path, params=params)
        self._expect_ok(response)
        return self._json(response)

    def post_empty(self, path: str, body: dict[str, Any] | None = None) -> None:
        """POST to the endpoints that answer 200 with an empty body (/queue, /interrupt)."""
        response = self._request("POST", path, json=body if body is not None else {})
        self._expect_ok(response)

    # -- endpoints ------------------------------------------------------------------
    def queue_remaining(self) -> int:
        """Prompts ComfyUI holds (running + pending), from the small GET /prompt answer."""
        data = self.get_json("/prompt")
        try:
            return int(data["exec_info"]["queue_remaining"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ComfyUIBadResponseError("ComfyUI queue status has an unexpected shape") from exc

    def get_object(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """GET an endpoint whose answer is a JSON object; anything else (a proxy's `[]`,
        `null`...) is a broken answer, not something to pass on as our 200."""
        data = self.get_json(path, params)
        if not isinstance(data, dict):
            raise ComfyUIBadResponseError(f"ComfyUI {path} answer is not a JSON object")
        return data

    def system_stats(self) -> dict[str, Any]:
        return self.get_object("/system_stats")

    def queue(self) -> dict[str, Any]:
        return self.get_object("/queue")

    def object_info(self) -> dict[str, Any]:
        """GET /object_info: every node class this backend has, with its inputs, which the
        UI-format converter needs. About 0.5 MB for a bare ComfyUI and several MB with many
        custom nodes, so callers cache it (workflows.ui keeps it a few minutes)."""
        return self.get_object("/object_info")

    def history_items(self, max_items: int, offset: int | None = None) -> Iterator[tuple[str, Any]]:
        """(prompt_id, entry) of GET /history, oldest first, parsed while they arrive: a
        history of many megabytes never sits in memory whole, only one entry at a time.
        ComfyUI's `offset` counts from the oldest entry; without it, the newest `max_items`."""
        import ijson  # only the functions that read whole histories pay for it

        params: dict[str, Any] = {"max_items": max_items}
        if offset is not None:
            params["offset"] = offset
        response = self._request("GET", "/history", params=params, stream=True)
        try:
            self._expect_ok(response)
            response.raw.decode_content = True
            body = _ObjectStream(response.raw)
            yield from ijson.kvitems(body, "", use_float=True)
        except ijson.JSONError as exc:
            raise ComfyUIBadResponseError("ComfyUI history is not valid JSON") from exc
        except urllib3.exceptions.ReadTimeoutError as exc:
            raise ComfyUITimeoutError("ComfyUI did not answer in time") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ComfyUIBadResponseError("ComfyUI history broke off") from exc
        finally:
            response.close()

    def history_entry(self, prompt_id: str) -> dict[str, Any] | None:
        """The finished prompt's entry, or None: ComfyUI answers `{}` for unknown,
        pending and running prompts alike."""
        data = self.get_json(f"/history/{prompt_id}")
        if not isinstance(data, dict):
            raise ComfyUIBadResponseError("ComfyUI history is not a JSON object")
        entry = data.get(prompt_id)
        return entry if isinstance(entry, dict) else None

    def submit_prompt(
        self,
        workflow: dict[str, Any],
        client_id: str,
        prompt_id: str | None = None,
        extra_data: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """POST /prompt once (never retried). Our own UUID is sent as prompt_id so the
        id is known even if the answer is lost. `extra_data` is kept by ComfyUI in the
        history entry (item[3]), which is how later sweeps learn a prompt's job."""
        prompt_id = prompt_id or str(uuid.uuid4())
        body: dict[str, Any] = {"prompt": workflow, "client_id": client_id, "prompt_id": prompt_id}
        if extra_data:
            body["extra_data"] = extra_data
        try:
            return self._post_prompt(body, prompt_id)
        except ComfyUIError as exc:
            # A timeout or a broken answer does not mean ComfyUI dropped the prompt: it may
            # be queued. The id is ours, so the caller can follow it (and a retry with the
            # same idempotency key finds it instead of submitting it again).
            exc.extra.setdefault("prompt_id", prompt_id)
            if isinstance(exc, ComfyUITimeoutError):
                exc.message = (
                    "ComfyUI did not answer in time; the prompt may still run: follow its "
                    "prompt_id, or retry with the same Idempotency-Key (never submitted twice)"
                )
                exc.args = (exc.message,)
            raise

    def _post_prompt(self, body: dict[str, Any], prompt_id: str) -> dict[str, Any]:
        response = self._request(
            "POST",
            "/prompt",
            data=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        if response.status_code == 400:
            data = self._json(response)
            error = data.get("error") if isinstance(data, dict) else None
            message = "ComfyUI rejected the workflow"
            if isinstance(error, dict) and isinstance(error.get("message"), str):
                message = error["message"]
            elif isinstance(error, str):
                message = error
            raise ComfyUIRejectedError(
                message,
                extra={
                    "comfyui_error": error,
                    "node_errors": (data.get("node_errors") or {}) if isinstance(data, dict) else {},
                    "prompt_id": prompt_id,
                },
            )
        self._expect_ok(response)
        data = self._json(response)
        if not isinstance(data, dict) or not isinstance(data.get("prompt_id"), str):
            raise ComfyUIBadResponseError("ComfyUI accepted the prompt but sent no prompt_id")
        return data

    def upload_image(self, name: str, file: Any, content_type: str) -> str:
        """POST /upload/image (type input), streamed from `file`; the value a LoadImage
        `image` input takes for it ("name", or "subfolder/name"). ComfyUI keeps one file for
        one name and the same bytes, and renames a different file that would collide, so
        the answer's name, not ours, is used. Not retried (the body is a stream)."""
        from requests_toolbelt import MultipartEncoder  # streams the body: flat memory

        encoder = MultipartEncoder(fields={"image": (name, file, content_type), "type": "input"})
        response = self._request(
            "POST", "/upload/image", data=encoder, headers={"Content-Type": encoder.content_type}
        )
        self._expect_ok(response)
        data = self._json(response)
        stored = data.get("name") if isinstance(data, dict) else None
        if not isinstance(stored, str) or not stored:
            raise ComfyUIBadResponseError("ComfyUI accepted the upload but sent no file name")
        subfolder = data.get("subfolder") or ""
        return f"{subfolder}/{stored}" if subfolder else stored

    def delete_pending(self, prompt_id: str) -> None:
        self.post_empty("/queue", {"delete": [prompt_id]})

    def interrupt(self, prompt_id: str) -> None:
        # Targeted: ComfyUI only interrupts if this prompt is the one running.
        self.post_empty("/interrupt", {"prompt_id": prompt_id})

    def public_url(self, path: str) -> str | None:
        """`path` under COMFYUI_PUBLIC_URL (credentials removed); None without one: the
        base URL the functions use is an internal address, never shown to clients."""
        if not self.settings.comfyui_public_url:
            return None
        return f"{redact_url(self.settings.comfyui_public_url)}{path}"

    def view_url(self, image: dict[str, Any]) -> str | None:
        """The public /view URL clients can fetch an image from, or None (see public_url)."""
        query = urlencode(
            {
                "filename": image.get("filename", ""),
                "subfolder": image.get("subfolder", ""),
                "type": image.get("type", ""),
            }
        )
        return self.public_url(f"/view?{query}")

    def open_view(self, file: dict[str, Any]) -> requests.Response:
        """GET /view for one output file, streamed: the caller reads `response.raw` in
        chunks and must close the response. 404 (file gone, e.g. temp wiped by a restart)
        raises ComfyUIFileMissingError; any other error status ComfyUIBadResponseError."""
        params = {
            "filename": file.get("filename", ""),
            "subfolder": file.get("subfolder", ""),
            "type": file.get("type", ""),
        }
        # identity: the bytes read from `raw` must be the file itself and match Content-Length.
        response = self._request(
            "GET", "/view", params=params, stream=True, headers={"Accept-Encoding": "identity"}
        )
        if response.status_code == 404:
            response.close()
            raise ComfyUIFileMissingError(
                f"ComfyUI has no file {params['filename']!r} ({params['type']})",
                extra={"file": params},
            )
        if response.status_code >= 400:
            response.close()
        self._expect_ok(response)
        return response


class _ObjectStream:
    """A streamed body that must hold a JSON object: anything else (a proxy's `[]`, `null`)
    is refused at the first bytes instead of read as an empty history."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        head = raw.read(64 * 1024)
        if not head.lstrip()[:1] == b"{":
            raise ComfyUIBadResponseError("ComfyUI history is not a JSON object")
        self._head: bytes | None = head

    def read(self, size: int = -1) -> bytes:
        if size == 0:  # ijson asks for nothing first, to learn bytes from str
            return b""
        if self._head is not None:
            head, self._head = self._head, None
            return head
        return self._raw.read(size)


def _never_connected(exc: requests.exceptions.ConnectionError) -> bool:
    """True when no connection was made (refused, DNS, connect timeout): nothing was sent,
    so a fleet may send the same request to another backend. A connection reset after
    sending is not one: the backend may have the prompt."""
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)
    return isinstance(reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError,
                               urllib3.exceptions.NameResolutionError))


def _is_read_timeout(exc: requests.exceptions.ConnectionError) -> bool:
    """A GET that timed out reading comes back as ConnectionError: with a Retry object urllib3
    wraps the ReadTimeoutError in MaxRetryError, which requests does not map to Timeout."""
    reason = exc.args[0] if exc.args else None
    return isinstance(getattr(reason, "reason", reason), urllib3.exceptions.ReadTimeoutError)


def get_client() -> ComfyUIClient:
    """The first backend's client (the only one without a fleet): one pooled Session per
    backend per warm container, kept by the fleet."""
    from ..fleet.pool import get_fleet

    return get_fleet().default_client()
