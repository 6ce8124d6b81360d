"""devtools.template + devtools.local_api: template reading, routing, events, responses.

Uses a tiny template and dummy handlers written to tmp_path, so nothing here
depends on the project's real handlers or template.
"""

from __future__ import annotations

import base64
import json
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from devtools import local_api
from devtools.dev import Scheduler
from devtools.local_api import (
    HttpRequest,
    Invoker,
    LocalApi,
    LocalLambda,
    build_event,
    find_route,
    match_path,
)
from devtools.template import Route, Template, rate_seconds
from tests.support.sam import TEMPLATE as REAL_TEMPLATE
from tests.support.waiting import wait_for

TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Greeting:
    Type: String
    Default: hello
  RequireKey:
    Type: String
    Default: "true"
  Subnets:
    Type: CommaDelimitedList
    Default: ""
Conditions:
  KeyRequired: !Equals [!Ref RequireKey, "true"]
  HasSubnets: !Not [!Equals [!Join ["", !Ref Subnets], ""]]
Globals:
  Function:
    Timeout: 7
    Environment:
      Variables:
        GREETING: !Ref Greeting
        BUCKET: !Ref DataBucket
        SHARED: from-globals
        REGION_TEXT: !Sub "${AWS::Region}/${AWS::AccountId}/${AWS::StackName}"
        OPTIONAL: !If [HasSubnets, "subnets", !Ref AWS::NoValue]
Resources:
  Api:
    Type: AWS::Serverless::Api
    Properties:
      StageName: test
      Auth:
        ApiKeyRequired: !If [KeyRequired, true, false]
  EchoFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fakefns/echo/
      Handler: app.lambda_handler
      Timeout: 9
      Environment:
        Variables:
          SHARED: from-function
          ARN: !GetAtt DataBucket.Arn
          PICK: !Select [1, [a, b, c]]
      Events:
        Item:
          Type: Api
          Properties: {RestApiId: !Ref Api, Path: "/items/{item_id}", Method: get}
        Special:
          Type: Api
          Properties: {RestApiId: !Ref Api, Path: /items/special, Method: get}
        Post:
          Type: Api
          Properties: {RestApiId: !Ref Api, Path: /items, Method: post}
        Files:
          Type: Api
          Properties: {RestApiId: !Ref Api, Path: "/files/{proxy+}", Method: any}
        Public:
          Type: Api
          Properties:
            RestApiId: !Ref Api
            Path: /public
            Method: get
            Auth: {ApiKeyRequired: false}
  BoomFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fakefns/boom/
      Handler: app.lambda_handler
      Events:
        Boom:
          Type: Api
          Properties: {RestApiId: !Ref Api, Path: /boom, Method: get}
        Bad:
          Type: Api
          Properties: {RestApiId: !Ref Api, Path: /malformed, Method: get}
  TickFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fakefns/tick/
      Handler: app.lambda_handler
      Events:
        Every:
          Type: ScheduleV2
          Properties: {ScheduleExpression: rate(5 minutes), Input: '{"sweep": true}'}
        Old:
          Type: Schedule
          Properties: {Schedule: "cron(0 * * * ? *)", Enabled: false}
  DataBucket:
    Type: AWS::S3::Bucket
"""

# Echoes the event and a few environment variables back, so tests can see
# exactly what the handler was given.
ECHO_HANDLER = """\
import base64, json, os

