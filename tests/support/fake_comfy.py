"""A ComfyUI stand-in at the `requests.Session` level for handler tests.

moto and `responses` both patch the requests machinery, so the functional tier injects
this session into the ComfyUI client instead. Its answers are recorded responses.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
import urllib3

RECORDINGS = Path(__file__).resolve().parent.parent / "fixtures" / "comfyui"


def recording(name: str) -> Any:
    return json.loads((RECORDINGS / f"{name}.json").read_text())


class FakeComfySession(requests.Session):
    """Routes `(METHOD, path)` to `(status, body)`; body None = empty, str = text,
    anything else = JSON. An exception instance as the answer is raised instead."""

    def __init__(self, routes: dict[tuple[str, str], Any] | None = None) -> None:
        super().__init__()
        self.routes: dict[tuple[str, str], Any] = dict(routes or {})
        self.calls: list[dict[str, Any]] = []

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        parts = urlsplit(url)
        body = kwargs.get("data") or kwargs.get("json")
        if isinstance(body, (str, bytes)):
            body = json.loads(body)
        headers = {**self.headers, **(kwargs.get("headers") or {})}
        query = parse_qs(parts.query)
        for key, value in (kwargs.get("params") or {}).items():
            query.setdefault(key, []).append(str(value))
        self.calls.append({"method": method, "path": parts.path, "query": query,
                           "json": body, "headers": headers, "timeout": kwargs.get("timeout")})
        answer = self.routes.get((method, parts.path), (404, "404: Not Found"))
        if isinstance(answer, Exception):
            raise answer
        status, payload = answer
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
        return response

    def paths(self, method: str | None = None) -> list[str]:
        return [c["path"] for c in self.calls if method is None or c["method"] == method]


class StreamingComfy(FakeComfySession):
    """FakeComfySession plus GET /view streaming files by (type, subfolder, filename)."""

    def __init__(self) -> None:
        super().__init__()
        self.files: dict[tuple[str, str, str], bytes] = {}

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if not url.endswith("/view"):
            return super().request(method, url, **kwargs)
        params = kwargs.get("params") or {}
        self.calls.append({"method": method, "path": "/view", "query": params})
        body = self.files.get((params["type"], params["subfolder"], params["filename"]))
        response = requests.Response()
        response.status_code = 404 if body is None else 200
        headers = {"Content-Type": "image/png", "Content-Length": str(len(body or b""))}
        response.headers.update(headers)
        response.raw = urllib3.HTTPResponse(
            body=io.BytesIO(body or b""), headers=headers, status=response.status_code, preload_content=False
        )
        return response
