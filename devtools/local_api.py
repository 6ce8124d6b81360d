"""Serve a SAM template's Api events over HTTP, calling the real handlers in-process.

It plays the part of API Gateway (REST API, Lambda proxy integration) for local
runs and tests: routes come from ``template.yaml``, each request becomes the
same v1 proxy event a deployed API sends, and the handler's proxy response
becomes the HTTP response. No Docker: the handler modules are imported here.

``LocalLambda`` serves the Lambda Invoke API for the same functions, so a
handler that calls ``lambda.invoke`` (e.g. to start the archiver) reaches them.
"""

from __future__ import annotations

import base64
import importlib
import json
import logging
import os
import queue
import re
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO, Callable, Mapping, Self
from urllib.parse import parse_qsl, unquote, urlsplit

from devtools.template import ACCOUNT_ID, REGION, Function, Route, Template, TemplateError

log = logging.getLogger("local_api")

MISSING_TOKEN = {"message": "Missing Authentication Token"}
FORBIDDEN = {"message": "Forbidden"}
INTERNAL_ERROR = {"message": "Internal server error"}
# API Gateway's payload limit: a larger request body never reaches a function.
MAX_REQUEST_BODY = 10 * 1024 * 1024


# --------------------------------------------------------------------------
# Route matching (API Gateway semantics)
# --------------------------------------------------------------------------


def _segments(path: str) -> list[str]:
    # API Gateway ignores a trailing slash and empty segments.
    return [segment for segment in path.split("/") if segment]


def match_path(template_path: str, raw_path: str) -> dict[str, str] | None:
    """Path parameters if ``raw_path`` fits ``template_path``, else None.

    Literal segments must be equal, ``{name}`` takes exactly one segment and a
    final ``{name+}`` takes one or more. The raw path is split before decoding
    so that an encoded ``%2F`` stays inside its parameter.
    """
    pattern = _segments(template_path)
    actual = _segments(raw_path)
    params: dict[str, str] = {}
    for index, part in enumerate(pattern):
        if part.startswith("{") and part.endswith("+}"):
            rest = actual[index:]
            if not rest:
                return None
            params[part[1:-2]] = unquote("/".join(rest))
            return params
        if index >= len(actual):
            return None
        if part.startswith("{") and part.endswith("}"):
            params[part[1:-1]] = unquote(actual[index])
        elif part != unquote(actual[index]):
            return None
    return params if len(actual) == len(pattern) else None


def _specificity(route: Route) -> tuple[int, ...]:
    # Lower sorts first: literal segments beat {param}, which beats {proxy+}.
    def rank(segment: str) -> int:
        if segment.endswith("+}"):
            return 2
        return 1 if segment.startswith("{") else 0

    return tuple(rank(segment) for segment in _segments(route.path))


@dataclass(frozen=True)
class Match:
    route: Route
    path_parameters: dict[str, str]


def find_route(routes: list[Route], method: str, raw_path: str) -> Match | None:
    """The route API Gateway would pick, or None (no such path, or not with this method:
    REST APIs answer both with the same 403)."""
    path_matches = [
        (route, params)
        for route in routes
        if (params := match_path(route.path, raw_path)) is not None
    ]
    if not path_matches:
        return None
    # API Gateway picks the most specific resource first, then its method
    # (an exact method beats ANY on that same resource). Only the few routes
    # whose path fits are ranked; min() keeps the first of equals, like a stable sort.
    best_resource = min(path_matches, key=lambda pair: _specificity(pair[0]))[0].path
    for wanted in (method.upper(), "ANY"):
        for route, params in path_matches:
            if route.path == best_resource and route.method == wanted:
                return Match(route, params)
    return None


# --------------------------------------------------------------------------
# Proxy event / response
# --------------------------------------------------------------------------


@dataclass
class HttpRequest:
    method: str
    raw_path: str  # as sent, without the query string
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    source_ip: str = "127.0.0.1"


def _multi(pairs: list[tuple[str, str]]) -> dict[str, list[str]] | None:
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return grouped or None  # API Gateway sends null, not {}, when there are none


def _last(multi: dict[str, list[str]] | None) -> dict[str, str] | None:
    return {key: values[-1] for key, values in multi.items()} if multi else None


def encode_body(body: bytes) -> tuple[str | None, bool]:
    """(body, isBase64Encoded): text stays text, non-UTF-8 bytes go base64."""
    if not body:
        return None, False
    try:
        return body.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), True