def lambda_handler(event, context):
    if event["path"] == "/files/image.bin":
        return {"statusCode": 200, "headers": {"Content-Type": "image/png"},
                "body": base64.b64encode(b"\\x89PNG\\r\\n").decode(), "isBase64Encoded": True}
    payload = {
        "event": event,
        "env": {k: os.environ.get(k) for k in ("GREETING", "SHARED", "BUCKET", "AWS_LAMBDA_FUNCTION_NAME")},
        "context": {"function_name": context.function_name,
                    "remaining": context.get_remaining_time_in_millis(),
                    "arn": context.invoked_function_arn},
    }
    return {"statusCode": 201, "headers": {"X-Single": "1"},
            "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]}, "body": json.dumps(payload)}
"""

BOOM_HANDLER = """\
def lambda_handler(event, context):
    if event["path"] == "/malformed":
        return "not a proxy response"
    raise RuntimeError("boom")
"""


# Remembers its events so tests can see scheduled and async invocations.
TICK_HANDLER = """\
CALLS = []

def lambda_handler(event, context):
    if event.get("fail"):
        raise ValueError("asked to fail")
    CALLS.append(event)
    return {"got": event, "function": context.function_name}
"""


@pytest.fixture
def template_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # A package name no other test uses, so module caching cannot mix them up.
    for name, source in (("echo", ECHO_HANDLER), ("boom", BOOM_HANDLER), ("tick", TICK_HANDLER)):
        folder = tmp_path / "fakefns" / name
        folder.mkdir(parents=True)
        (folder / "app.py").write_text(source)
    path = tmp_path / "template.yaml"
    path.write_text(TEMPLATE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield path
    import sys

    for module in [m for m in sys.modules if m == "fakefns" or m.startswith("fakefns.")]:
        del sys.modules[module]


@pytest.fixture
def api(template_path: Path) -> LocalApi:
    return LocalApi(template_path, port=0)


def request(method: str, path: str, query: str = "", body: bytes = b"", headers=None) -> HttpRequest:
    return HttpRequest(method, path, query, list(headers or [("Host", "127.0.0.1:3000")]), body)


def decoded(response) -> dict:
    return json.loads(response.body)


# ---------------------------------------------------------------- template


def test_template_functions_merge_environment_and_resolve_intrinsics(template_path: Path) -> None:
    template = Template.load(template_path)
    echo = template.function("EchoFunction")

    assert echo.code_uri == template_path.parent / "fakefns" / "echo"
    assert echo.handler == "app.lambda_handler"
    assert echo.timeout == 9  # own value beats Globals
    assert template.function("BoomFunction").timeout == 7
    assert echo.environment == {
        "GREETING": "hello",
        "BUCKET": "comfy-local-databucket",
        "SHARED": "from-function",  # the function's own variable wins
        "REGION_TEXT": "us-east-1/123456789012/comfy-local",
        "ARN": "arn:aws:s3:::comfy-local-databucket",
        "PICK": "b",
        # OPTIONAL is AWS::NoValue while Subnets is empty: the key is dropped
    }
    assert [b.name for b in template.buckets()] == ["comfy-local-databucket"]


def test_template_parameter_overrides_reach_conditions(template_path: Path) -> None:
    template = Template.load(
        template_path, {"Greeting": "hi", "Subnets": "subnet-1,subnet-2", "RequireKey": "false"}
    )
    echo = template.function("EchoFunction")
    assert echo.environment["GREETING"] == "hi"
    assert echo.environment["OPTIONAL"] == "subnets"
    assert not any(route.api_key_required for route in template.routes())


def test_template_routes_come_from_events(template_path: Path) -> None:
    routes = {(r.method, r.path): r for r in Template.load(template_path).routes()}
    assert set(routes) == {
        ("GET", "/items/{item_id}"),
        ("GET", "/items/special"),
        ("POST", "/items"),
        ("ANY", "/files/{proxy+}"),
        ("GET", "/public"),
        ("GET", "/boom"),
        ("GET", "/malformed"),
    }
    assert routes[("GET", "/items/{item_id}")].api_key_required is True  # from the Api resource
    assert routes[("GET", "/public")].api_key_required is False  # the event's Auth wins
    assert routes[("GET", "/boom")].function_id == "BoomFunction"
    assert routes[("GET", "/boom")].stage == "test"


# ---------------------------------------------------------------- matching


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("/api/workflows", "/api/workflows", {}),
        ("/api/workflows", "/api/workflows/", {}),
        ("/api/workflows", "/api/workflow", None),
        ("/api/image/{prompt_id}", "/api/image/abc-1", {"prompt_id": "abc-1"}),
        ("/api/image/{prompt_id}", "/api/image/a%20b", {"prompt_id": "a b"}),
        ("/api/image/{prompt_id}", "/api/image/a%2Fb", {"prompt_id": "a/b"}),
        ("/api/image/{prompt_id}", "/api/image/a/b", None),
        ("/api/image/{prompt_id}", "/api/image", None),
        ("/files/{proxy+}", "/files/a/b/c.png", {"proxy": "a/b/c.png"}),
        ("/files/{proxy+}", "/files", None),
    ],
)
def test_match_path(pattern: str, path: str, expected: dict | None) -> None:
    assert match_path(pattern, path) == expected


def test_find_route_prefers_literal_segments_and_reports_wrong_method(template_path: Path) -> None:
    routes = Template.load(template_path).routes()

    special = find_route(routes, "GET", "/items/special")
    assert special.route.path == "/items/special" and special.path_parameters == {}

    item = find_route(routes, "GET", "/items/42")
    assert item.route.path == "/items/{item_id}" and item.path_parameters == {"item_id": "42"}

    assert find_route(routes, "DELETE", "/files/x").route.method == "ANY"
    assert find_route(routes, "DELETE", "/items/42") is None  # path known, method not
    assert find_route(routes, "GET", "/nowhere") is None


# ---------------------------------------------------------------- events


def _route(path: str = "/items/{item_id}") -> Route:
    return Route(method="GET", path=path, function_id="EchoFunction", api_key_required=False, stage="test")


def test_event_has_api_gateway_v1_shape() -> None:
    req = HttpRequest(
        "GET", "/items/a%20b", "q=1&q=2&empty=",
        [("Host", "127.0.0.1:3000"), ("Accept", "a"), ("Accept", "b"), ("x-api-key", "k")], b"",
    )
    event = build_event(req, _route(), {"item_id": "a b"})

    assert event["resource"] == "/items/{item_id}"
    assert event["path"] == "/items/a b"
    assert event["httpMethod"] == "GET"
    assert event["pathParameters"] == {"item_id": "a b"}
    assert event["queryStringParameters"] == {"q": "2", "empty": ""}
    assert event["multiValueQueryStringParameters"] == {"q": ["1", "2"], "empty": [""]}
    assert event["headers"]["Accept"] == "b"
    assert event["multiValueHeaders"]["Accept"] == ["a", "b"]
    assert event["headers"]["X-Forwarded-Port"] == "3000"
    assert event["stageVariables"] is None
    assert event["body"] is None and event["isBase64Encoded"] is False

    context = event["requestContext"]
    assert context["resourcePath"] == "/items/{item_id}"
    assert context["httpMethod"] == "GET"
    assert context["stage"] == "test"
    assert context["path"] == "/test/items/a b"
    assert context["identity"]["sourceIp"] == "127.0.0.1"
    assert context["identity"]["apiKey"] == "k"
    assert len(context["requestId"]) == 36


def test_event_without_query_or_path_params_uses_none() -> None:
    event = build_event(request("POST", "/items", body=b'{"a": 1}'), _route("/items"), {})
    assert event["queryStringParameters"] is None
    assert event["multiValueQueryStringParameters"] is None
    assert event["pathParameters"] is None
    assert event["body"] == '{"a": 1}' and event["isBase64Encoded"] is False


def test_event_base64_encodes_binary_body() -> None:
    raw = b"\x89PNG\r\n\x1a\n\xff\xfe"
    event = build_event(request("POST", "/items", body=raw), _route("/items"), {})
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == raw


# ---------------------------------------------------------------- LocalApi.handle


class _StoppedClock:
    """The time module, but monotonic() does not move."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def monotonic() -> float:
        return 1000.0


def test_handler_gets_event_context_and_function_environment(api: LocalApi, monkeypatch) -> None:
    monkeypatch.setenv("SHARED", "outside")
    # The local API's clock stands still during the call: the context's remaining time is
    # the function's whole Timeout, however long the call takes on this machine.
    with monkeypatch.context() as frozen:
        frozen.setattr(local_api, "time", _StoppedClock())
        response = api.handle(request("GET", "/items/7", query="x=1"))

    assert response.status == 201
    payload = decoded(response)
    assert payload["event"]["pathParameters"] == {"item_id": "7"}
    assert payload["event"]["queryStringParameters"] == {"x": "1"}
    assert payload["env"] == {
        "GREETING": "hello",
        "SHARED": "from-function",
        "BUCKET": "comfy-local-databucket",
        "AWS_LAMBDA_FUNCTION_NAME": "comfy-local-EchoFunction",
    }
    assert payload["context"]["function_name"] == "comfy-local-EchoFunction"
    assert payload["context"]["remaining"] == 9000  # EchoFunction's own Timeout: 9 s
    assert payload["context"]["arn"].endswith(":function:comfy-local-EchoFunction")
    # The function's environment is only applied during the call.
    import os

    assert os.environ["SHARED"] == "outside"
    assert "GREETING" not in os.environ

    headers = response.headers
    assert ("X-Single", "1") in headers
    assert [v for n, v in headers if n == "Set-Cookie"] == ["a=1", "b=2"]
    assert ("Content-Type", "application/json") in headers  # API Gateway's default


def test_base64_response_is_decoded(api: LocalApi) -> None:
    response = api.handle(request("GET", "/files/image.bin"))
    assert response.status == 200
    assert response.body == b"\x89PNG\r\n"
    assert ("Content-Type", "image/png") in response.headers


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/nowhere"), ("GET", "/"), ("DELETE", "/items/1"), ("GET", "/items")]
)
def test_unknown_route_or_method_is_403_missing_token(api: LocalApi, method: str, path: str) -> None:
    response = api.handle(request(method, path))
    assert response.status == 403
    assert decoded(response) == {"message": "Missing Authentication Token"}


