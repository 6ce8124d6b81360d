"""A moto server in its own process that enforces IAM on every call the functions make.

moto checks a signed request against the caller's policies once IAM authorization is on
(INITIAL_NO_AUTH_ACTION_COUNT=0), but what it checks differs by service (moto 5.2.5):

- S3: the IAM action of the request (GetObject, GetObjectVersion with ``versionId``,
  PutObject for every multipart step, AbortMultipartUpload...) on the bucket or object ARN.
- SQS: the action on the queue's ARN.
- STS AssumeRole: the caller's policies and the role's trust policy.
- Every other service (DynamoDB, EventBridge, SSM, Lambda, CloudWatch): the action against
  the resource ``*``. An Allow scoped to an ARN never matches ``*``, so the template's
  scoped statements would all be denied. Moto also names Lambda's Invoke ``lambda:Invoke``
  where IAM says ``lambda:InvokeFunction``.
- Condition blocks are not evaluated (only StringEquals against values moto collects for
  trust policies): the ``s3:prefix`` condition on ListBucket is not checked.
- A presigned S3 request (SigV4 in the query string, no Authorization header) crashes moto's
  IAM check (a 500): it only reads the header.

So this process teaches moto the resource of the calls comfy_core makes on the services
moto leaves at ``*`` (DynamoDB items by table, PutEvents by bus, GetParameter by
parameter, Invoke by function), maps Invoke to its IAM action, checks presigned requests as
S3 does (the query signature of the signer's key, its expiry; then the signer's permissions
for the action, as for any request), and logs every decision
(principal, action, resource, allowed) as a JSON line, so a test sees denials that the
code swallows (events, archiver requests and webhooks never raise).

Run as ``python -m tests.support.iam_moto LOG_FILE`` from the repository root; it prints
one JSON line (port and an administrator's access key) and serves until stdin closes.
`IamMotoServer` does all of that for a test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account
ADMIN_USER = "iam-tier-admin"

# Operation names (as moto reports them) whose IAM action has another name.
IAM_ACTION_NAMES = {"lambda:Invoke": "lambda:InvokeFunction"}

_FUNCTION_IN_PATH = re.compile(r"/functions/(?P<name>[^/]+)/invocations/?$")


# -- inside the server process -------------------------------------------------------------
def _arn(service: str, region: str, account: str, resource: str) -> str:
    return f"arn:aws:{service}:{region}:{account}:{resource}"


def _dynamodb_resource(self: Any) -> str:
    # Item and table calls name one table (the idempotency or the prompt-state table).
    name = self._get_param("TableName")
    return _arn("dynamodb", self.region, self.current_account, f"table/{name}") if name else "*"


def _events_resource(self: Any) -> str:
    if self._get_action() != "PutEvents":
        return "*"
    buses = {entry.get("EventBusName") or "default" for entry in self._get_param("Entries") or []}
    if len(buses) != 1:
        return "*"  # one resource per check: a mixed batch needs a grant on every bus
    (bus,) = buses
    if bus.startswith("arn:"):
        return bus
    return _arn("events", self.region, self.current_account, f"event-bus/{bus}")


def _ssm_resource(self: Any) -> str:
    if self._get_action() != "GetParameter":
        return "*"
    name = str(self._get_param("Name") or "")
    if name.startswith("arn:"):
        return name
    # The ARN of "/a/b" is ...:parameter/a/b, of "a" ...:parameter/a.
    return _arn("ssm", self.region, self.current_account, f"parameter/{name.lstrip('/')}")


def _lambda_resource(self: Any) -> str:
    match = _FUNCTION_IN_PATH.search(self.path.split("?", 1)[0])
    if match is None:
        return "*"
    name = unquote(match.group("name"))
    qualifier = self.querystring.get("Qualifier", [None])[0]
    arn = name if name.startswith("arn:") else _arn("lambda", self.region, self.current_account,
                                                    f"function:{name}")
    return f"{arn}:{qualifier}" if qualifier else arn


class DecisionLog:
    """Every authorization decision as one JSON line (written before the answer is sent)."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the server
        self._lock = threading.Lock()

    def write(self, principal: str, action: str, resource: str, allowed: bool) -> None:
        line = json.dumps(
            {"principal": principal, "action": action, "resource": resource, "allowed": allowed})
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()