def build_event(request: HttpRequest, route: Route, path_parameters: Mapping[str, str]) -> dict[str, Any]:
    """The API Gateway REST (v1) Lambda proxy event for ``request``."""
    headers = list(request.headers)
    names = {name.lower() for name, _ in headers}
    host = next((value for name, value in headers if name.lower() == "host"), "127.0.0.1")
    # API Gateway adds these before the integration sees the request.
    for name, value in (
        ("X-Forwarded-For", request.source_ip),
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Port", host.rpartition(":")[2] if ":" in host else "80"),
    ):
        if name.lower() not in names:
            headers.append((name, value))

    multi_headers = _multi(headers)
    multi_query = _multi(parse_qsl(request.query, keep_blank_values=True))
    body, is_base64 = encode_body(request.body)
    path = unquote(request.raw_path)
    header_map = {name.lower(): value for name, value in headers}
    now = datetime.now(timezone.utc)
    return {
        "resource": route.path,
        "path": path,
        "httpMethod": request.method,
        "headers": _last(multi_headers),
        "multiValueHeaders": multi_headers,
        "queryStringParameters": _last(multi_query),
        "multiValueQueryStringParameters": multi_query,
        "pathParameters": dict(path_parameters) or None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "local",
            "resourcePath": route.path,
            "httpMethod": request.method,
            "extendedRequestId": str(uuid.uuid4()),
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "path": f"/{route.stage}{path}",
            "accountId": ACCOUNT_ID,
            "protocol": "HTTP/1.1",
            "stage": route.stage,
            "domainName": host,
            "requestId": str(uuid.uuid4()),
            "apiId": "local",
            "identity": {
                "sourceIp": request.source_ip,
                "userAgent": header_map.get("user-agent"),
                "apiKey": header_map.get("x-api-key"),
                "apiKeyId": "local" if "x-api-key" in header_map else None,
                "accountId": None,
                "caller": None,
                "user": None,
                "userArn": None,
                "cognitoIdentityId": None,
                "cognitoIdentityPoolId": None,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
            },
        },
        "body": body,
        "isBase64Encoded": is_base64,
    }


@dataclass
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def json_response(status: int, payload: Any) -> HttpResponse:
    return HttpResponse(status, [("Content-Type", "application/json")], json.dumps(payload).encode())


def proxy_response(result: Any) -> HttpResponse:
    """Turn a handler's proxy response into HTTP; malformed ones give 502 like API Gateway."""
    if not isinstance(result, dict) or "statusCode" not in result:
        raise ValueError(f"malformed Lambda proxy response: {result!r:.200}")
    body = result.get("body") or ""
    if not isinstance(body, str):
        raise ValueError("malformed Lambda proxy response: body must be a string")
    raw = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode("utf-8")

    headers: list[tuple[str, str]] = []
    single = result.get("headers") or {}
    multi = result.get("multiValueHeaders") or {}
    for name, value in single.items():
        if name not in multi:  # multiValueHeaders win for a name present in both
            headers.append((name, str(value)))
    for name, values in multi.items():
        headers.extend((name, str(value)) for value in values)
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("Content-Type", "application/json"))  # API Gateway's default
    return HttpResponse(int(result["statusCode"]), headers, raw)


# --------------------------------------------------------------------------
# Invoking handlers
# --------------------------------------------------------------------------


class LambdaContext:
    """The parts of the Lambda context object handlers and Powertools read."""

    def __init__(self, function: Function) -> None:
        self.function_name = function.name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = function.memory_size
        self.invoked_function_arn = function.arn
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function.name}"
        self.log_stream_name = f"local/{self.aws_request_id}"
        self._deadline = time.monotonic() + function.timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


# Environment variables are process-wide, so only one handler may run at a time
# in this process, whichever server called it; Lambda gives each container one
# event at a time anyway.
_INVOKE_LOCK = threading.Lock()


class InvokeBusy(RuntimeError):
    """Another handler kept the process busy for longer than the caller may wait."""


# The layer package that caches what it reads from the environment once per process
# (settings, clients): in Lambda once per container, here once for every function.
PROCESS_CACHED_PACKAGE = "comfy_core"
_NAME_LITERAL = re.compile(r"""["']([A-Z][A-Z0-9_]*)["']""")


class EnvironmentConflict(TemplateError):
    """Functions differ in a variable that the shared layer caches per process."""


