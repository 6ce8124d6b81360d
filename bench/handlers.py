"""Warm handler requests in a child process: time per request against a direct baseline,
and the round trips one request makes.

The parent (bench/warm.py, bench/roundtrips.py) runs ``python -m bench.handlers --child
<scenario json>`` with the functions' environment (bench/stack.py). The child imports the
handler like a Lambda container would, then alternates, request after request:

* the handler: ``lambda_handler(event, context)``;
* the direct baseline: the same ComfyUI request(s) made with one reused ``requests.Session``
  (and, where the handler reads S3, the same S3 operation(s) with one reused boto3 client),
  each answer parsed as JSON, as any client of ComfyUI would.

Overhead = handler time - direct time of the same pair; median and p90 over the pairs.
Afterwards one more request of each is made with counters on: ComfyUI requests (method and
path), AWS operations (from botocore's client), workflow bodies downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.cold_child import Context  # the same fake Lambda context the cold runs use
from bench.common import REPO, summarise

EVENTS = REPO / "events"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _shown(path: str) -> str:
    """A path as reported: prompt ids become {id}, so rows read alike."""
    return _UUID.sub("{id}", path)


@dataclass(frozen=True)
class Scenario:
    """One handler request to measure or count."""

    label: str
    function: str
    event: str  # events/<event>.json
    direct: str  # a key of RECIPES: what the same work costs without the handler
    comfy: str = "main"  # which stand-in (bench/stack.py)
    prompt_id: str | None = None  # replaces the event's prompt_id path parameter
    env: tuple[tuple[str, str], ...] = ()  # more environment for this scenario


# -- the direct baseline ------------------------------------------------------------------------
class Direct:
    """ComfyUI and S3 without comfy_core: one reused Session, one reused boto3 client."""

    def __init__(self, event: dict[str, Any], captured_prompt: dict[str, Any] | None) -> None:
        import requests

        self.base = os.environ["COMFYUI_BASE_URL"].rstrip("/")
        self.session = requests.Session()
        self.event = event
        self.prompt_id = (event.get("pathParameters") or {}).get("prompt_id", "")
        self.captured_prompt = captured_prompt  # the body the handler POSTed to /prompt
        self.calls: list[str] = []
        self._s3: Any = None
        self._etag: str | None = None

    # ComfyUI
    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        self.calls.append(f"GET {_shown(path)}")
        response = self.session.get(f"{self.base}{path}", params=params, timeout=10)
        response.raise_for_status()
        return response.json()

    def post_prompt(self) -> Any:
        if self.captured_prompt is None:
            raise RuntimeError("the handler posted no prompt to copy")
        body = {**self.captured_prompt, "prompt_id": str(uuid.uuid4())}
        self.calls.append("POST /prompt")
        response = self.session.post(f"{self.base}/prompt", data=json.dumps(body),
                                     headers={"Content-Type": "application/json"}, timeout=10)
        response.raise_for_status()
        return response.json()

    # S3
    @property
    def s3(self) -> Any:
        if self._s3 is None:
            import boto3

            self._s3 = boto3.client("s3")
        return self._s3

    def manifest(self) -> Any:
        self.calls.append("S3 GetObject")
        key = f"{os.environ['IMAGE_PREFIX']}{self.prompt_id}/manifest.json"
        return json.loads(self.s3.get_object(Bucket=os.environ["IMAGE_BUCKET"], Key=key)["Body"].read())

    def list_workflows(self) -> list[str]:
        self.calls.append("S3 ListObjectsV2")
        answer = self.s3.list_objects_v2(Bucket=os.environ["WORKFLOW_BUCKET"],
                                         Prefix=os.environ["WORKFLOW_PREFIX"])
        return [item["Key"] for item in answer.get("Contents", [])]

    def workflow_unchanged(self) -> None:
        """The conditional GET a cached workflow costs: S3 answers 304, no body."""
        from botocore.exceptions import ClientError

        bucket = os.environ["WORKFLOW_BUCKET"]
        key = f"{os.environ['WORKFLOW_PREFIX']}{self.event['pathParameters']['workflow_name']}.json"
        if self._etag is None:
            self._etag = self.s3.head_object(Bucket=bucket, Key=key)["ETag"]
        self.calls.append("S3 GetObject (If-None-Match)")
        try:
            self.s3.get_object(Bucket=bucket, Key=key, IfNoneMatch=self._etag)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("304", "NotModified"):
                raise


def _history(d: Direct) -> Any:
    return d.get("/history", params=d.event.get("queryStringParameters") or None)


RECIPES: dict[str, Callable[[Direct], Any]] = {
    "none": lambda d: None,
    "system_stats": lambda d: d.get("/system_stats"),
    "queue": lambda d: d.get("/queue"),
    "history": _history,
    "history_entry": lambda d: d.get(f"/history/{d.prompt_id}"),
    "history_entry+manifest": lambda d: (d.get(f"/history/{d.prompt_id}"), d.manifest()),
    "history_entry+queue": lambda d: (d.get(f"/history/{d.prompt_id}"), d.get("/queue")),
    "queue+history_entry": lambda d: (d.get("/queue"), d.get(f"/history/{d.prompt_id}")),
    "list_workflows": lambda d: d.list_workflows(),
    "workflow_unchanged+prompt": lambda d: (d.workflow_unchanged(), d.post_prompt()),
}

# What each API function's first event costs, steady state (bench/stack.py seeds the stand-in).
WARM: tuple[Scenario, ...] = (
    Scenario("test_comfy", "test_comfy", "test_comfy", "system_stats"),
    Scenario("system_status", "system_status", "system_status", "system_stats"),
    Scenario("queue", "queue", "queue", "queue"),
    Scenario("history (max_items=10)", "history", "history", "history"),
    Scenario("history_entry (finished)", "history_entry", "history_entry", "history_entry"),
    Scenario("task_status (finished, archived)", "task_status", "task_status", "history_entry+manifest"),
    Scenario("image (finished, archived)", "image", "image", "history_entry+manifest"),
    Scenario("cancel_task (already finished)", "cancel_task", "cancel_task", "queue+history_entry"),
    Scenario("list_workflows", "list_workflows", "list_workflows", "list_workflows"),
    Scenario("run_workflow (workflow cached)", "run_workflow", "run_workflow", "workflow_unchanged+prompt",
             comfy="sink"),
)


# -- child: counting ---------------------------------------------------------------------------------
@contextmanager
def watching_comfy(see: Callable[[str, str, dict[str, Any]], None]) -> Iterator[None]:
    """Call ``see(method, url, kwargs)`` before each request of comfy_core's client session."""
    from comfy_core.comfyui.client import get_client

    session = get_client().session
    original = session.request
    had_own = "request" in vars(session)  # already watched: put that wrapper back after

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        see(method, url, kwargs)
        return original(method, url, *args, **kwargs)

    session.request = request  # type: ignore[method-assign]
    try:
        yield
    finally:
        if had_own:
            session.request = original  # type: ignore[method-assign]
        else:
            del session.request