def _query_auth(path: str) -> dict[str, str] | None:
    """The SigV4 query parameters of a presigned request's path, or None."""
    query = path.partition("?")[2]
    params = {key: unquote(value) for key, _, value in (pair.partition("=") for pair in query.split("&"))}
    return params if "X-Amz-Signature" in params and "X-Amz-Credential" in params else None


def _presigned_signature(request: Any, params: dict[str, str]) -> str:
    """What S3 computes for a presigned request: botocore's own query signer over the request
    as received (signed headers only, the query without the signature, unsigned payload)."""
    from botocore.auth import S3SigV4QueryAuth
    from botocore.awsrequest import AWSRequest

    _, date, region, service, _ = params["X-Amz-Credential"].split("/")
    path, _, query = request._path.partition("?")
    unsigned = "&".join(pair for pair in query.split("&") if not pair.startswith("X-Amz-Signature="))
    signed = params["X-Amz-SignedHeaders"].split(";")
    headers = {name: value for name, value in request._headers.items() if name.lower() in signed}
    host = next(value for name, value in request._headers.items() if name.lower() == "host")
    aws_request = AWSRequest(method=request._method, url=f"http://{host}{path}?{unsigned}", headers=headers)
    aws_request.context["timestamp"] = params["X-Amz-Date"]
    auth = S3SigV4QueryAuth(request._access_key.create_credentials(), service, region,
                            expires=int(params["X-Amz-Expires"]))
    canonical = auth.canonical_request(aws_request)
    return auth.signature(auth.string_to_sign(aws_request, canonical), aws_request)


def _expired(params: dict[str, str]) -> bool:
    import datetime

    signed_at = datetime.datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(
        tzinfo=datetime.timezone.utc)
    ends = signed_at + datetime.timedelta(seconds=int(params["X-Amz-Expires"]))
    return datetime.datetime.now(datetime.timezone.utc) > ends


def install(log: DecisionLog) -> None:
    """Patch moto (this process only) as the module docstring says."""
    from moto.awslambda.responses import LambdaResponse
    from moto.dynamodb.responses import DynamoHandler
    from moto.events.responses import EventsHandler
    from moto.iam import access_control
    from moto.ssm.responses import SimpleSystemManagerResponse

    # BaseResponse.call_action authorizes against `_determine_resource()` when defined.
    DynamoHandler._determine_resource = _dynamodb_resource  # type: ignore[attr-defined]
    EventsHandler._determine_resource = _events_resource  # type: ignore[attr-defined]
    SimpleSystemManagerResponse._determine_resource = _ssm_resource  # type: ignore[attr-defined]
    LambdaResponse._determine_resource = _lambda_resource  # type: ignore[attr-defined]

    base = access_control.IAMRequestBase
    original_init, original_check = base.__init__, base.check_action_permitted
    original_signature = base.check_signature

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        headers = kwargs["headers"]
        params = _query_auth(kwargs["path"]) if headers.get("Authorization") is None else None
        if params is not None:
            # Moto reads the key, scope and session token from headers: give it those of the
            # query, and check the signature against the query (check_signature below).
            kwargs["headers"] = {
                **dict(headers.items()),
                "Authorization": f"AWS4-HMAC-SHA256 Credential={params['X-Amz-Credential']}, "
                                 f"SignedHeaders={params['X-Amz-SignedHeaders']}, "
                                 f"Signature={params['X-Amz-Signature']}",
                **({"X-Amz-Security-Token": params["X-Amz-Security-Token"]}
                   if "X-Amz-Security-Token" in params else {}),
            }
        self._query_auth = params
        original_init(self, *args, **kwargs)
        self._action = IAM_ACTION_NAMES.get(self._action, self._action)

    def check_signature(self: Any) -> None:
        params = self._query_auth
        if params is None:
            original_signature(self)
            return
        if _presigned_signature(self, params) != params["X-Amz-Signature"]:
            self._raise_signature_does_not_match()
        if _expired(params):
            self._raise_access_denied()

    def check_action_permitted(self: Any, resource: str) -> None:
        principal = self._access_key.arn
        try:
            original_check(self, resource)
        except BaseException:
            log.write(principal, self._action, resource, False)
            raise
        log.write(principal, self._action, resource, True)

    base.__init__ = __init__  # type: ignore[method-assign]
    base.check_signature = check_signature  # type: ignore[method-assign]
    base.check_action_permitted = check_action_permitted  # type: ignore[method-assign]