def _process_cached_names(functions: list[Function]) -> set[str]:
    """Upper-case string literals in the process-cached package of the functions' layers:
    every environment variable it can read (and a few other constants, harmlessly)."""
    names: set[str] = set()
    folders = {folder / PROCESS_CACHED_PACKAGE for function in functions for folder in function.layer_dirs}
    for folder in folders:
        for source in folder.rglob("*.py"):
            names.update(_NAME_LITERAL.findall(source.read_text(encoding="utf-8")))
    return names


def check_shared_environment(functions: list[Function], overrides: Mapping[str, str] | None = None) -> None:
    """Fail when two functions give different values to a variable comfy_core reads.

    Every handler runs in this one process and comfy_core reads its settings once per
    process, so whichever function ran first would silently decide them for all. Today
    the template gives every function the same environment (Globals); this keeps it so.
    """
    overrides = overrides or {}
    declared = set().union(*(function.environment for function in functions))
    for name in sorted(declared & _process_cached_names(functions)):
        by_value: dict[str | None, list[str]] = {}
        for function in functions:
            value = overrides.get(name, function.environment.get(name))
            by_value.setdefault(value, []).append(function.logical_id)
        if len(by_value) > 1:
            shown = "; ".join(f"{value!r} in {', '.join(ids)}" for value, ids in by_value.items())
            raise EnvironmentConflict(
                f"{name} differs between functions ({shown}). The local stack runs every function "
                f"in one process and {PROCESS_CACHED_PACKAGE} caches its settings per process, so "
                "the first function to run would decide it for all: give every function the same "
                "value (template Globals), or override it for all (env_overrides)."
            )


class Invoker:
    """Imports handlers and calls them one at a time with their own environment."""

    def __init__(self, template: Template, env_overrides: Mapping[str, str] | None = None) -> None:
        self.template = template
        self.env_overrides = dict(env_overrides or {})
        self.functions = {function.logical_id: function for function in template.functions()}
        check_shared_environment(list(self.functions.values()), self.env_overrides)
        self._handlers: dict[str, Callable[[dict, Any], Any]] = {}

    def find(self, name: str) -> Function | None:
        """The function a Lambda API caller means: logical id, name, or (partial) ARN."""
        if ":function:" in name:  # arn:aws:lambda:region:acct:function:NAME[:qualifier]
            name = name.split(":function:", 1)[1].split(":", 1)[0]
        for function in self.functions.values():
            if name in (function.name, function.logical_id):
                return function
        return None

    def environment(self, function: Function) -> dict[str, str]:
        return {
            "AWS_REGION": os.environ.get("AWS_DEFAULT_REGION", REGION),
            "AWS_LAMBDA_FUNCTION_NAME": function.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_size),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(function.timeout),
            # What `sam local` sets; Powertools Tracer turns itself off on it.
            "AWS_SAM_LOCAL": "true",
            **function.environment,
            **self.env_overrides,
        }

    def invoke(self, function_id: str, event: Any, wait: float | None = None) -> Any:
        """Call the handler; ``wait`` bounds the time spent queueing behind another one."""
        function = self.functions[function_id]
        if not _INVOKE_LOCK.acquire(timeout=-1 if wait is None else wait):
            raise InvokeBusy(function_id)
        try:
            with patched_environ(self.environment(function)):
                handler = self._handler(function)
                return handler(event, LambdaContext(function))
        finally:
            _INVOKE_LOCK.release()

    def _handler(self, function: Function) -> Callable[[dict, Any], Any]:
        if function.logical_id not in self._handlers:
            module_name, _, attribute = function.handler.rpartition(".")
            module = self._import(function, module_name)
            self._handlers[function.logical_id] = getattr(module, attribute)
        return self._handlers[function.logical_id]

    def _import(self, function: Function, module_name: str) -> ModuleType:
        # Layers are on sys.path in Lambda (/opt/python); the template's folder
        # is the root of the dotted path "functions.<dir>.app".
        for folder in (*function.layer_dirs, self.template.root):
            if str(folder) not in sys.path:
                sys.path.insert(0, str(folder))
        relative = function.code_uri.relative_to(self.template.root)
        dotted = ".".join((*relative.parts, module_name))
        return importlib.import_module(dotted)


