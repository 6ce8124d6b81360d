"""Faults, over real sockets: what the API answers and what the archiver does when ComfyUI
or S3 misbehave.

* ComfyUI refusing connections, hanging past COMFYUI_READ_TIMEOUT, answering 500 with a
  traceback, answering broken JSON or JSON of the wrong shape (a tiny http.server fake):
  every route answers the documented 502/504 envelope with nothing internal in it, and an
  archiver run ends cleanly without writing anything.
* ComfyUI stalling or dying in the middle of a file: nothing half-written, the next run
  copies it once.
* ComfyUI restarting between the archiver reading the history and copying the files (the
  stand-in's restart()): wiped temp images are recorded lost, output files are archived, the
  API answers from the manifests.
* S3 throttling and failing (botocore hooks on the real client answer SlowDown, 500 or
  AccessDenied for chosen calls): the API answers 503, a run leaves incomplete prompts
  without a manifest, the next run finishes them, and no object is ever completed twice.

Counts are printed (pytest -s) and collected in FAULTS.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3.util.connection
from botocore.awsrequest import AWSResponse

from comfy_core.archive import sweep as archive
from comfy_core import reset_container_state, storage
from comfy_core.comfyui.client import ComfyUIClient
from comfy_core.config import get_settings
from devtools.dev import LocalStack
from tests.support.contract import INTERNAL_MARKERS, check_error, check_response
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

TIMEOUT = 30  # per HTTP call of the test itself
READ_TIMEOUT = 0.5  # COMFYUI_READ_TIMEOUT while faults are injected
PID = "6c0e5d7e-1111-4222-8333-944445555666"  # a prompt id nobody ran
FAULTS: Counter[str] = Counter()  # what was injected and answered, for the report
SECRET = "SECRET-INTERNAL-DETAIL /opt/ComfyUI/execution.py line 42"


def report(name: str, count: int = 1) -> None:
    FAULTS[name] += count


@pytest.fixture(scope="module", autouse=True)
def print_report() -> Iterator[None]:
    yield
    print("\nfaults:", json.dumps(dict(sorted(FAULTS.items())), indent=1))


# -- a ComfyUI that misbehaves on purpose -----------------------------------------------
class FakeComfyUI:
    """A tiny HTTP server on 127.0.0.1 whose `behaviour` answers every request.
    `refuse()` closes the listening socket (connections refused); `serve()` reopens it on
    the same port."""

    def __init__(self) -> None:
        self.port = 0
        self.behaviour: Callable[[BaseHTTPRequestHandler], None] = answer_text500
        self.release = threading.Event()  # ends every hanging answer
        self.requests: Counter[str] = Counter()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serve(self) -> "FakeComfyUI":
        if self._server is None:
            fake = self

            class Handler(BaseHTTPRequestHandler):
                protocol_version = "HTTP/1.1"
                disable_nagle_algorithm = True

                def _any(self) -> None:
                    fake.requests[f"{self.command} {self.path.split('?')[0]}"] += 1
                    length = int(self.headers.get("Content-Length") or 0)
                    if length:
                        self.rfile.read(length)
                    fake.behaviour(self)

                do_GET = do_POST = _any

                def log_message(self, *args: Any) -> None:
                    pass

            self.release.clear()
            self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
            self._server.daemon_threads = True
            self._server.fake_release = self.release  # type: ignore[attr-defined]
            self.port = self._server.server_address[1]
            threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                             daemon=True).start()
        return self

    def refuse(self) -> None:
        if self._server is not None:
            self.release.set()
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def answer_text500(handler: BaseHTTPRequestHandler) -> None:
    # What ComfyUI (aiohttp) does on an unhandled exception: 500 with a plain-text traceback.
    _send(handler, 500, f"Traceback (most recent call last):\n  File \"x\"\n{SECRET}".encode(),
          "text/plain; charset=utf-8")


def answer_bad_json(handler: BaseHTTPRequestHandler) -> None:
    _send(handler, 200, b'{"prompt_id": ' + SECRET.encode(), "application/json")


def answer_wrong_shape(handler: BaseHTTPRequestHandler) -> None:
    _send(handler, 200, b"[]", "application/json")  # valid JSON, not the object ComfyUI sends


def answer_never(handler: BaseHTTPRequestHandler) -> None:
    """Accept, read the request, never answer (until the test releases it)."""
    handler.server.fake_release.wait(60)  # type: ignore[attr-defined]
    handler.close_connection = True


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeComfyUI]:
    comfy = FakeComfyUI().serve()
    yield comfy
    comfy.refuse()


@pytest.fixture(scope="module")
def fault_stack(fake: FakeComfyUI) -> Iterator[LocalStack]:
    with LocalStack(port=0, comfyui_base_url=fake.url, schedule_every=0) as stack:
        yield stack


@pytest.fixture
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYUI_READ_TIMEOUT", str(READ_TIMEOUT))
    monkeypatch.setenv("COMFYUI_CONNECT_TIMEOUT", "1")
    reset_container_state()


@pytest.fixture
def connects(fake: FakeComfyUI, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every TCP connection this process tries to open to the fake ComfyUI, refused ones
    too (the handlers run in this process, behind the local API)."""
    attempts: list[tuple[str, int]] = []
    create_connection = urllib3.util.connection.create_connection

    def counted(address: tuple[str, int], *args: Any, **kwargs: Any) -> Any:
        if address[1] == fake.port:
            attempts.append(address)
        return create_connection(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", counted)
    return attempts


def assert_one_attempt(fake: FakeComfyUI, connects: list[tuple[str, int]], refused: bool, retried: bool,
                       requests_before: int, connects_before: int, what: str) -> None:
    """The ComfyUI calls one API request or archiver run made, counted, not timed: a hung
    ComfyUI costs one read timeout, not one per retry (read timeouts, 500s and bad bodies are
    never retried). Only a refused connection is retried, COMFYUI_GET_RETRIES times, and only
    for a GET (`retried`)."""
    reached = sum(fake.requests.values()) - requests_before
    if refused:
        assert reached == 0, (what, fake.requests)
        tries = 1 + get_settings().get_retries if retried else 1
        assert len(connects) - connects_before == tries, (what, connects[connects_before:])
    else:
        assert reached == 1, (what, fake.requests)


# (method, raw path, spec path, body): every route that calls ComfyUI.
COMFY_ROUTES = [
    ("GET", "/api/test_comfy", "/api/test_comfy", None),
    ("GET", "/api/status", "/api/status", None),
    ("GET", "/api/queue", "/api/queue", None),
    ("GET", "/api/history?max_items=5", "/api/history", None),
    ("GET", f"/api/history/{PID}", "/api/history/{prompt_id}", None),
    ("GET", f"/api/image/{PID}", "/api/image/{prompt_id}", None),
    ("GET", f"/api/task_status/{PID}", "/api/task_status/{prompt_id}", None),
    ("DELETE", f"/api/task/{PID}", "/api/task/{prompt_id}", None),
    ("POST", "/api/workflow/empty_save", "/api/workflow/{workflow_name}", b"{}"),
]

# fault -> (how the fake behaves, the status every route answers)
COMFY_FAULTS: dict[str, tuple[Callable[[BaseHTTPRequestHandler], None] | None, int]] = {
    "refused": (None, 502),
    "hangs": (answer_never, 504),
    "500 text": (answer_text500, 502),
    "malformed JSON": (answer_bad_json, 502),
    "JSON of the wrong shape": (answer_wrong_shape, 502),
}


def _apply(fake: FakeComfyUI, behaviour: Callable[[BaseHTTPRequestHandler], None] | None) -> None:
    if behaviour is None:
        fake.refuse()
        return
    fake.serve()
    fake.release.clear()
    fake.behaviour = behaviour


@pytest.mark.parametrize("fault", list(COMFY_FAULTS))
def test_api_answers_comfyui_faults_with_documented_errors(
    fault: str, fake: FakeComfyUI, fault_stack: LocalStack, short_timeouts: None,
    connects: list[tuple[str, int]],
) -> None:
    behaviour, status = COMFY_FAULTS[fault]
    _apply(fake, behaviour)
    try:
        for method, raw_path, spec_path, body in COMFY_ROUTES:
            requests_before, connects_before = sum(fake.requests.values()), len(connects)
            response = requests.request(method, fault_stack.api_url + raw_path, data=body, timeout=TIMEOUT)
            answer = check_error(response, status)
            check_response(method, spec_path, response)
            # The route's first ComfyUI call is a GET, except POST /prompt for a workflow run.
            assert_one_attempt(fake, connects, refused=behaviour is None, retried=method != "POST",
                               requests_before=requests_before, connects_before=connects_before,
                               what=raw_path)
            if spec_path == "/api/test_comfy":
                assert answer["status"] == "error"
            report(f"api {fault} -> {response.status_code}")
    finally:
        fake.release.set()  # free hanging handler threads
        fake.serve()


def test_full_comfyui_queue_is_429_with_retry_after(
    fake: FakeComfyUI, fault_stack: LocalStack, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def busy(handler: BaseHTTPRequestHandler) -> None:
        if handler.path.startswith("/prompt") and handler.command == "GET":
            _send(handler, 200, b'{"exec_info": {"queue_remaining": 3}}', "application/json")
        else:
            answer_text500(handler)

    _apply(fake, busy)
    # MaxQueueDepth=2, as the template parameter would set it for the function.
    monkeypatch.setitem(fault_stack.api.invoker.env_overrides, "MAX_QUEUE_DEPTH", "2")
    submitted = fake.requests["POST /prompt"]
    try:
        response = requests.post(f"{fault_stack.api_url}/api/workflow/empty_save", data=b"{}",
                                 timeout=TIMEOUT)
    finally:
        fake.behaviour = answer_text500
    check_error(response, 429)
    check_response("POST", "/api/workflow/{workflow_name}", response)
    assert int(response.headers["Retry-After"]) >= 1
    assert fake.requests["POST /prompt"] == submitted  # refused before anything was queued
    report("api ComfyUI queue full -> 429")


@pytest.mark.parametrize("fault", list(COMFY_FAULTS))
def test_archiver_run_ends_cleanly_on_comfyui_faults(
    fault: str, fake: FakeComfyUI, fault_stack: LocalStack, short_timeouts: None,
    connects: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    behaviour, _ = COMFY_FAULTS[fault]
    bucket = fault_stack.buckets["ImageBucket"]
    monkeypatch.setenv("COMFYUI_BASE_URL", fake.url)
    monkeypatch.setenv("IMAGE_BUCKET", bucket)
    reset_container_state()
    # moto's state is per process, so the bucket may hold other tests' objects: compare.
    stored_before = all_keys(bucket)
    _apply(fake, behaviour)
    requests_before, connects_before = sum(fake.requests.values()), len(connects)
    try:
        summary = archive.run_sweep()
    finally:
        fake.release.set()
        fake.serve()
    assert summary["status"] == "failed" and summary["prompts_archived"] == 0, summary
    assert not any(marker in summary["error"] for marker in INTERNAL_MARKERS), summary["error"]
    # The run's one ComfyUI call is GET /history.
    assert_one_attempt(fake, connects, refused=behaviour is None, retried=True,
                       requests_before=requests_before, connects_before=connects_before, what=fault)
    assert all_keys(bucket) == stored_before  # nothing written
    report(f"archiver {fault} -> run failed cleanly")


def all_keys(bucket: str) -> set[str]:
    """Every key in the bucket, through comfy_core's own S3 client."""
    pages = storage.s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {item["Key"] for page in pages for item in page.get("Contents") or []}


# -- S3: counting what completes, failing what we choose --------------------------------
_ERROR_XML = ('<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
              "<Message>injected</Message><RequestId>fault</RequestId></Error>")


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


@dataclass
class S3Rule:
    operation: str  # PutObject, UploadPart, GetObject, ...
    matches: Callable[[dict[str, Any]], bool]  # on the call's parameters
    status: int
    code: str
    attempts: int = 10**9  # attempts of one call that fail (1: only the first, then retried)


@dataclass
class S3Faults:
    """botocore hooks on one client: `rules` fail chosen attempts before they reach S3,
    `completed` counts calls S3 answered with success, per (operation, key)."""

    rules: list[S3Rule] = field(default_factory=list)
    completed: Counter[tuple[str, str]] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def attach(self, client: Any) -> "S3Faults":
        client.meta.events.register("before-parameter-build.s3.*", self._remember)
        client.meta.events.register("before-send.s3.*", self._maybe_fail)
        client.meta.events.register("after-call.s3.*", self._count)
        return self

    def _remember(self, params: dict[str, Any], context: dict[str, Any], model: Any, **_: Any) -> None:
        context["fault_call"] = (model.name, dict(params))

    def _maybe_fail(self, request: Any, **_: Any) -> AWSResponse | None:
        operation, params = request.context.get("fault_call", ("", {}))
        attempt = request.context["fault_attempt"] = request.context.get("fault_attempt", 0) + 1
        for rule in self.rules:
            if rule.operation == operation and attempt <= rule.attempts and rule.matches(params):
                with self.lock:
                    self.injected[f"{operation} {rule.code}"] += 1
                body = _ERROR_XML.format(code=rule.code).encode()
                return AWSResponse(request.url, rule.status, {"Content-Type": "application/xml"}, _Raw(body))
        return None

    def _count(self, http_response: Any, model: Any, context: dict[str, Any], **_: Any) -> None:
        if http_response.status_code < 300:
            _, params = context.get("fault_call", ("", {}))
            with self.lock:
                self.completed[(model.name, str(params.get("Key", "")))] += 1


# -- a stack with the stand-in, for the archiver and the S3 faults ------------------------
@pytest.fixture(scope="module")
def standin_stack() -> Iterator[LocalStack]:
    with LocalStack(port=0, standin_delay=0, schedule_every=0) as stack:
        # A workflow with both kinds of output: SaveImage (kept) and PreviewImage (temp).
        mixed = {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1,
                                                           "color": 65280}},
            "2": {"class_type": "SaveImage",
                  "inputs": {"images": ["1", 0], "filename_prefix": "fault_mixed"}},
            "3": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
        }
        stack._s3().put_object(Bucket=stack.buckets["WorkflowBucket"], Key="workflows/fault_mixed.json",
                               Body=json.dumps(mixed).encode())
        yield stack


@pytest.fixture
def archiver_env(standin_stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> str:
    """In-process archiver runs against the stack: its ComfyUI and its image bucket."""
    bucket = standin_stack.buckets["ImageBucket"]
    monkeypatch.setenv("COMFYUI_BASE_URL", standin_stack.standin.base_url)
    monkeypatch.setenv("IMAGE_BUCKET", bucket)
    reset_container_state()
    return bucket


_WIDTH = iter(range(40, 4000, 8))  # a new width per prompt: the stand-in caches identical ones


def run_and_wait(stack: LocalStack, workflow: str, width_node: str = "1") -> str:
    """Submit through the API, wait for ComfyUI (not task_status: that would start the
    archiver) to finish."""
    body = {width_node: {"inputs": {"width": next(_WIDTH)}}}
    answer = requests.post(f"{stack.api_url}/api/workflow/{workflow}", json=body, timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text
    prompt_id = answer.json()["prompt_id"]
    wait_for(lambda: requests.get(f"{stack.standin.base_url}/history/{prompt_id}", timeout=TIMEOUT).json(),
             timeout=20, what=f"{workflow} finished")
    return prompt_id


def manifest(bucket: str, prompt_id: str) -> dict[str, Any] | None:
    try:
        body = storage.s3_client().get_object(Bucket=bucket, Key=f"images/{prompt_id}/manifest.json")["Body"]
    except Exception:  # noqa: BLE001 - NoSuchKey
        return None
    return json.loads(body.read())


def assert_manifest_is_complete(stack: LocalStack, bucket: str, prompt_id: str) -> dict[str, Any]:
    """Every file of the manifest is stored whole (size and bytes of the source) or lost."""
    doc = manifest(bucket, prompt_id)
    assert doc is not None, prompt_id
    for record in doc["files"]:
        if record.get("lost"):
            assert record["archived"] is False and record["s3_key"] is None
            continue
        assert record["archived"] is True
        stored = storage.s3_client().get_object(Bucket=bucket, Key=record["s3_key"])["Body"].read()
        assert len(stored) == record["size"]
        folder = {"output": stack.standin.output_dir, "temp": stack.standin.temp_dir}[record["type"]]
        source = Path(folder, record["subfolder"], record["filename"])
        if source.exists():  # temp files vanish on restart; outputs stay
            assert hashlib.sha256(stored).digest() == hashlib.sha256(source.read_bytes()).digest()
    return doc


def assert_stored_once(faults: S3Faults) -> None:
    """No file object completed twice, by PUT or by multipart, in any number of runs."""
    objects: Counter[str] = Counter()
    for (operation, key), count in faults.completed.items():
        if operation in ("PutObject", "CompleteMultipartUpload"):
            objects[key] += count
    twice = {key: count for key, count in objects.items() if count > 1}
    assert not twice, twice
    report("s3 objects completed (each once)", sum(objects.values()))


# -- ComfyUI restarting between the history read and the copy -------------------------------
def test_restart_between_submit_and_archive(standin_stack: LocalStack, archiver_env: str) -> None:
    bucket = archiver_env
    stack = standin_stack
    faults = S3Faults().attach(storage.s3_client())
    saved = run_and_wait(stack, "empty_save")
    preview = run_and_wait(stack, "empty_preview")
    mixed = run_and_wait(stack, "fault_mixed")

    # The archiver read the history, then ComfyUI restarted: temp gone, outputs kept.
    client = ComfyUIClient(get_settings())
    read_history = client.history_items

    def history_then_restart(max_items: int, offset: int | None = None) -> Iterator[tuple[str, Any]]:
        entries = list(read_history(max_items, offset))
        stack.standin.restart()
        yield from entries

    client.history_items = history_then_restart  # type: ignore[method-assign]
    summary = archive.run_sweep(client=client)
    assert summary["status"] == "ok", summary
    report("restart: images archived", summary["images_archived"])
    report("restart: images recorded lost", summary["images_lost"])

    assert [f["archived"] for f in assert_manifest_is_complete(stack, bucket, saved)["files"]] == [True]
    lost = [f.get("lost") for f in assert_manifest_is_complete(stack, bucket, preview)["files"]]
    assert lost == [True, True]
    outcome = {f["type"]: f["archived"] for f in assert_manifest_is_complete(stack, bucket, mixed)["files"]}
    assert outcome == {"output": True, "temp": False}

    # ComfyUI forgot them; the API answers from the manifests, per the contract.
    for prompt_id in (saved, preview, mixed):
        status = requests.get(f"{stack.api_url}/api/task_status/{prompt_id}", timeout=TIMEOUT)
        check_response("GET", "/api/task_status/{prompt_id}", status)
        answer = status.json()
        assert (answer["status"], answer["source"]) == ("completed", "archive"), answer
        for image in answer["images"]:
            assert bool(image["download_url"]) == (not image.get("lost")), image
            if image["download_url"]:
                assert requests.get(image["download_url"], timeout=TIMEOUT).content.startswith(b"\x89PNG")
        for path in (f"/api/image/{prompt_id}", f"/api/history/{prompt_id}"):
            response = requests.get(stack.api_url + path, timeout=TIMEOUT)
            assert response.status_code == 200, response.text
            check_response("GET", path.rsplit("/", 1)[0] + "/{prompt_id}", response)

    # The next run has nothing left to do (the history is gone), and stores nothing twice.
    again = archive.run_sweep()
    assert again["status"] == "ok" and again["images_archived"] == 0, again
    assert_stored_once(faults)


def test_prompt_finished_but_not_archived_before_a_restart_is_not_found(standin_stack: LocalStack,
                                                                       archiver_env: str) -> None:
    """The documented limit: a restart before any archiver run leaves nothing to archive."""
    prompt_id = run_and_wait(standin_stack, "empty_save")
    standin_stack.standin.restart()
    assert archive.run_sweep()["prompts_seen"] == 0
    response = requests.get(f"{standin_stack.api_url}/api/task_status/{prompt_id}", timeout=TIMEOUT)
    check_response("GET", "/api/task_status/{prompt_id}", response)
    assert response.json()["status"] == "not_found"
    report("restart before any archiver run: prompt not_found")


# -- ComfyUI stalling or dying in the middle of a file --------------------------------------
def test_archiver_resumes_after_comfyui_stalls_or_dies_mid_file(
    fake: FakeComfyUI, fault_stack: LocalStack, short_timeouts: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    bucket = fault_stack.buckets["ImageBucket"]
    monkeypatch.setenv("COMFYUI_BASE_URL", fake.url)
    monkeypatch.setenv("IMAGE_BUCKET", bucket)
    reset_container_state()
    faults = S3Faults().attach(storage.s3_client())
    prompt_id = "fault-mid-file-0001"
    content = os.urandom(300_000)
    entry = {"outputs": {"9": {"images": [{"filename": "big.png", "subfolder": "", "type": "output"}]}},
             "status": {"status_str": "success", "completed": True, "messages": []}}
    view: dict[str, str] = {"mode": "stall"}

    def behaviour(handler: BaseHTTPRequestHandler) -> None:
        if handler.path.startswith("/history"):
            _send(handler, 200, json.dumps({prompt_id: entry}).encode(), "application/json")
            return
        if handler.path.startswith("/queue"):  # the sweep's first question (fleet metrics)
            _send(handler, 200, b'{"queue_running": [], "queue_pending": []}', "application/json")
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.send_header("Content-Length", str(len(content)))
        handler.end_headers()
        if view["mode"] == "whole":
            handler.wfile.write(content)
            return
        handler.wfile.write(content[: len(content) // 3])
        handler.wfile.flush()
        if view["mode"] == "stall":
            handler.server.fake_release.wait(60)  # type: ignore[attr-defined]
        handler.close_connection = True  # "dies": the connection ends short of Content-Length

    _apply(fake, behaviour)
    key = f"images/{prompt_id}/9/big.png"
    try:
        stalled = archive.run_sweep()
        fake.release.set()
        assert stalled["status"] == "failed" and "went away" in stalled["error"], stalled
        report("archiver: ComfyUI stalled mid-file -> run failed, nothing stored")
        view["mode"] = "dies"
        died = archive.run_sweep()
        assert died["status"] == "ok" and died["prompts_incomplete"] == 1, died
        report("archiver: ComfyUI died mid-file -> prompt incomplete, nothing stored")
        assert manifest(bucket, prompt_id) is None
        assert faults.completed[("PutObject", key)] == 0
        view["mode"] = "whole"
        whole = archive.run_sweep()
        assert whole["prompts_archived"] == 1 and whole["images_archived"] == 1, whole
        stored = storage.s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
        assert stored == content
        assert archive.run_sweep()["images_archived"] == 0  # done: never copied again
    finally:
        fake.release.set()
        fake.behaviour = answer_text500
    assert_stored_once(faults)
    assert faults.completed[("PutObject", key)] == 1


# -- S3 throttling and failing during archiving ---------------------------------------------
BIG_SIZE = 17 * 1024 * 1024  # three parts of 8 MiB: multipart


def test_archiver_survives_s3_throttling_and_failures(standin_stack: LocalStack, archiver_env: str) -> None:
    bucket = archiver_env
    stack = standin_stack
    faults = S3Faults().attach(storage.s3_client())
    saved = run_and_wait(stack, "empty_save")
    preview = run_and_wait(stack, "empty_preview")
    big_name = "fault_big_00001_.bin"
    Path(stack.standin.output_dir, big_name).write_bytes(os.urandom(BIG_SIZE))
    big_id = "fault-big-0001"
    big_entry = {"outputs": {"7": {"images": [{"filename": big_name, "subfolder": "", "type": "output"}]}},
                 "status": {"status_str": "success", "completed": True, "messages": []}}

    def under(prompt_id: str, suffix: str = "") -> Callable[[dict[str, Any]], bool]:
        return lambda params: str(params.get("Key", "")).startswith(f"images/{prompt_id}/") and \
            str(params.get("Key", "")).endswith(suffix)

    # Throttling on every first attempt (botocore retries), hard failures on chosen calls.
    faults.rules = [
        S3Rule("PutObject", lambda params: True, 503, "SlowDown", attempts=1),
        S3Rule("UploadPart", lambda params: params.get("PartNumber") == 1, 503, "SlowDown", attempts=1),
        S3Rule("UploadPart", lambda params: params.get("PartNumber") == 2, 500, "InternalError"),
        S3Rule("PutObject", under(preview, "_00002_.png"), 503, "SlowDown"),
        S3Rule("PutObject", under(saved, "manifest.json"), 403, "AccessDenied"),
    ]
    first = archive.run_sweep()
    first_big = archive.archive_prompt(big_id, big_entry)
    assert first["status"] == "ok", first
    for prompt_id in (saved, preview, big_id):  # incomplete: no manifest, never "archived"
        assert manifest(bucket, prompt_id) is None, prompt_id
    assert first_big.status == "incomplete"
    report("s3 run 1: prompts left incomplete", first["prompts_incomplete"] + 1)

    faults.rules = faults.rules[:2]  # S3 recovers; throttling goes on
    second = archive.run_sweep()
    second_big = archive.archive_prompt(big_id, big_entry)
    assert second["status"] == "ok" and second["images_lost"] == 0, second
    assert second_big.status == "archived" and second_big.stored == 1
    by_id = {p["prompt_id"]: p for p in second["prompts"]}
    assert (by_id[saved]["reused"], by_id[saved]["stored"]) == (1, 0)  # stored in run 1, kept
    assert (by_id[preview]["reused"], by_id[preview]["stored"]) == (1, 1)
    for prompt_id in (saved, preview, big_id):
        assert all(f["archived"] for f in assert_manifest_is_complete(stack, bucket, prompt_id)["files"])
    report("s3 run 2: files reused from run 1", second["images_reused"])

    third = archive.run_sweep()
    assert third["images_archived"] == 0 and third["images_reused"] == 0, third
    assert_stored_once(faults)
    assert faults.completed[("CompleteMultipartUpload", f"images/{big_id}/7/{big_name}")] == 1
    for name, count in faults.injected.items():
        report(f"s3 injected {name}", count)


def test_archiver_run_fails_cleanly_when_s3_listing_fails(standin_stack: LocalStack,
                                                          archiver_env: str) -> None:
    faults = S3Faults().attach(storage.s3_client())
    prompt_id = run_and_wait(standin_stack, "empty_save")
    faults.rules = [S3Rule("ListObjectsV2", lambda params: True, 500, "InternalError")]
    summary = archive.run_sweep()
    assert summary["status"] == "failed" and "list" in summary["error"].lower(), summary
    assert not any(operation in ("PutObject", "CompleteMultipartUpload") for operation, _ in faults.completed)
    faults.rules = []
    assert archive.run_sweep()["status"] == "ok"
    assert manifest(archiver_env, prompt_id) is not None
    report("s3 listing failed -> run failed cleanly, next run archived")


def test_api_answers_s3_failures_with_503(standin_stack: LocalStack, archiver_env: str) -> None:
    stack = standin_stack
    prompt_id = run_and_wait(stack, "empty_save")
    stack.standin.restart()  # so the API must read the archive (S3) for this prompt
    faults = S3Faults().attach(storage.s3_client())
    # Throttled first attempts are retried by botocore: the caller sees nothing.
    faults.rules = [S3Rule(op, lambda params: True, 503, "SlowDown", attempts=1)
                    for op in ("ListObjectsV2", "GetObject")]
    assert requests.get(f"{stack.api_url}/api/workflows", timeout=TIMEOUT).status_code == 200
    # S3 failing for good: 503 with the envelope, nothing internal.
    faults.rules = [S3Rule(op, lambda params: True, 500, "InternalError")
                    for op in ("ListObjectsV2", "GetObject")]
    cases = [
        ("GET", "/api/workflows", "/api/workflows", None),
        ("POST", "/api/workflow/empty_save", "/api/workflow/{workflow_name}", b"{}"),
        ("GET", f"/api/task_status/{prompt_id}", "/api/task_status/{prompt_id}", None),
        ("GET", f"/api/image/{prompt_id}", "/api/image/{prompt_id}", None),
        ("GET", f"/api/history/{prompt_id}", "/api/history/{prompt_id}", None),
    ]
    for method, raw_path, spec_path, body in cases:
        response = requests.request(method, stack.api_url + raw_path, data=body, timeout=TIMEOUT)
        check_error(response, 503)
        check_response(method, spec_path, response)
        report("api S3 failing -> 503")
    assert faults.injected