def test_handler_exception_is_502(api: LocalApi) -> None:
    response = api.handle(request("GET", "/boom"))
    assert response.status == 502
    assert decoded(response) == {"message": "Internal server error"}


def test_malformed_proxy_response_is_502(api: LocalApi) -> None:
    response = api.handle(request("GET", "/malformed"))
    assert response.status == 502
    assert decoded(response) == {"message": "Internal server error"}


def test_api_key_is_not_enforced_without_local_api_key(api: LocalApi) -> None:
    assert api.api_key is None
    assert api.handle(request("GET", "/items/1")).status == 201


def test_api_key_enforced_when_local_api_key_is_set(template_path: Path, monkeypatch) -> None:
    api = LocalApi(template_path, port=0, api_key="sekret")  # what `make dev` passes from LOCAL_API_KEY

    missing = api.handle(request("GET", "/items/1"))
    assert missing.status == 403 and decoded(missing) == {"message": "Forbidden"}
    wrong = api.handle(request("GET", "/items/1", headers=[("x-api-key", "nope")]))
    assert wrong.status == 403 and decoded(wrong) == {"message": "Forbidden"}
    assert api.handle(request("GET", "/items/1", headers=[("X-API-Key", "sekret")])).status == 201
    # A route whose event turns ApiKeyRequired off needs no key.
    assert api.handle(request("GET", "/public")).status != 403
    # Unknown routes still answer "Missing Authentication Token", key or not.
    assert decoded(api.handle(request("GET", "/nowhere"))) == {"message": "Missing Authentication Token"}


