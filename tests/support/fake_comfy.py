"""A ComfyUI stand-in at the `requests.Session` level for handler tests.

moto and `responses` both patch the requests machinery, so the tiers that use moto inject
this session into the ComfyUI client instead (`use_session`). Its answers are recorded
responses.
"""

from __future__ import annotations

import io
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import urllib3

from comfy_core.comfyui import client as client_module


def use_session(monkeypatch: pytest.MonkeyPatch, session: requests.Session) -> None:
    """Make every ComfyUI client comfy_core builds talk through `session`.

    The client itself is still built on first use, from the settings in force then, and
    rebuilt after a reset of the container state: only its HTTP session is replaced."""
    monkeypatch.setattr(client_module, "_new_session", lambda settings: session)


class FakeComfySession(requests.Session):
    """Routes `(METHOD, path)` to `(status, body)`; body None = empty, str = text,
    anything else = JSON. An exception instance as the answer is raised instead.
    A 200 answer to POST /prompt carries the `prompt_id` the request sent, as ComfyUI's
    does (recorded: prompt_success_client_id_prompt_id), whatever id the routed body holds.
    Every request is recorded in `calls` (method, path, query, json, headers, timeout)."""

    def __init__(self, routes: dict[tuple[str, str], Any] | None = None) -> None:
        super().__init__()
        self.routes: dict[tuple[str, str], Any] = dict(routes or {})
        self.calls: list[dict[str, Any]] = []

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        call = self._record(method, url, kwargs)
        return self._answer(call, url)

    def _record(self, method: str, url: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        parts = urlsplit(url)
        body = kwargs.get("data") or kwargs.get("json")
        if isinstance(body, (str, bytes)):
            body = json.loads(body)
        headers = {**self.headers, **(kwargs.get("headers") or {})}
        query = parse_qs(parts.query, keep_blank_values=True)
        for key, value in (kwargs.get("params") or {}).items():
            query.setdefault(key, []).append(str(value))
        call = {"method": method, "path": parts.path, "query": query,
                "json": body, "headers": headers, "timeout": kwargs.get("timeout")}
        self.calls.append(call)
        return call

    def _answer(self, call: dict[str, Any], url: str) -> requests.Response:
        answer = self.routes.get((call["method"], call["path"]), _idle(call["method"], call["path"]))
        if isinstance(answer, Exception):
            raise answer
        status, payload = answer
        sent = call["json"]
        if (call["method"], call["path"], status) == ("POST", "/prompt", 200) and isinstance(payload, dict) \
                and isinstance(sent, dict) and "prompt_id" in sent:
            payload = {**payload, "prompt_id": sent["prompt_id"]}
        return _response(url, status, payload)

    def paths(self, method: str | None = None) -> list[str]:
        return [c["path"] for c in self.calls if method is None or c["method"] == method]


def _idle(method: str, path: str) -> tuple[int, Any]:
    """What an idle ComfyUI answers where a test set no route: an empty queue, `{}` for a
    prompt it does not know (recorded: queue_empty, history_id_unknown); 404 elsewhere."""
    if method == "GET" and path == "/queue":
        return 200, {"queue_running": [], "queue_pending": []}
    if method == "GET" and path.startswith("/history/"):
        return 200, {}
    return 404, "404: Not Found"


def _response(url: str, status: int, payload: Any) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.url = url
    if payload is None:
        response._content = b""
    elif isinstance(payload, str):
        response._content = payload.encode()
        response.headers["Content-Type"] = "text/plain; charset=utf-8"
    else:
        response._content = json.dumps(payload).encode()
        response.headers["Content-Type"] = "application/json; charset=utf-8"
    # For callers that stream (stream=True reads `raw`, as GET /history is read).
    response.raw = urllib3.HTTPResponse(body=io.BytesIO(response._content), status=status,
                                        preload_content=False, decode_content=False)
    return response


class StreamingComfy(FakeComfySession):
    """FakeComfySession plus what the archiver reads:

    * GET /view streams `files[(type, subfolder, filename)]` through a real urllib3 response
      (404 with an empty body for a file it does not have, as ComfyUI answers);
    * with a `history` dict, GET /history?max_items=N and /history/{id} answer from it as
      ComfyUI does (the newest N; `{}` for an id it does not know); without one, `routes`;
    * `down_after`: connections are refused after that many requests;
    * `short_by[filename]`: bytes missing from that file's body (Content-Length stays whole).
    """

    def __init__(self, history: dict[str, Any] | None = None,
                 files: dict[tuple[str, str, str], bytes] | None = None) -> None:
        super().__init__()
        self.history = history
        self.files: dict[tuple[str, str, str], bytes] = dict(files or {})
        self.down_after: int | None = None
        self.short_by: dict[str, int] = {}

    def _answer(self, call: dict[str, Any], url: str) -> requests.Response:
        if self.down_after is not None and len(self.calls) > self.down_after:
            raise requests.exceptions.ConnectionError("connection refused")
        path, query = call["path"], call["query"]
        if path == "/view":
            return self._view(query, url)
        if self.history is not None and path == "/history":
            items = list(self.history.items())[-int(query["max_items"][0]):]
            return _response(url, 200, dict(items))
        if self.history is not None and path.startswith("/history/"):
            prompt_id = path.removeprefix("/history/")
            found = self.history.get(prompt_id)
            return _response(url, 200, {prompt_id: found} if found else {})
        return super()._answer(call, url)

    def _view(self, query: dict[str, list[str]], url: str) -> requests.Response:
        key = (query["type"][0], query["subfolder"][0], query["filename"][0])
        response = requests.Response()
        response.url = url
        if key not in self.files:
            response.status_code = 404
            response.raw = urllib3.HTTPResponse(body=io.BytesIO(b""), status=404, preload_content=False)
            return response
        body = self.files[key]
        headers = {"Content-Type": "image/png", "Content-Length": str(len(body))}
        sent = body[: len(body) - self.short_by.get(key[2], 0)]
        response.status_code = 200
        response.headers.update(headers)
        response.raw = urllib3.HTTPResponse(
            body=io.BytesIO(sent), headers=headers, status=200, preload_content=False, decode_content=False
        )
        return response

    def views(self) -> list[dict[str, Any]]:
        """The GET /view calls made, in order."""
        return [call for call in self.calls if call["path"] == "/view"]


class UploadingComfy(FakeComfySession):
    """POST /upload/image answered as ComfyUI does (`upload_image_new`: the stored name, the
    subfolder, type input), each multipart body kept in `uploads`."""

    def __init__(self) -> None:
        super().__init__()
        self.uploads: list[bytes] = []

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if urlsplit(url).path == "/upload/image":
            body = kwargs["data"]
            self.uploads.append(body.to_string() if hasattr(body, "to_string") else body)
            name = self.uploads[-1].split(b'filename="', 1)[1].split(b'"', 1)[0].decode()
            self.routes[("POST", "/upload/image")] = (200, {"name": name, "subfolder": "", "type": "input"})
            kwargs = {**kwargs, "data": None}
        return super().request(method, url, **kwargs)