class patched_environ:
    """Set variables (for one invocation, or a stack's life) and put the previous values back after."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = values
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        self.saved = {name: os.environ.get(name) for name in self.values}
        os.environ.update(self.values)

    def __exit__(self, *exc_info: object) -> None:
        for name, value in self.saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --------------------------------------------------------------------------
# The HTTP server
# --------------------------------------------------------------------------


class _BackgroundServer:
    """An HTTP server on its own thread; subclasses answer requests in ``handle``."""

    thread_name = "local-server"

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def handle(self, request: HttpRequest) -> HttpResponse:
        raise NotImplementedError

    def refuse(self, status: int, message: str) -> HttpResponse:
        """The answer to a request whose body cannot be read (bad framing, too large)."""
        return error_envelope(status, message)

    def start(self) -> Self:
        self._server = _Server((self.host, self.port), _make_handler(self.handle, self.refuse))
        self.port = self._server.server_address[1]  # the real port when 0 was asked
        # A short poll interval keeps stop() (and so test teardown) quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name=self.thread_name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class LocalApi(_BackgroundServer):
    """API Gateway stand-in for a SAM template, served from a background thread."""

    thread_name = "local-api"

    def __init__(
        self,
        template: Template | str | Path,
        env_overrides: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 3000,
        *,
        parameter_overrides: Mapping[str, Any] | None = None,
        api_key: str | None = None,
    ) -> None:
        """``template``: a loaded Template (read once by the caller) or the path of one.
        ``api_key``: enforce x-api-key on the routes that require it; None (the default,
        as most local calls carry no key) lets every request through."""
        super().__init__(host, port)
        if not isinstance(template, Template):
            template = Template.load(template, parameter_overrides)
        elif parameter_overrides:
            template = template.with_parameters(parameter_overrides)
        self.template = template
        self.routes = template.routes()
        self.gateway_responses = template.gateway_responses()
        self.invoker = Invoker(template, env_overrides)
        self.api_key = api_key or None

    def gateway_answer(self, kind: str, status: int, message: str) -> HttpResponse:
        """API Gateway's own answer of response type `kind` (its default: `status` with
        `{"message": message}`), as the template's GatewayResponses change it: the type's
        own entry, else DEFAULT_4XX / DEFAULT_5XX for its status class."""
        fallback = "DEFAULT_4XX" if status < 500 else "DEFAULT_5XX"
        configured = self.gateway_responses.get(kind) or self.gateway_responses.get(fallback)
        if configured is None:
            return json_response(status, {"message": message})
        configured_status, body = configured
        status = configured_status or status
        if body is None:
            return json_response(status, {"message": message})
        rendered = body.replace("$context.error.messageString", json.dumps(message))
        rendered = rendered.replace("$context.error.message", message)
        return HttpResponse(status, [("Content-Type", "application/json")], rendered.encode("utf-8"))

    def refuse(self, status: int, message: str) -> HttpResponse:
        configured = {"REQUEST_TOO_LARGE", "DEFAULT_4XX"} & set(self.gateway_responses)
        if status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE and configured:
            return self.gateway_answer("REQUEST_TOO_LARGE", status, "Request Too Long")
        return super().refuse(status, message)

    def handle(self, request: HttpRequest) -> HttpResponse:
        """One request end to end; separate from the socket code so tests can call it."""
        started = time.monotonic()
        function_id, response = self._answer(request)
        # The one line per request `make dev` prints (the gateway's own answers say "-").
        log.info("%s %s -> %s %s (%.0f ms)", request.method, request.raw_path, function_id or "-",
                 response.status, (time.monotonic() - started) * 1000)
        return response

    def _answer(self, request: HttpRequest) -> tuple[str | None, HttpResponse]:
        """(the function that answered, or None when the gateway did; the response)."""
        match = find_route(self.routes, request.method, request.raw_path)
        if match is None:
            # REST APIs answer an unknown path, or a known path with a method it does not
            # have, with this 403 (not 404/405) unless GatewayResponses change it.
            return None, self.gateway_answer("MISSING_AUTHENTICATION_TOKEN", HTTPStatus.FORBIDDEN,
                                             MISSING_TOKEN["message"])
        route = match.route
        if route.api_key_required and self.api_key is not None:
            sent = {name.lower(): value for name, value in request.headers}.get("x-api-key")
            if sent != self.api_key:
                return None, self.gateway_answer("INVALID_API_KEY", HTTPStatus.FORBIDDEN,
                                                 FORBIDDEN["message"])

        event = build_event(request, route, match.path_parameters)
        try:
            return route.function_id, proxy_response(self.invoker.invoke(route.function_id, event))
        except Exception:  # noqa: BLE001 - any handler failure is a 502 at the gateway
            log.error("%s failed:\n%s", route.function_id, traceback.format_exc())
            return route.function_id, self.gateway_answer("INTEGRATION_FAILURE", HTTPStatus.BAD_GATEWAY,
                                                          INTERNAL_ERROR["message"])


# --------------------------------------------------------------------------
# The Lambda Invoke API (what boto3's lambda.invoke calls)
# --------------------------------------------------------------------------

_INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations/?$")


def lambda_error(status: int, error_type: str, message: str) -> HttpResponse:
    # botocore reads the error code from this header (rest-json protocol).
    body = json.dumps({"Type": "User", "message": message}).encode()
    return HttpResponse(
        status, [("Content-Type", "application/json"), ("x-amzn-ErrorType", error_type)], body
    )


class LocalLambda(_BackgroundServer):
    """Lets handlers invoke the template's other functions through the real Lambda API.

    Point boto3 at it with AWS_ENDPOINT_URL_LAMBDA. ``Event`` invocations are
    queued and run one after another on a worker thread, as an async invoke
    returns before the function runs; ``RequestResponse`` runs right away.
    """

    thread_name = "local-lambda"

    def __init__(self, invoker: Invoker, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.invoker = invoker
        self._queue: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        self._worker: threading.Thread | None = None

    def start(self) -> Self:
        self._worker = threading.Thread(target=self._run_queued, name="local-lambda-async", daemon=True)
        self._worker.start()
        return super().start()

    def stop(self) -> None:
        super().stop()
        if self._worker is not None:
            # Invocations still waiting are dropped; the running one finishes first.
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put(None)
            self._worker.join()
            self._worker = None

    def invoke_async(self, function_id: str, payload: Any) -> None:
        self._queue.put((function_id, payload))

    def _run_queued(self) -> None:
        while (job := self._queue.get()) is not None:
            function_id, payload = job
            try:
                result = self.invoker.invoke(function_id, payload)
                log.info("async %s -> %.200s", function_id, json.dumps(result, default=str))
            except Exception:  # noqa: BLE001 - an async failure only gets logged, as in Lambda
                log.error("async %s failed:\n%s", function_id, traceback.format_exc())

    def handle(self, request: HttpRequest) -> HttpResponse:
        match = _INVOKE_PATH.match(request.raw_path)
        if request.method != "POST" or match is None:
            return lambda_error(HTTPStatus.NOT_FOUND, "UnknownOperationException", "Unknown operation")
        name = unquote(match.group("name"))
        function = self.invoker.find(name)
        if function is None:
            return lambda_error(
                HTTPStatus.NOT_FOUND, "ResourceNotFoundException", f"Function not found: {name}"
            )
        try:
            payload = json.loads(request.body or b"{}")
        except ValueError:
            return lambda_error(
                HTTPStatus.BAD_REQUEST,
                "InvalidRequestContentException",
                "Could not parse request body into json",
            )

        invocation_type = {k.lower(): v for k, v in request.headers}.get("x-amz-invocation-type")
        if invocation_type == "DryRun":
            return HttpResponse(HTTPStatus.NO_CONTENT, [], b"")
        if invocation_type == "Event":
            self.invoke_async(function.logical_id, payload)
            return HttpResponse(HTTPStatus.ACCEPTED, [], b"")
        return self._invoke_now(function, payload)

    def _invoke_now(self, function: Function, payload: Any) -> HttpResponse:
        headers = [("Content-Type", "application/json"), ("X-Amz-Executed-Version", "$LATEST")]
        try:
            # Bounded: a handler that invokes synchronously would otherwise wait on itself.
            result = self.invoker.invoke(function.logical_id, payload, wait=function.timeout)
        except InvokeBusy:
            return lambda_error(HTTPStatus.TOO_MANY_REQUESTS, "TooManyRequestsException", "Rate Exceeded.")
        except Exception as error:  # noqa: BLE001 - reported to the caller like Lambda does
            body = {
                "errorMessage": str(error),
                "errorType": type(error).__name__,
                "stackTrace": traceback.format_tb(error.__traceback__),
            }
            headers.append(("X-Amz-Function-Error", "Unhandled"))
            return HttpResponse(HTTPStatus.OK, headers, json.dumps(body).encode())
        return HttpResponse(HTTPStatus.OK, headers, json.dumps(result, default=str).encode())


class BodyError(Exception):
    """A request body that cannot be read as framed: answered, then the connection closed
    (where the next request would start is unknown)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ClientGone(Exception):
    """The client closed the connection in the middle of its body: nobody to answer."""