def test_env_overrides_win_over_template(template_path: Path) -> None:
    api = LocalApi(template_path, env_overrides={"GREETING": "override"}, port=0)
    assert decoded(api.handle(request("GET", "/items/1")))["env"]["GREETING"] == "override"


# ---------------------------------------------------------------- over a socket


def test_served_over_http(api: LocalApi) -> None:
    with api:
        assert api.url.startswith("http://127.0.0.1:")
        ok = requests.post(f"{api.url}/items", data=b"\xff\x00binary", timeout=5)
        assert ok.status_code == 201
        event = ok.json()["event"]
        assert event["isBase64Encoded"] is True
        assert base64.b64decode(event["body"]) == b"\xff\x00binary"
        assert ok.headers["X-Single"] == "1"

        missing = requests.get(f"{api.url}/nowhere", timeout=5)
        assert missing.status_code == 403
        assert missing.json() == {"message": "Missing Authentication Token"}

        image = requests.get(f"{api.url}/files/image.bin", timeout=5)
        assert image.content == b"\x89PNG\r\n"
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{api.url}/items/1", timeout=2)


def test_template_with_real_layout_loads(tmp_path: Path) -> None:
    """Layers built from the template are put on sys.path for the handlers."""
    (tmp_path / "layer" / "mylib").mkdir(parents=True)
    path = tmp_path / "template.yaml"
    path.write_text(textwrap.dedent("""\
        Resources:
          Lib:
            Type: AWS::Serverless::LayerVersion
            Properties: {ContentUri: layer/}
          Fn:
            Type: AWS::Serverless::Function
            Properties:
              CodeUri: fn/
              Handler: app.lambda_handler
              Layers: [!Ref Lib, "arn:aws:lambda:us-east-1:1:layer:other:1"]
    """))
    function = Template.load(path).function("Fn")
    assert function.layer_dirs == ((tmp_path / "layer").resolve(),)
    assert function.timeout == 3 and function.memory_size == 128  # Lambda defaults