class Counters:
    """Round trips made during one call: ComfyUI requests (through comfy_core's client
    session), AWS operations (every botocore client), workflow bodies downloaded."""

    def __init__(self) -> None:
        self.comfy: list[str] = []
        self.aws: list[str] = []
        self.aws_ms: list[float] = []  # how long each AWS operation took, for the report
        self._watches = ExitStack()

    def __enter__(self) -> "Counters":
        self._watches.enter_context(watching_comfy(self._count_comfy))
        self._watch_aws()
        return self

    def __exit__(self, *exc: object) -> None:
        self._watches.close()

    def _count_comfy(self, method: str, url: str, kwargs: dict[str, Any]) -> None:
        path = url.split("://", 1)[-1].partition("/")[2].partition("?")[0]
        self.comfy.append(f"{method} /{_shown(path)}")

    def _watch_aws(self) -> None:
        if "botocore.client" not in sys.modules:
            return  # nothing loaded boto3: no AWS call can be made
        from botocore.client import BaseClient

        original = BaseClient._make_api_call
        counters = self

        def counting(client: Any, operation: str, params: dict[str, Any]) -> Any:
            service = client.meta.service_model.service_id
            conditional = " (If-None-Match)" if "IfNoneMatch" in params else ""
            counters.aws.append(f"{service} {operation}{conditional}")
            started = time.perf_counter_ns()
            try:
                return original(client, operation, params)
            finally:
                counters.aws_ms.append((time.perf_counter_ns() - started) / 1e6)

        BaseClient._make_api_call = counting  # type: ignore[method-assign]
        self._watches.callback(setattr, BaseClient, "_make_api_call", original)