_DIGITS = re.compile(r"[0-9]+")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
# Longest chunk-size line (extensions included) and trailer line read, and most trailers.
_MAX_LINE = 4096
_MAX_TRAILERS = 100


def read_body(headers: Message, rfile: BinaryIO, limit: int = MAX_REQUEST_BODY) -> bytes:
    """The request body as framed by Transfer-Encoding (chunked) or Content-Length, as API
    Gateway reads it; BodyError for a framing it refuses, ClientGone for one cut short."""
    codings = [part.strip().lower() for value in headers.get_all("Transfer-Encoding") or []
               for part in value.split(",") if part.strip()]
    lengths = [part.strip() for value in headers.get_all("Content-Length") or [] for part in value.split(",")]
    if codings:
        if lengths:  # two framings: the classic request-smuggling ambiguity
            raise BodyError(HTTPStatus.BAD_REQUEST, "Both Transfer-Encoding and Content-Length were sent")
        if codings != ["chunked"]:
            raise BodyError(HTTPStatus.NOT_IMPLEMENTED, "Only Transfer-Encoding: chunked is supported")
        return _read_chunked(rfile, limit)
    if not lengths:
        return b""
    # Repeated equal values are one length (RFC 9110); anything else cannot frame a body.
    if len(set(lengths)) != 1 or not _DIGITS.fullmatch(lengths[0]):
        raise BodyError(HTTPStatus.BAD_REQUEST, "Invalid Content-Length")
    length = int(lengths[0])
    if length > limit:
        raise BodyError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"Request body larger than {limit} bytes")
    body = rfile.read(length)
    if len(body) < length:
        raise ClientGone
    return body


