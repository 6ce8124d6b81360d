"""`ComfyAPI`: one typed method per route of the API, on one `requests.Session`.

Every request has explicit timeouts; 429 and 503 are retried honouring Retry-After, and
502/504/409 and lost connections too when repeating is safe (GET, DELETE, and a run: each
run carries an Idempotency-Key, reused by its retries, so it never runs twice).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, urlsplit

import requests

from . import __version__
from .errors import APIConnectionError, ComfyAPIError, TaskFailedError, error_for
from .inputs import InputFile
from .models import Cancelled, HistoryItem, HistoryPage, Queue, Submitted, TaskStatus, Upload
from .retry import RetryPolicy, parse_retry_after

# (connect, read) seconds. Connect: a little over the 3 s TCP retransmission window, so one
# lost SYN is retried before we give up. Read: API Gateway ends every request at 29 s, so 30 s
# outlasts the slowest answer the API can give.
DEFAULT_TIMEOUT = (3.05, 30.0)
# Downloads and uploads move whole files: the read timeout is per chunk, not for the file.
TRANSFER_TIMEOUT = (3.05, 60.0)
# The live watcher writes progress at most once a second: polling faster shows nothing new.
DEFAULT_POLL_SECONDS = 1.0
# How long a finished prompt may stay `copying` before wait() gives up on its download links.
DEFAULT_ARCHIVE_TIMEOUT = 120.0

Sleep = Callable[[float], None]


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


class ComfyAPI:
    """A client of one deployment.

    >>> api = ComfyAPI("https://abc.execute-api.us-east-1.amazonaws.com/dev", api_key="...")
    >>> submitted = api.run("text_label", {"prompt": "a lighthouse at dawn"})
    >>> final = api.wait(submitted.prompt_id)

    `sleep` and `clock` are injectable so tests wait for nothing.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        retry: RetryPolicy = RetryPolicy(),
        sleep: Sleep = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retry = retry
        self.sleep = sleep
        self.clock = clock
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = f"comfy-api-client/{__version__} {requests.utils.default_user_agent()}"
        if api_key:
            self.session.headers["x-api-key"] = api_key

    # -- transport -------------------------------------------------------------------------
    def _url(self, *parts: str) -> str:
        return self.base_url + "/api/" + "/".join(quote(part, safe="") for part in parts)

    def send(self, method: str, url: str, *, idempotent: bool, timeout: tuple[float, float] | None = None,
             **kwargs: Any) -> requests.Response:
        """One request with the retry policy; a 2xx answer or the error of its kind.

        `kwargs` go to requests (json, params, headers, data, stream). A body that is a file
        is rewound before each retry."""
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            body = kwargs.get("data")
            if attempt > 1 and body is not None and hasattr(body, "seek"):
                body.seek(0)
            try:
                response = self.session.request(method, url, timeout=timeout or self.timeout, **kwargs)
            except requests.RequestException as exc:
                error: ComfyAPIError = APIConnectionError(f"cannot reach {_origin(url)}: {_reason(exc)}")
                error.__cause__ = exc
                status_code, retry_after = None, None
            else:
                if response.status_code < 400:
                    return response
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                error = error_for(response.status_code, _json_or_none(response), response.reason or "", retry_after)
                status_code = response.status_code
                response.close()
            if attempt >= self.retry.max_attempts or not self.retry.should_retry(status_code, idempotent=idempotent):
                raise error
            delay = self.retry.delay(attempt, retry_after)
            if waited + delay > self.retry.max_total_wait:
                raise error
            self.sleep(delay)
            waited += delay

    def _json(self, method: str, *parts: str, idempotent: bool = True,
              **kwargs: Any) -> tuple[dict[str, Any], requests.Response]:
        url = self._url(*parts)
        response = self.send(method, url, idempotent=idempotent, **kwargs)
        body = _json_or_none(response)
        if not isinstance(body, dict):
            raise ComfyAPIError(f"{method} {url} answered {response.status_code} without a JSON object",
                                status_code=response.status_code)
        return body, response

    # -- routes ----------------------------------------------------------------------------
    def workflows(self) -> list[str]:
        """GET /api/workflows: the workflow names, sorted."""
        body, _ = self._json("GET", "workflows")
        return [str(name) for name in body.get("workflows") or []]

    def run(self, workflow: str, body: dict[str, Any] | None = None, *,
            idempotency_key: str | None = None) -> Submitted:
        """POST /api/workflow/{workflow}. Without a key one is made up for this call, so its
        retries are recognised by the API; pass your own to make a re-run return the first
        answer instead of running the workflow again."""
        key = idempotency_key or new_idempotency_key()
        answer, _ = self._json("POST", "workflow", workflow, json=body or {}, idempotent=True,
                               headers={"Idempotency-Key": key})
        return Submitted.from_json(answer)

    def create_upload(self, filename: str, content_type: str, size: int) -> Upload:
        """POST /api/uploads: a presigned PUT for one input image. Only 429/503 are retried
        (each call creates a new upload id)."""
        answer, _ = self._json("POST", "uploads", idempotent=False,
                               json={"filename": filename, "content_type": content_type, "size": size})
        return Upload.from_json(answer)

    def upload(self, source: str | Path) -> str:
        """Send a local image through the upload flow; the `upload_id` to name it by in a
        run (`{"image": {"upload_id": ...}}`)."""
        item = InputFile.open(source)
        grant = self.create_upload(item.upload_name, item.content_type, item.size)
        with open(item.path, "rb") as handle:
            self._put(grant, handle)
        return grant.upload_id

    def _put(self, grant: Upload, handle: BinaryIO) -> None:
        # A PUT of the same bytes to the same key is idempotent: safe to retry. No x-api-key:
        # the URL is presigned for S3, which must not see the API's key.
        headers = {**grant.headers}
        response = self.send(grant.method, grant.upload_url, idempotent=True, data=handle,
                             headers=headers, timeout=TRANSFER_TIMEOUT, auth=without_api_key)
        response.close()

    def status(self, prompt_id: str) -> TaskStatus:
        """GET /api/task_status/{prompt_id}."""
        answer, response = self._json("GET", "task_status", prompt_id)
        return TaskStatus.from_json(answer, parse_retry_after(response.headers.get("Retry-After")))

    def images(self, prompt_id: str) -> dict[str, Any]:
        """GET /api/image/{prompt_id} (404 when the prompt has no images)."""
        answer, _ = self._json("GET", "image", prompt_id)
        return answer

    def cancel(self, prompt_id: str) -> Cancelled:
        """DELETE /api/task/{prompt_id}: dequeue, or interrupt if it is running."""
        answer, _ = self._json("DELETE", "task", prompt_id)
        return Cancelled.from_json(answer)

    def history(self, max_items: int | None = None, offset: int | None = None) -> HistoryPage:
        """GET /api/history: the newest `max_items` entries, or `max_items` from `offset`."""
        params = {name: value for name, value in (("max_items", max_items), ("offset", offset)) if value is not None}
        answer, response = self._json("GET", "history", params=params)
        items = tuple(HistoryItem.from_json(str(pid), entry) for pid, entry in answer.items() if isinstance(entry, dict))
        next_offset = response.headers.get("X-Next-Offset")
        return HistoryPage(items, response.headers.get("X-Truncated") == "true",
                           int(next_offset) if next_offset and next_offset.isdigit() else None, raw=answer)

    def queue(self) -> Queue:
        """GET /api/queue."""
        answer, _ = self._json("GET", "queue")
        return Queue.from_json(answer)

    # -- following a prompt ----------------------------------------------------------------
    def wait(
        self,
        prompt_id: str,
        *,
        on_update: Callable[[TaskStatus], None] | None = None,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        archive_timeout: float = DEFAULT_ARCHIVE_TIMEOUT,
    ) -> TaskStatus:
        """Poll task_status until the prompt is finished and its files are in S3 (or
        `archive_timeout` seconds of `copying` have passed). Calls `on_update` with every
        answer. Returns the last answer whatever it says; see `raise_for_outcome`."""
        copying_since: float | None = None
        while True:
            current = self.status(prompt_id)
            if on_update is not None:
                on_update(current)
            if current.finished and not current.copying:
                return current
            if current.copying:
                now = self.clock()
                copying_since = now if copying_since is None else copying_since
                if now - copying_since >= archive_timeout:
                    return current
                delay = current.retry_after if current.retry_after is not None else poll_seconds
                self.sleep(min(delay, self.retry.max_delay))
            else:
                self.sleep(poll_seconds)


