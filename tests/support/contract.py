"""Checking real HTTP answers against openapi.yaml (schemathesis's response checks), and
that error answers carry the envelope and nothing internal."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import requests
import schemathesis
from schemathesis.specs.openapi import checks

SPEC = Path(__file__).resolve().parents[2] / "openapi.yaml"

# Text that would mean an exception, a traceback or ComfyUI's own error page leaked out.
INTERNAL_MARKERS = (
    "Traceback", 'File "', "Errno", "HTTPConnectionPool", "Max retries", "Connection refused",
    "Read timed out", "Expecting value", "JSONDecodeError", "botocore", "ClientError",
    "SECRET-INTERNAL-DETAIL",
)


@lru_cache(maxsize=1)
def schema() -> Any:
    return schemathesis.openapi.from_path(SPEC)


def check_response(method: str, spec_path: str, response: requests.Response) -> None:
    """Documented status code, JSON content type and a body matching the documented schema."""
    placeholders = {name: "x" for name in re.findall(r"{(\w+)}", spec_path)}
    case = schema()[spec_path][method.upper()].Case(path_parameters=placeholders)
    case.validate_response(response, checks=[
        checks.status_code_conformance,
        checks.content_type_conformance,
        checks.response_schema_conformance,
    ])


def check_error(response: requests.Response, status: int | set[int]) -> dict[str, Any]:
    """The error envelope with the expected status, as strict UTF-8 JSON, nothing internal."""
    wanted = {status} if isinstance(status, int) else status
    assert response.status_code in wanted, (response.status_code, response.text[:300])
    body = json.loads(response.content.decode("utf-8"))
    assert isinstance(body.get("error"), str) and body["error"], body
    assert body.get("status_code") == response.status_code, body
    for marker in INTERNAL_MARKERS:
        assert marker not in response.text, (marker, response.text[:300])
    return body