def _bootstrap_admin(endpoint: str) -> dict[str, str]:
    """An administrator user and its key, made while authorization is still off. The only
    unauthenticated calls this server ever answers: nobody else knows its port yet."""
    import boto3

    iam = boto3.client(
        "iam", endpoint_url=endpoint, region_name=REGION,
        aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap",
    )
    iam.create_user(UserName=ADMIN_USER)
    everything = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    iam.put_user_policy(UserName=ADMIN_USER, PolicyName="admin", PolicyDocument=json.dumps(everything))
    key = iam.create_access_key(UserName=ADMIN_USER)["AccessKey"]
    return {"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]}


def serve(log_path: str) -> None:
    import logging

    from moto import settings
    from moto.moto_api._internal.models import moto_api_backend
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    install(DecisionLog(log_path))
    # Invocations answer without running anything (no Docker): the IAM check is the point.
    moto_api_backend.set_config({"lambda": {"use_docker": False}})
    enforced = settings.INITIAL_NO_AUTH_ACTION_COUNT
    settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    admin = _bootstrap_admin(f"http://{host}:{port}")
    settings.INITIAL_NO_AUTH_ACTION_COUNT = enforced
    print(json.dumps({"port": port, **admin}), flush=True)
    sys.stdin.read()  # until the test process closes our stdin (or dies)
    # Nothing to save (the log is flushed per line): ending the process ends the server,
    # without waiting for its polling loop.
    os._exit(0)


# -- in the test process --------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    principal: str
    action: str
    resource: str
    allowed: bool


class IamMotoServer:
    """The server process, its endpoint, an administrator's credentials and the decision log."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.endpoint = ""
        self.admin: dict[str, str] = {}
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> "IamMotoServer":
        self.log_path.write_text("")
        env = {
            key: value for key, value in os.environ.items()
            if not key.startswith("AWS_") and key not in ("PYTHONPATH",)
        }
        env.update({
            "INITIAL_NO_AUTH_ACTION_COUNT": "0",  # every request is authenticated and authorized
            "MOTO_IAM_LOAD_MANAGED_POLICIES": "true",  # AWSLambdaBasicExecutionRole & co. exist
            "PYTHONPATH": str(ROOT),
        })
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.iam_moto", str(self.log_path)],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        stdout: IO[str] = self._process.stdout  # type: ignore[assignment]
        line = stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError("the IAM moto server did not start")
        started = json.loads(line)
        self.endpoint = f"http://127.0.0.1:{started['port']}"
        self.admin = {"aws_access_key_id": started["access_key_id"],
                      "aws_secret_access_key": started["secret_access_key"]}
        return self

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._process = None

    def __enter__(self) -> "IamMotoServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def admin_client(self, service: str) -> Any:
        import boto3

        return boto3.session.Session().client(
            service, endpoint_url=self.endpoint, region_name=REGION, **self.admin
        )

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def decisions(self, since: int = 0) -> list[Decision]:
        """The decisions logged after byte `since` of the log (see `log_size`)."""
        with open(self.log_path, "rb") as log:
            log.seek(since)
            lines = log.read().decode("utf-8").splitlines()
        return [Decision(**json.loads(line)) for line in lines if line]


if __name__ == "__main__":
    serve(sys.argv[1])
