"""The running API against its contract (openapi.yaml), with schemathesis.

The local stack (moto server + ComfyUI stand-in + local API Gateway with the real handlers)
runs in-process; schemathesis generates valid and invalid requests for every operation from
the spec and checks each answer: a documented status code, JSON content type, a body that
matches the documented schema, invalid input refused with a 4xx, the API key enforced, and
no 5xx except the documented ComfyUI/S3 ones (502/503/504 with the envelope). Hand-made
hostile requests (invalid UTF-8, bodies over MAX_BODY_BYTES, deep nesting, odd content types,
unicode path parameters, NaN, lone surrogates) go through the same response checks.

The number of requests is bounded (FUZZ_EXAMPLES per operation, derandomized: the same
requests on every run) and counted: after the module's last test, whatever the order, a
module fixture asserts at least MIN_REQUESTS distinct generated requests and prints the
counts per operation and status (pytest -s).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi import checks as openapi_checks

from comfy_core.config import Settings
from devtools.dev import LocalStack
from tests.support.contract import check_error, check_response

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "fuzz-key"
# Hypothesis examples per operation (plus schemathesis's coverage cases). 150 gives ~2,100
# requests, ~1,400 distinct, in about 20 s on a laptop.
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
MIN_REQUESTS = 1000
TIMEOUT = 30
# ComfyUI or S3 trouble; anything else >= 500 is a bug.
DOCUMENTED_SERVER_ERRORS = {502, 503, 504}

schema = schemathesis.openapi.from_path(ROOT / "openapi.yaml")
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    # Unknown query parameters are ignored, as API Gateway and most HTTP APIs do; the spec
    # does not forbid them, so a request with one is not "invalid" input.
    allow_extra_parameters=False,
)

# What the API promises for every request. Left out on purpose:
# positive_data_acceptance (valid input may still name an unknown workflow: 404),
# unsupported_method (API Gateway answers a wrong method with 403, not 405),
# stateful resource checks (no create/read links in this API).
CHECKS = [
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.negative_data_rejection,
    openapi_checks.ignored_auth,
]

# For a case whose "invalid" query value is never sent (below): every other check still applies.
CHECKS_WITHOUT_NEGATIVE_REJECTION = [check for check in CHECKS if check is not openapi_checks.negative_data_rejection]


def _unsent_query(case: Any) -> bool:
    """schemathesis 4.32 may negate a query parameter into an empty list, which HTTP clients
    do not send at all: the request that goes out can be valid (`?max_items=` alone), so a
    200 is right, not accepted invalid data (fixed upstream in schemathesis PR 4690)."""
    return any(value == [] for value in (case.query or {}).values())


STATS: Counter[str] = Counter()  # requests sent and status codes seen, for the report
DISTINCT: set[str] = set()  # generated requests that differ in method, path, query, headers or body


def _fingerprint(case: Any) -> str:
    return json.dumps([case.method, case.formatted_path, case.query, dict(case.headers or {}),
                       repr(case.body), case.media_type], sort_keys=True, default=repr)


def _no_undocumented_server_error(response: requests.Response) -> None:
    """5xx only for ComfyUI/S3 trouble, always as the envelope, never with internal text."""
    if response.status_code >= 500:
        check_error(response, DOCUMENTED_SERVER_ERRORS)


def _count(response: requests.Response, *_: Any, **__: Any) -> None:
    STATS["http_requests"] += 1
    STATS[f"status_{response.status_code}"] += 1


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    # Enforced like API Gateway does, so ignored_auth can show a request without it fails.
    with LocalStack(port=0, standin_delay=0, schedule_every=0, api_key=API_KEY) as running:
        yield running


@pytest.fixture(scope="module", autouse=True)
def report_and_request_count(request: pytest.FixtureRequest) -> Iterator[None]:
    """After the module's last test: the counts, and at least MIN_REQUESTS distinct
    generated requests when the fuzz test ran for every operation (not deselected)."""
    yield
    STATS["distinct"] = len(DISTINCT)
    print("\ncontract fuzz:", json.dumps(dict(sorted(STATS.items())), indent=1))
    fuzzed = [item for item in request.session.items
              if item.module is request.module and item.originalname in OPERATION_TESTS]
    if len(fuzzed) == len(OPERATION_TESTS):
        assert STATS["distinct"] >= MIN_REQUESTS, dict(STATS)


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        http.hooks["response"].append(_count)
        yield http


def _check_conformance(case: Any, stack: LocalStack, session: requests.Session) -> None:
    STATS["generated"] += 1
    STATS[f"op {case.operation.label}"] += 1
    DISTINCT.add(_fingerprint(case))
    response = case.call_and_validate(
        base_url=stack.api_url,
        session=session,
        headers={"x-api-key": API_KEY},
        checks=CHECKS if not _unsent_query(case) else CHECKS_WITHOUT_NEGATIVE_REJECTION,
        timeout=TIMEOUT,
    )
    _no_undocumented_server_error(response)


def _operation_test(label: str) -> Any:
    def test(case: Any, stack: LocalStack, session: requests.Session) -> None:
        _check_conformance(case, stack, session)

    fuzzed = settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        derandomize=True,  # the same requests on every CI run; a failure reproduces
        database=None,
        suppress_health_check=list(HealthCheck),
    )(test)
    return schema.include(name=label).parametrize()(fuzzed)


# One test function per operation, named after it: the items schemathesis collects from one
# function all share that function's node id, so only a function of its own lets one
# operation be rerun alone, e.g.
#   pytest "tests/e2e/test_contract_fuzz.py::test_conforms_GET_api_history_prompt_id"
OPERATION_TESTS = {
    "test_conforms_" + re.sub(r"\W+", "_", operation.label).strip("_"): operation.label
    for operation in (result.ok() for result in schema.get_all_operations())
}
for _name, _label in OPERATION_TESTS.items():
    globals()[_name] = _operation_test(_label)


# -- hand-made hostile requests ----------------------------------------------------------------
def _default_max_body_bytes() -> int:
    with pytest.MonkeyPatch.context() as env:
        env.delenv("MAX_BODY_BYTES", raising=False)
        return Settings.from_env().max_body_bytes


MAX_BODY_BYTES = _default_max_body_bytes()  # comfy_core's default; the local stack does not override it
RUN = ("POST", "/api/workflow/{workflow_name}")


def _nested(depth: int) -> str:
    return '{"1": {"inputs": {"x": ' + "[" * depth + "]" * depth + "}}}"


# (label, (method, spec path), raw path, headers, body, expected statuses)
HOSTILE: list[tuple[str, tuple[str, str], str, dict[str, str], bytes, set[int]]] = [
    ("invalid UTF-8 body", RUN, "/api/workflow/empty_save", {}, b"\xff\xfe{\"a\": 1}", {400}),
    ("invalid UTF-8 in a string", RUN, "/api/workflow/empty_save", {}, b'{"prompt": "\xc3\x28"}', {400}),
    ("latin-1 body declared as latin-1", RUN, "/api/workflow/text_label",
     {"Content-Type": "application/json; charset=latin-1"}, '{"prompt": "caf\u00e9"}'.encode("latin-1"),
     {400}),
    ("body one byte over MAX_BODY_BYTES", RUN, "/api/workflow/empty_save", {},
     b'{"prompt": "' + b"x" * (MAX_BODY_BYTES - 13) + b'"}', {400}),
    ("5 MiB body", RUN, "/api/workflow/empty_save", {}, b"[" + b"1," * (5 * 1024 * 1024 // 2) + b"1]", {400}),
    ("100k nested arrays", RUN, "/api/workflow/empty_save", {}, b'{"a": ' + b"[" * 100_000, {400}),
    ("100k nested objects", RUN, "/api/workflow/empty_save", {}, b'{"a": ' * 100_000 + b"1" + b"}" * 100_000,
     {400}),
    ("inputs nested 100 deep", RUN, "/api/workflow/empty_save", {}, _nested(100).encode(), {400}),
    ("inputs nested 600 deep", RUN, "/api/workflow/empty_save", {}, _nested(600).encode(), {400}),
    ("inputs nested 990 deep", RUN, "/api/workflow/empty_save", {}, _nested(990).encode(), {400}),
    ("NaN", RUN, "/api/workflow/empty_save", {}, b'{"1": {"inputs": {"width": NaN}}}', {400}),
    ("Infinity", RUN, "/api/workflow/empty_save", {}, b'{"1": {"inputs": {"color": -Infinity}}}', {400}),
    ("number overflowing a float", RUN, "/api/workflow/empty_save", {},
     b'{"1": {"inputs": {"color": 1e999}}}', {400}),
    ("lone surrogate in client_id", RUN, "/api/workflow/empty_save", {}, b'{"client_id": "\\ud800"}',
     {400}),
    ("lone surrogate in a key", RUN, "/api/workflow/empty_save", {}, b'{"prompt": "x", "\\udfff": 1}', {400}),
    ("lone surrogate in a node id", RUN, "/api/workflow/empty_save", {}, b'{"\\ud83d": {}}', {400}),
    ("JSON as text/plain", RUN, "/api/workflow/empty_save", {"Content-Type": "text/plain"}, b"{}", {200}),
    ("no content type", RUN, "/api/workflow/empty_save", {"Content-Type": ""}, b"{}", {200}),
    ("XML", RUN, "/api/workflow/empty_save", {"Content-Type": "application/xml"}, b"<prompt>x</prompt>",
     {400}),
    ("form", RUN, "/api/workflow/empty_save", {"Content-Type": "application/x-www-form-urlencoded"},
     b"prompt=x&seed=1", {400}),
    ("multipart", RUN, "/api/workflow/empty_save", {"Content-Type": "multipart/form-data; boundary=b"},
     b'--b\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nx\r\n--b--\r\n', {400}),
    ("JSON array", RUN, "/api/workflow/empty_save", {}, b"[{}]", {400}),
    ("unicode workflow name", RUN, "/api/workflow/%C3%A9t%C3%A9", {}, b"{}", {400}),
    ("emoji workflow name", RUN, "/api/workflow/%F0%9F%98%80", {}, b"{}", {400}),
    ("fullwidth workflow name", RUN, "/api/workflow/%EF%BD%85mpty_save", {}, b"{}", {400}),
    ("dot-dot workflow name", RUN, "/api/workflow/%2E%2E", {}, b"{}", {400}),
    ("encoded slash workflow name", RUN, "/api/workflow/..%2F..%2Fetc%2Fpasswd", {}, b"{}", {400}),
    ("NUL in workflow name", RUN, "/api/workflow/empty_save%00", {}, b"{}", {400}),
    ("encoded surrogate in a name", RUN, "/api/workflow/%ED%A0%80", {}, b"{}", {400}),
    ("129-char workflow name", RUN, "/api/workflow/" + "a" * 129, {}, b"{}", {400}),
    ("RTL override prompt id", ("GET", "/api/task_status/{prompt_id}"),
     "/api/task_status/abc%E2%80%AEdef", {}, b"", {400}),
    ("emoji prompt id", ("GET", "/api/history/{prompt_id}"), "/api/history/%F0%9F%98%80", {}, b"", {400}),
    ("NUL prompt id", ("GET", "/api/image/{prompt_id}"), "/api/image/a%00b", {}, b"", {400}),
    ("fullwidth prompt id", ("DELETE", "/api/task/{prompt_id}"), "/api/task/%EF%BC%A1", {}, b"", {400}),
    ("8 KiB prompt id", ("GET", "/api/task_status/{prompt_id}"), "/api/task_status/" + "a" * 8192, {}, b"",
     {400}),
    ("fullwidth digit max_items", ("GET", "/api/history"), "/api/history?max_items=%EF%BC%91", {}, b"",
     {400}),
    ("underscored max_items", ("GET", "/api/history"), "/api/history?max_items=1_0", {}, b"", {400}),
    ("5000-digit max_items", ("GET", "/api/history"), "/api/history?max_items=" + "9" * 5000, {}, b"", {400}),
    ("no API key", ("GET", "/api/workflows"), "/api/workflows", {"x-api-key": ""}, b"", {403}),
    ("wrong API key", ("GET", "/api/queue"), "/api/queue", {"x-api-key": "guess"}, b"", {403}),
]


@pytest.mark.parametrize(("label", "operation", "raw_path", "headers", "body", "expected"), HOSTILE,
                         ids=[case[0] for case in HOSTILE])
def test_hostile_request_gets_a_documented_answer(
    stack: LocalStack, session: requests.Session, label: str, operation: tuple[str, str], raw_path: str,
    headers: dict[str, str], body: bytes, expected: set[int],
) -> None:
    method, path = operation
    sent_headers = {"x-api-key": API_KEY, "Content-Type": "application/json", **headers}
    request = requests.Request(method, stack.api_url + raw_path, headers=sent_headers, data=body or None)
    prepared = session.prepare_request(request)
    prepared.url = stack.api_url + raw_path  # exactly as written: requests must not re-quote it
    if not sent_headers["Content-Type"]:
        prepared.headers.pop("Content-Type", None)
    STATS["hostile"] += 1
    response = session.send(prepared, timeout=TIMEOUT)

    assert response.status_code in expected, (label, response.status_code, response.text[:300])
    _no_undocumented_server_error(response)
    response.content.decode("utf-8")  # strict: the body is UTF-8 whatever the input was
    json.loads(response.content, parse_constant=_reject_constant)  # strict JSON: no NaN/Infinity
    # The same response checks as the generated cases, against the operation's spec.
    check_response(method, path, response)


def _reject_constant(name: str) -> None:
    raise AssertionError(f"response body contains {name}, which is not JSON")