DEFINITION_BODY_TEMPLATE = """\
Parameters:
  RequireKey: {Type: String, Default: "true"}
Conditions:
  KeyRequired: !Equals [!Ref RequireKey, "true"]
Resources:
  Api:
    Type: AWS::Serverless::Api
    Properties:
      StageName: v1
      DefinitionBody:
        swagger: "2.0"
        securityDefinitions:
          api_key: {type: apiKey, name: x-api-key, in: header}
        paths:
          /guarded: {get: {security: &security !If [KeyRequired, [{api_key: []}], []]}}
          /open: {get: {security: []}}
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Handler: app.lambda_handler
      Events:
        Guarded: {Type: Api, Properties: {RestApiId: !Ref Api, Path: /guarded, Method: get}}
        Open: {Type: Api, Properties: {RestApiId: !Ref Api, Path: /open, Method: get}}
"""


def test_api_key_requirement_read_from_definition_body_security(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(DEFINITION_BODY_TEMPLATE)

    required = {r.path: r.api_key_required for r in Template.load(path).routes()}
    assert required == {"/guarded": True, "/open": False}
    relaxed = Template.load(path, {"RequireKey": "false"}).routes()
    assert not any(route.api_key_required for route in relaxed)


def test_real_template_routes_require_a_key_by_default() -> None:
    overrides = {"ComfyUIBaseUrl": "http://127.0.0.1:8188"}
    routes = Template.load(REAL_TEMPLATE, overrides).routes()
    # Except Swagger UI's page and files (GET /api/docs...): a browser opening a page sends no key.
    open_routes = {(route.method, route.path) for route in routes if not route.api_key_required}
    assert open_routes == {("GET", "/api/docs"), ("GET", "/api/docs/{asset}")}
    assert len(routes) > len(open_routes)

    api = LocalApi(REAL_TEMPLATE, port=0, parameter_overrides=overrides, api_key="k")
    # Refused at the gateway: the handler is never called.
    refused = api.handle(request("GET", "/api/workflows"))
    assert refused.status == 403 and decoded(refused) == {
        "error": "Forbidden: missing or invalid x-api-key header", "status_code": 403}

    off = Template.load(REAL_TEMPLATE, {**overrides, "ApiKeyRequired": "false"}).routes()
    assert not any(route.api_key_required for route in off)


# ---------------------------------------------------------------- Lambda Invoke API and schedules


def test_template_schedules_and_rates(template_path: Path) -> None:
    (schedule,) = Template.load(template_path).schedules()  # the disabled one is left out
    assert schedule.function_id == "TickFunction"
    assert schedule.expression == "rate(5 minutes)"
    assert schedule.payload == {"sweep": True}

    assert rate_seconds("rate(1 minute)") == 60
    assert rate_seconds("rate(2 hours)") == 7200
    assert rate_seconds("cron(0 * * * ? *)") is None


def _tick_calls() -> list:
    import sys

    module = sys.modules.get("fakefns.tick.app")  # imported by the first invocation
    return module.CALLS if module else []


@pytest.fixture
def lambda_client(template_path: Path):
    import boto3

    with LocalLambda(Invoker(Template.load(template_path))) as server:
        yield boto3.client(
            "lambda", endpoint_url=server.url, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )


def test_local_lambda_speaks_the_invoke_api_boto3_uses(lambda_client) -> None:
    from botocore.exceptions import ClientError

    answer = lambda_client.invoke(FunctionName="comfy-local-TickFunction", Payload=b'{"a": 1}')
    assert answer["StatusCode"] == 200 and "FunctionError" not in answer
    assert json.loads(answer["Payload"].read()) == {"got": {"a": 1}, "function": "comfy-local-TickFunction"}

    arn = "arn:aws:lambda:us-east-1:123456789012:function:comfy-local-TickFunction:$LATEST"
    assert lambda_client.invoke(FunctionName=arn, Payload=b"{}")["StatusCode"] == 200

    failed = lambda_client.invoke(FunctionName="comfy-local-TickFunction", Payload=b'{"fail": true}')
    assert failed["FunctionError"] == "Unhandled"
    error = json.loads(failed["Payload"].read())
    assert error["errorType"] == "ValueError" and error["errorMessage"] == "asked to fail"

    with pytest.raises(ClientError) as missing:
        lambda_client.invoke(FunctionName="no-such-function", Payload=b"{}")
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_local_lambda_event_invocation_runs_later(lambda_client) -> None:
    answer = lambda_client.invoke(
        FunctionName="comfy-local-TickFunction", InvocationType="Event", Payload=b'{"later": 1}'
    )
    assert answer["StatusCode"] == 202
    wait_for(lambda: {"later": 1} in _tick_calls(), timeout=5.0, what="the Event invocation")


def test_scheduler_fires_schedules_as_async_invocations(template_path: Path) -> None:
    (schedule,) = Template.load(template_path).schedules()
    with LocalLambda(Invoker(Template.load(template_path))) as server:
        scheduler = Scheduler(server, [(schedule, 0.05)]).start()
        try:
            wait_for(lambda: _tick_calls().count({"sweep": True}) >= 2, timeout=5.0, what="two scheduled runs")
        finally:
            scheduler.stop()


def test_real_template_functions_share_one_environment_and_a_divergence_is_refused() -> None:
    """comfy_core caches settings per process and every local function runs in one process:
    a function with its own value for a variable comfy_core reads must stop the stack."""
    import dataclasses

    functions = Template.load(REAL_TEMPLATE, {"ComfyUIBaseUrl": "http://comfy.test:8188"}).functions()
    local_api.check_shared_environment(functions)  # the template as shipped: no conflict
    first, *rest = functions
    diverging = dataclasses.replace(first, environment={**first.environment, "COMFYUI_BASE_URL": "http://other:1"})
    with pytest.raises(local_api.EnvironmentConflict, match="COMFYUI_BASE_URL"):
        local_api.check_shared_environment([diverging, *rest])
    # A variable comfy_core never reads may differ.
    harmless = dataclasses.replace(first, environment={**first.environment, "SOMETHING_ELSE_ENTIRELY": "x"})
    local_api.check_shared_environment([harmless, *rest])


# ---------------------------------------------------------------- request framing over raw sockets


def _exchange(api: LocalApi, raw: bytes, *, responses: int = 1) -> list[tuple[int, dict[str, str], bytes]]:
    """Send raw bytes on one connection; read `responses` answers (status, headers, body).
    A server that never answers fails the test at the socket timeout instead of hanging it."""
    import socket

    answers = []
    with socket.create_connection((api.host, api.port), timeout=5) as sock:
        sock.sendall(raw)
        stream = sock.makefile("rb")
        for _ in range(responses):
            status_line = stream.readline()
            assert status_line, "the connection was closed without an answer"
            headers: dict[str, str] = {}
            while (line := stream.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = stream.read(int(headers.get("content-length", "0")))
            answers.append((int(status_line.split()[1]), headers, body))
    return answers


# API Gateway's request payload limit.
GATEWAY_MAX_BODY = 10 * 1024 * 1024


def _post(headers: str, body: bytes = b"") -> bytes:
    return f"POST /items HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode() + body


@pytest.mark.parametrize(
    "content_length",
    ["-1", "abc", "1.5", "+3", "0x10", "3, 4", ""],
)
def test_an_invalid_content_length_is_a_400_envelope_and_the_connection_closes(
    api: LocalApi, content_length: str
) -> None:
    # Before: -1 waited for the client to close, abc dropped the connection with a traceback.
    with api:
        ((status, headers, body),) = _exchange(api, _post(f"Content-Length: {content_length}\r\n", b"{}"))
    assert status == 400
    assert json.loads(body) == {"error": "Invalid Content-Length", "status_code": 400}
    assert headers["connection"] == "close"  # where the next request starts is unknown


def test_a_repeated_equal_content_length_is_one_length(api: LocalApi) -> None:
    with api:
        ((status, _, body),) = _exchange(api, _post("Content-Length: 2, 2\r\n", b"{}"))
    assert status == 201 and json.loads(body)["event"]["body"] == "{}"


def test_a_chunked_body_reaches_the_function_and_the_connection_stays_usable(api: LocalApi) -> None:
    # Before: the chunks were ignored and the function ran with no body at all.
    chunked = b'7;ext=1\r\n{"a": 1\r\n3\r\n, "\r\n7\r\nb": [2]\r\n1\r\n}\r\n0\r\nX-Trailer: t\r\n\r\n'
    second = _post("Content-Length: 8\r\n", b'{"c": 3}')
    with api:
        first, after = _exchange(
            api, _post("Transfer-Encoding: chunked\r\n", chunked) + second, responses=2
        )
    assert first[0] == 201
    assert json.loads(first[2])["event"]["body"] == '{"a": 1, "b": [2]}'
    assert after[0] == 201 and json.loads(after[2])["event"]["body"] == '{"c": 3}'


@pytest.mark.parametrize(
    ("headers", "body", "status", "error"),
    [
        ("Transfer-Encoding: chunked\r\n", b"zz\r\nab\r\n0\r\n\r\n", 400, "Invalid chunk size"),
        ("Transfer-Encoding: chunked\r\n", b"2\r\nabcdef\r\n0\r\n\r\n", 400, "Chunk longer than its size"),
        ("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n", 400,
         "Both Transfer-Encoding and Content-Length were sent"),
        ("Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n", 501,
         "Only Transfer-Encoding: chunked is supported"),
        (f"Content-Length: {GATEWAY_MAX_BODY + 1}\r\n", b"", 413,
         f"Request body larger than {GATEWAY_MAX_BODY} bytes"),
        ("Transfer-Encoding: chunked\r\n", f"{GATEWAY_MAX_BODY + 1:x}\r\n".encode(), 413,
         f"Request body larger than {GATEWAY_MAX_BODY} bytes"),
    ],
)
def test_a_body_the_gateway_cannot_frame_is_refused_before_any_function_runs(
    api: LocalApi, headers: str, body: bytes, status: int, error: str
) -> None:
    with api:
        ((answered, answer_headers, payload),) = _exchange(api, _post(headers, body))
    assert (answered, json.loads(payload)) == (status, {"error": error, "status_code": status})
    assert answer_headers["connection"] == "close"


def test_the_real_templates_gateway_responses_are_applied() -> None:
    """API Gateway's own answers, from the template's GatewayResponses, in the envelope: an
    unknown route or method is a 404 (a REST API's default is 403 "Missing Authentication
    Token"), a wrong key a 403, a body over 10 MB a 413."""
    api = LocalApi(REAL_TEMPLATE, port=0, parameter_overrides={"ComfyUIBaseUrl": "http://127.0.0.1:8188"},
                   api_key="k")
    for method, path in (("GET", "/api/no_such_route"), ("DELETE", "/api/workflows"), ("GET", "/")):
        answer = api.handle(request(method, path))
        assert (answer.status, decoded(answer)) == (
            404, {"error": "No such route (path or method)", "status_code": 404})
    wrong = api.handle(request("GET", "/api/workflows", headers=[("x-api-key", "nope")]))
    assert (wrong.status, decoded(wrong)["status_code"]) == (403, 403)
    too_large = api.refuse(413, "Request body larger than 10485760 bytes")
    assert (too_large.status, decoded(too_large)["status_code"]) == (413, 413)
    assert "POST /api/uploads" in decoded(too_large)["error"]


def test_gateway_response_defaults_and_message_templates(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(DEFINITION_BODY_TEMPLATE.replace("      StageName: v1\n", """\
      StageName: v1
      GatewayResponses:
        DEFAULT_4XX:
          StatusCode: 400
          ResponseTemplates: {application/json: '{"error": $context.error.messageString, "status_code": 400}'}
"""))
    (tmp_path / "fn").mkdir()
    api = LocalApi(path, port=0, api_key="k")
    answer = api.handle(request("GET", "/nowhere"))
    assert (answer.status, decoded(answer)) == (400, {"error": "Missing Authentication Token", "status_code": 400})