def _downloads() -> int | None:
    from comfy_core.workflows import store as workflows

    # Only when this child built a store: asking get_store() would create one.
    return workflows.get_store().downloads if workflows.get_store.cache_info().currsize else None


# -- child: the run -------------------------------------------------------------------------------
def load_event(scenario: Scenario) -> dict[str, Any]:
    event = json.loads((EVENTS / f"{scenario.event}.json").read_text(encoding="utf-8"))
    if scenario.prompt_id:
        event["pathParameters"] = {**(event.get("pathParameters") or {}), "prompt_id": scenario.prompt_id}
        event["path"] = event["path"].rsplit("/", 1)[0] + f"/{scenario.prompt_id}"
    return event


def _status(answer: Any) -> str:
    if isinstance(answer, dict) and "body" in answer:
        body = json.loads(answer["body"])
        detail = body.get("status") if isinstance(body, dict) else None
        return f"{answer['statusCode']}" + (f" {detail}" if detail else "")
    return str(answer.get("status")) if isinstance(answer, dict) else type(answer).__name__


def _capture_prompt(call: Callable[[], Any]) -> dict[str, Any] | None:
    """Make one handler call and keep the body it POSTed to /prompt, if any."""
    seen: list[dict[str, Any]] = []

    def see(method: str, url: str, kwargs: dict[str, Any]) -> None:
        if method == "POST" and url.endswith("/prompt"):
            seen.append(json.loads(kwargs["data"]))

    with watching_comfy(see):
        call()
    return seen[0] if seen else None


def _aws_ms(handler: Callable[[], Any], first: Counters, repeats: int = 20) -> list[float]:
    """Median time of each AWS operation of a request, over a few more counted requests:
    what those round trips add to the handler's time."""
    samples = [first.aws_ms]
    for _ in range(repeats):
        with Counters() as counted:
            handler()
        if counted.aws == first.aws:
            samples.append(counted.aws_ms)
    return [statistics.median(column) for column in zip(*samples)]


def _timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter_ns()
    call()
    return (time.perf_counter_ns() - started) / 1e6


def child(scenario: Scenario, iterations: int) -> dict[str, Any]:
    import importlib

    module = importlib.import_module(f"functions.{scenario.function}.app")
    event = load_event(scenario)
    context = Context()

    def handler() -> Any:
        # The same event object each time (no copy inside the timing): handlers only read it.
        return module.lambda_handler(event, context)

    captured = _capture_prompt(handler)  # the cold request; also the POST body to copy
    direct = Direct(event, captured)
    recipe = RECIPES[scenario.direct]

    def baseline() -> Any:
        return recipe(direct)

    # Warm both sides (connection pools, caches, first-use imports) before timing.
    for _ in range(max(5, iterations // 10)):
        handler()
        baseline()
    handler_ms, direct_ms, overhead_ms = [], [], []
    for number in range(iterations):
        # Alternate who goes first so neither side always inherits the other's cache state.
        if number % 2 == 0:
            h, d = _timed(handler), _timed(baseline)
        else:
            d, h = _timed(baseline), _timed(handler)
        handler_ms.append(h)
        direct_ms.append(d)
        overhead_ms.append(h - d)

    downloads_before = _downloads()
    with Counters() as counted:
        answer = handler()
    downloads_after = _downloads()
    direct.calls.clear()
    baseline()
    report: dict[str, Any] = {
        "scenario": asdict(scenario),
        "iterations": iterations,
        "status": _status(answer),
        "comfy": counted.comfy,
        "aws": counted.aws,
        "aws_ms": _aws_ms(handler, counted) if iterations else counted.aws_ms,
        "downloads": None if downloads_after is None else downloads_after - (downloads_before or 0),
        "direct_calls": list(direct.calls),
    }
    if iterations:
        report.update(handler=summarise(handler_ms), direct=summarise(direct_ms),
                      overhead=summarise(overhead_ms))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.handlers")
    parser.add_argument("--child", required=True, help="scenario as JSON")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)
    fields = json.loads(args.child)
    fields["env"] = tuple(tuple(pair) for pair in fields.get("env", ()))  # JSON gave lists
    report = child(Scenario(**fields), args.iterations)
    args.result.write_text(json.dumps(report), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