def raise_for_outcome(final: TaskStatus) -> None:
    """TaskFailedError unless the prompt completed."""
    if final.status == "completed":
        return
    if final.status == "error":
        reason = final.failure.describe() if final.failure else final.message
        raise TaskFailedError(f"prompt {final.prompt_id} failed: {reason}", details=final.raw)
    if final.status == "cancelled":
        raise TaskFailedError(f"prompt {final.prompt_id} was cancelled", details=final.raw)
    raise TaskFailedError(f"prompt {final.prompt_id}: {final.message or final.status}", details=final.raw)


class _WithoutApiKey(requests.auth.AuthBase):
    """Drops the session's x-api-key from one request: presigned S3 URLs carry their own
    signature, and S3 has no business seeing the API's key."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers.pop("x-api-key", None)
        return request


without_api_key = _WithoutApiKey()


def _json_or_none(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _origin(url: str) -> str:
    parsed = urlsplit(url)
    return f"{parsed.scheme}://{parsed.netloc}" if parsed.netloc else url


def _reason(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        text = str(exc)
        for known, said in (("Connection refused", "connection refused"),
                            ("Name or service not known", "unknown host"),
                            ("nodename nor servname", "unknown host"),
                            ("Temporary failure in name resolution", "unknown host"),
                            ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted"),
                            ("Connection reset", "connection reset"),
                            ("RemoteDisconnected", "connection closed by the server")):
            if known in text:
                return said
        return "connection failed"
    return type(exc).__name__