def _read_line(rfile: BinaryIO, what: str) -> bytes:
    line = rfile.readline(_MAX_LINE + 1)
    if len(line) > _MAX_LINE:
        raise BodyError(HTTPStatus.BAD_REQUEST, f"{what} line too long")
    if not line.endswith(b"\n"):
        raise ClientGone
    return line


def _read_chunked(rfile: BinaryIO, limit: int) -> bytes:
    body = bytearray()
    while True:
        size_text = _read_line(rfile, "Chunk size").split(b";", 1)[0].strip()
        if not _CHUNK_SIZE.fullmatch(size_text):
            raise BodyError(HTTPStatus.BAD_REQUEST, "Invalid chunk size")
        size = int(size_text, 16)
        if size == 0:
            break
        if len(body) + size > limit:
            raise BodyError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"Request body larger than {limit} bytes")
        chunk = rfile.read(size)
        if len(chunk) < size:
            raise ClientGone
        body += chunk
        if _read_line(rfile, "Chunk end") not in (b"\r\n", b"\n"):
            raise BodyError(HTTPStatus.BAD_REQUEST, "Chunk longer than its size")
    for _ in range(_MAX_TRAILERS):  # trailer fields are read past and dropped
        if _read_line(rfile, "Trailer") in (b"\r\n", b"\n"):
            return bytes(body)
    raise BodyError(HTTPStatus.BAD_REQUEST, "Too many trailer fields")


def error_envelope(status: int, message: str) -> HttpResponse:
    """The project's error body, for requests refused before any function runs."""
    return json_response(status, {"error": message, "status_code": int(status)})


class _Server(ThreadingHTTPServer):
    # Lets `make dev` restart on the same port right after a stop.
    allow_reuse_address = True
    daemon_threads = True


def _make_handler(
    handle: Callable[[HttpRequest], HttpResponse], refuse: Callable[[int, str], HttpResponse]
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "comfy-local"
        # Headers and body go out in separate writes: without TCP_NODELAY, Nagle plus the
        # client's delayed ACK add ~40 ms to every keep-alive request.
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            try:
                body = read_body(self.headers, self.rfile)
            except ClientGone:
                self.close_connection = True
                return
            except BodyError as refused:
                self.close_connection = True
                self._answer(refuse(refused.status, refused.message))
                return
            url = urlsplit(self.path)
            request = HttpRequest(
                method=self.command,
                raw_path=url.path or "/",
                query=url.query,
                headers=list(self.headers.items()),
                body=body,
                source_ip=self.client_address[0],
            )
            self._answer(handle(request))

        def _answer(self, response: HttpResponse) -> None:
            self.send_response(response.status)
            for name, value in response.headers:
                if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _serve

        def __getattr__(self, name: str) -> Any:
            # Any other method (TRACE, QUERY, ...) is routed too: API Gateway answers it
            # with its 403, where http.server would answer 501.
            if name.startswith("do_"):
                return self._serve
            raise AttributeError(name)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug("%s %s", self.address_string(), format % args)

    return Handler
