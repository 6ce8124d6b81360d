"""Run the whole API locally without Docker: ``python -m devtools.dev`` (``make dev``).

Starts, in one process: a moto server, a ComfyUI stand-in or several (a fleet, issue 13;
none when ``COMFYUI_BASE_URL`` names real ComfyUIs), the local API Gateway that calls
the real handlers from ``template.yaml``, the Lambda Invoke API for functions
that invoke each other, and the template's schedules. Handlers reach them
through ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_LAMBDA``, so their code is the
one that runs in Lambda. The template's event sources work too
(devtools/local_triggers.py): the jobs queue is polled like Lambda's event source
mapping, and events put on the local bus (S3's "Object Created" among them) run the
functions whose EventBridge rules match.

Environment: PORT (API, default 3000), MOTO_PORT (default: a free port),
COMFYUI_BASE_URL (one real ComfyUI, or a fleet's list ``[name=]url,...``), COMFYUI_STANDINS
(stand-ins to start when COMFYUI_BASE_URL is unset, default 1; several are a fleet named
standin-1..N), STANDIN_DELAY (stand-in seconds per prompt, default 1.0),
ARCHIVE_EVERY (seconds between scheduled runs, default: the template's rate;
0 turns schedules off), LOCAL_API_KEY (enforce x-api-key where required),
WATCHER (0: no live watcher; default on: WatcherFunction runs in a child process,
restarted on its schedule's ticks, and is stopped with the stack), SQS_RETRY_SECONDS
(seconds before a failed queue message or event invocation is tried again; default: as
in AWS, the queue's VisibilityTimeout and Lambda's one and two minutes), VERBOSE (1: the
functions' own JSON logs and metrics too; by default one line per request, and only the
functions' warnings and errors).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlsplit

import boto3
from botocore.exceptions import ClientError

from devtools.local_api import PROCESS_CACHED_PACKAGE, LocalApi, LocalLambda, patched_environ
from devtools.local_triggers import LocalTriggers
from devtools.template import REGION, Schedule, Template, TemplateError, rate_seconds

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TEMPLATE = REPO_ROOT / "template.yaml"
WORKFLOWS_DIR = REPO_ROOT / "workflows"
COMFYUI_PARAMETER = "ComfyUIBaseUrl"
PUBLIC_URL_PARAMETER = "ComfyUIPublicUrl"
# Stand-ins of a local fleet are named like this (1-based); names are what prompt-state
# records, metrics and answers (`backend`) carry.
STANDIN_NAME = "standin-{}"
DEFAULT_SCHEDULE_SECONDS = 60.0  # for cron expressions, which are not replayed exactly
# Runs for minutes per invocation: in a child process (devtools/watcher_runner.py), never on
# the stack's in-process invoker, which runs one handler at a time.
WATCHER_FUNCTION = "WatcherFunction"
STANDIN_PROGRESS_STEPS = 10
# What the functions run with when their own logs are off: their warnings and errors still
# show, their INFO lines and metric blobs (EMF JSON on stdout) do not.
QUIET_FUNCTIONS = {"POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_METRICS_DISABLED": "true"}


def aws_environment(endpoint: str) -> dict[str, str]:
    """Variables the handlers need to talk to moto instead of AWS."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }


class Scheduler:
    """Fires the template's schedules as async invocations, like EventBridge would."""

    def __init__(self, lambda_api: LocalLambda, schedules: list[tuple[Schedule, float]]) -> None:
        self.lambda_api = lambda_api
        self.schedules = schedules  # (schedule, seconds between runs)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="local-scheduler", daemon=True)

    def start(self) -> "Scheduler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        # A new rate schedule first fires one period after it is created.
        due = [time.monotonic() + every for _, every in self.schedules]
        while not self._stop.wait(max(0.0, min(due) - time.monotonic())):
            now = time.monotonic()
            for index, (schedule, every) in enumerate(self.schedules):
                if due[index] <= now:
                    self.lambda_api.invoke_async(schedule.function_id, schedule.payload)
                    due[index] = now + every


class LocalStack:
    """moto + ComfyUI (stand-ins or given) + LocalApi + LocalLambda + schedules, as one.

    ComfyUI: ``comfyui_base_url`` when given (one URL, or a fleet's ``[name=]url,...``
    list; nothing is started), else ``standins`` stand-ins. One stand-in is the single
    server a deployment with one ComfyUI has (backend ``default``); several are a fleet,
    ``standin-1..N``, each with its own root folder and, with ``standin_models``, its own
    checkpoints (so a test can give backends different capabilities).
    """

    def __init__(
        self,
        port: int = 0,
        comfyui_base_url: str | None = None,
        standin_delay: float = 0.2,
        *,
        template_path: str | Path = DEFAULT_TEMPLATE,
        workflows_dir: str | Path = WORKFLOWS_DIR,
        moto_port: int = 0,
        host: str = "127.0.0.1",
        schedule_every: float | None = None,
        api_key: str | None = None,
        watch: bool = False,
        watcher_log: Any = None,
        parameter_overrides: dict[str, str] | None = None,
        retry_seconds: float | None = None,
        function_logs: bool = True,
        standins: int = 1,
        standin_models: list[list[str]] | None = None,
    ) -> None:
        if standins < 1:
            raise ValueError("standins: at least 1")
        if standin_models is not None and len(standin_models) != standins:
            raise ValueError(f"standin_models: one list per stand-in ({standins}), got {len(standin_models)}")
        self.port = port
        self.comfyui_base_url = comfyui_base_url
        self.standin_delay = standin_delay
        self.standin_count = standins
        self.standin_models = standin_models
        self.template_path = Path(template_path)
        self.workflows_dir = Path(workflows_dir)
        self.moto_port = moto_port
        self.host = host
        # None: each schedule's own rate; 0: no scheduled runs; else seconds for all.
        self.schedule_every = schedule_every
        # x-api-key the local API enforces where the template requires one; None: not enforced.
        self.api_key = api_key
        # The live watcher in a child process; its output goes to `watcher_log` (a file
        # object; None: this process's stderr).
        self.watch = watch
        self.watcher_log = watcher_log
        self.watcher: subprocess.Popen[bytes] | None = None
        # Template parameters beyond the ComfyUI ones this stack sets itself.
        self.parameter_overrides = dict(parameter_overrides or {})
        # A failed queue message / event invocation is tried again after this many
        # seconds; None: the queue's VisibilityTimeout and Lambda's delays, as in AWS.
        self.retry_seconds = retry_seconds
        self.triggers: LocalTriggers | None = None
        # The functions' own JSON logs (at the template's LogLevel) and metrics; False:
        # their warnings and errors only (`make dev` without VERBOSE=1).
        self.function_logs = function_logs

        self.standins: list[Any] = []  # the ComfyUIStandIns we started, standin-1 first
        # (name, URL) of every backend the functions are given, in COMFYUI_BASE_URL's order;
        # kept apart from the stand-ins, whose base_url is gone once one is stopped.
        self.backends: list[tuple[str, str]] = []
        self.comfyui_url = ""  # COMFYUI_BASE_URL as the functions get it
        self.template: Template | None = None  # read once per start, with this stack's parameters
        self.api: LocalApi | None = None
        self.lambda_api: LocalLambda | None = None
        self.scheduler: Scheduler | None = None
        self.moto_endpoint = ""  # AWS_ENDPOINT_URL: every AWS service the handlers use, not only S3
        self.buckets: dict[str, str] = {}  # logical id -> local bucket name
        self._moto: Any = None
        self._tmp_dirs: list[str] = []
        self._environment = contextlib.ExitStack()  # process-wide variables, undone by stop()

    @property
    def api_url(self) -> str:
        assert self.api is not None, "start() first"
        return self.api.url

    @property
    def standin(self) -> Any:
        """The first stand-in (None against a real ComfyUI): what a one-server stack has."""
        return self.standins[0] if self.standins else None

    @property
    def s3_endpoint(self) -> str:
        """The old name of ``moto_endpoint``."""
        return self.moto_endpoint

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> "LocalStack":
        try:
            self._start_moto()
            self.comfyui_url = comfyui_url = self.comfyui_base_url or self._start_standins()
            self.backends = named_backends(comfyui_url)
            self.template = template = self._load_template(comfyui_url)
            self._create_buckets(template)
            self._create_tables(template)
            self._create_queues(template)
            self._upload_workflows(template)
            self.api = LocalApi(template, self.function_overrides(), host=self.host, port=self.port,
                                api_key=self.api_key)
            # Function-to-function calls (lambda.invoke) reach the same handlers.
            self.lambda_api = LocalLambda(self.api.invoker, host=self.host).start()
            self._environment.enter_context(patched_environ({"AWS_ENDPOINT_URL_LAMBDA": self.lambda_api.url}))
            # Settings and clients cached by an earlier stack in this process point at its
            # (maybe stopped) moto and ComfyUI: start like a new deployment.
            reset_container_state()
            self._start_schedules(template)
            self.triggers = LocalTriggers(
                template, self.api.invoker.invoke, self.client, retry_seconds=self.retry_seconds
            ).start()
            self.api.start()
        except BaseException:
            self.stop()  # never leave half a stack running
            raise
        return self

    def stop(self) -> None:
        """Stop in reverse order; safe to call twice or after a failed start."""
        if self.api is not None:
            self.api.stop()  # harmless when it never started
            self.api = None
        if self.triggers is not None:
            self.triggers.stop()
            self.triggers = None
        if self.scheduler is not None:
            self.scheduler.stop()
            self.scheduler = None
        self.stop_watcher()
        if self.lambda_api is not None:
            self.lambda_api.stop()
            self.lambda_api = None
        for standin in self.standins:
            standin.stop()  # a no-op for one a test stopped already
        self.standins = []
        for folder in self._tmp_dirs:
            shutil.rmtree(folder, ignore_errors=True)
        self._tmp_dirs = []
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        self._environment.close()
        # Clients built while this stack ran point at its moto, now gone.
        reset_container_state()

    def __enter__(self) -> "LocalStack":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- pieces --------------------------------------------------------------

    def _start_moto(self) -> None:
        from moto.server import ThreadedMotoServer

        self._moto = ThreadedMotoServer(ip_address=self.host, port=self.moto_port, verbose=False)
        self._moto.start()
        host, port = self._moto.get_host_and_port()
        self.moto_endpoint = f"http://{host}:{port}"
        # Process-wide on purpose: the handlers run in this process and build
        # their boto3 clients from these variables (boto3 >= 1.28 reads AWS_ENDPOINT_URL).
        self._environment.enter_context(patched_environ(aws_environment(self.moto_endpoint)))

    def _start_schedules(self, template: Template) -> None:
        if self.watch:
            self.start_watcher()
        if self.schedule_every == 0 or self.lambda_api is None:
            return
        timed = [
            (schedule, self.schedule_every or rate_seconds(schedule.expression) or DEFAULT_SCHEDULE_SECONDS)
            for schedule in template.schedules()
            if schedule.function_id != WATCHER_FUNCTION
        ]
        if timed:
            self.scheduler = Scheduler(self.lambda_api, timed).start()

    def start_watcher(self) -> None:
        """WatcherFunction in a child process with its own environment (as in Lambda), on its
        schedule's ticks; a no-op when the template has none (LiveWatcher off)."""
        assert self.template is not None
        schedule = next((s for s in self.template.schedules() if s.function_id == WATCHER_FUNCTION), None)
        if schedule is None or self.watcher is not None:
            return
        function = self.template.function(WATCHER_FUNCTION)
        tick = rate_seconds(schedule.expression) or DEFAULT_SCHEDULE_SECONDS
        module = ".".join((*function.code_uri.relative_to(self.template.root).parts, "app"))
        environment = {**self.child_environment(WATCHER_FUNCTION), **self.function_overrides(),
                       "PYTHONUNBUFFERED": "1"}
        self.watcher = subprocess.Popen(
            [sys.executable, "-m", "devtools.watcher_runner", module, str(function.timeout), str(tick)],
            env=environment, cwd=str(self.template.root), stdin=subprocess.DEVNULL,
            stdout=self.watcher_log, stderr=self.watcher_log,
        )

    def function_overrides(self) -> dict[str, str]:
        """Variables every function runs with on top of the template's."""
        return {} if self.function_logs else dict(QUIET_FUNCTIONS)

    def stop_watcher(self) -> None:
        """End the watcher process (its lease lapses by itself). Safe when none runs."""
        process, self.watcher = self.watcher, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _start_standins(self) -> str:
        """Start the stand-ins; the COMFYUI_BASE_URL value that names them."""
        # Imported here so a run against a real ComfyUI does not need it.
        from devtools.comfyui_standin import ComfyUIStandIn

        for index in range(self.standin_count):
            # Each its own root: a real fleet's servers share no output or input folder.
            root = tempfile.mkdtemp(prefix=f"comfy-standin-{index + 1}-")
            self._tmp_dirs.append(root)
            models = self.standin_models[index] if self.standin_models is not None else None
            standin = ComfyUIStandIn(root_dir=root, host=self.host, delay=self.standin_delay,
                                     models=models)
            self.standins.append(standin)  # before start(): stop() then cleans up a half start
            standin.start()
            # Step progress on the socket during each prompt's work, as a sampler reports it.
            standin.ws.progress_steps = STANDIN_PROGRESS_STEPS
        if len(self.standins) == 1:
            # Unnamed: the backend is `default`, as in a deployment with one ComfyUI.
            return str(self.standins[0].base_url)
        return ",".join(f"{STANDIN_NAME.format(index + 1)}={standin.base_url}"
                        for index, standin in enumerate(self.standins))

    def _load_template(self, comfyui_url: str) -> Template:
        # An override the template does not declare is ignored; parameters lists the declared.
        # Locally the developer can open ComfyUI's /view links: show them in image `url`s
        # (deployed, `url` stays null unless ComfyUIPublicUrl is set): one per backend, in
        # COMFYUI_BASE_URL's order, as a fleet's functions read the list.
        public_url = os.environ.get("COMFYUI_PUBLIC_URL") or ",".join(url for _, url in named_backends(comfyui_url))
        template = Template.load(
            self.template_path,
            {**self.parameter_overrides, COMFYUI_PARAMETER: comfyui_url, PUBLIC_URL_PARAMETER: public_url},
        )
        if COMFYUI_PARAMETER not in template.parameters:
            logging.getLogger("dev").warning(
                "template has no %s parameter; handlers may not find ComfyUI", COMFYUI_PARAMETER
            )
        return template

    def client(self, service: str) -> Any:
        """A boto3 client of this stack's moto."""
        return boto3.client(service, endpoint_url=self.moto_endpoint, region_name=REGION)

    def _s3(self) -> Any:
        return self.client("s3")

    def empty_bucket(self, logical_id: str) -> None:
        """Delete every object of one of the template's buckets (moto keeps them in memory)."""
        s3, bucket = self._s3(), self.buckets[logical_id]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents") or []:
                s3.delete_object(Bucket=bucket, Key=item["Key"])

    def child_environment(self, function_id: str, template: Template | None = None) -> dict[str, str]:
        """The environment to run one of the template's functions in a child process.

        Built from scratch, as Lambda builds it: the function's variables from the template
        (``template``: this stack's, or the same one with other parameter values), moto's
        endpoint and dummy credentials, the folder of the handlers and the function's layers
        on PYTHONPATH, and PATH. Nothing else of this process's environment: not the
        developer's AWS profile or config files, and not AWS_ENDPOINT_URL_LAMBDA, so a
        child's lambda.invoke never runs a function inside this process.
        """
        template = template or self.template
        assert template is not None and self.moto_endpoint, "start() first"
        function = template.function(function_id)
        return {
            "PATH": os.environ.get("PATH", os.defpath),
            **aws_environment(self.moto_endpoint),
            # Lambda has no shared config files; neither do the children.
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            **function.environment,
            "PYTHONPATH": os.pathsep.join(str(folder) for folder in (template.root, *function.layer_dirs)),
        }

    def _create_tables(self, template: Template) -> None:
        """The template's DynamoDB tables (idempotency records) in moto."""
        dynamodb = self.client("dynamodb")
        for table in template.tables():
            try:
                dynamodb.create_table(**table)
            except ClientError as error:
                if error.response["Error"]["Code"] != "ResourceInUseException":  # second stack
                    raise

    def _create_buckets(self, template: Template) -> None:
        s3 = self._s3()
        for bucket in template.buckets():
            try:
                s3.create_bucket(Bucket=bucket.name)
            except ClientError as error:
                # moto keeps state per process: a second stack finds them already there.
                if error.response["Error"]["Code"] not in (
                    "BucketAlreadyOwnedByYou", "BucketAlreadyExists"
                ):
                    raise
            if bucket.versioned:
                s3.put_bucket_versioning(Bucket=bucket.name, VersioningConfiguration={"Status": "Enabled"})
            if bucket.eventbridge:  # moto then sends "Object Created" ... to the buses' rules
                s3.put_bucket_notification_configuration(
                    Bucket=bucket.name, NotificationConfiguration={"EventBridgeConfiguration": {}})
            self.buckets[bucket.logical_id] = bucket.name

    def _create_queues(self, template: Template) -> None:
        """The template's queues with their attributes (the redrive policy among them:
        moto moves a message to the dead-letter queue after maxReceiveCount receives)."""
        sqs = self.client("sqs")
        for queue in template.queues():
            try:
                sqs.create_queue(QueueName=queue.name, Attributes=queue.attributes)
            except ClientError as error:
                # A second stack in this process, maybe with other parameters: same queue, its
                # attributes as this template says.
                if "QueueAlreadyExists" not in error.response["Error"]["Code"]:
                    raise
                if queue.attributes:
                    sqs.set_queue_attributes(QueueUrl=queue.url, Attributes=queue.attributes)

    def _upload_workflows(self, template: Template) -> None:
        bucket, prefix = workflow_location(template)
        if bucket is None:
            logging.getLogger("dev").warning("no function has WORKFLOW_BUCKET; workflows not uploaded")
            return
        s3 = self._s3()
        for path in sorted(self.workflows_dir.glob("*.json")):
            s3.upload_file(
                str(path), bucket, f"{prefix}{path.name}", ExtraArgs={"ContentType": "application/json"}
            )


def reset_container_state() -> None:
    """Drop what the shared layer caches per process (settings, clients), as a new
    container would start without it. Nothing to drop before a handler has loaded it."""
    package = sys.modules.get(PROCESS_CACHED_PACKAGE)
    if package is not None:
        package.reset_container_state()


def workflow_location(template: Template) -> tuple[str | None, str]:
    """(bucket, prefix) the functions read workflows from, per their environment."""
    for function in template.functions():
        bucket = function.environment.get("WORKFLOW_BUCKET")
        if bucket:
            return bucket, function.environment.get("WORKFLOW_PREFIX", "workflows/")
    return None, "workflows/"


def named_backends(comfyui_base_url: str) -> list[tuple[str, str]]:
    """(name, URL) of each entry of COMFYUI_BASE_URL (`url` or `name=url`), in its order,
    named as the functions name them (comfy_core/fleet/backends.py): a lone unnamed URL is
    `default`, unnamed ones of a list are named after their host and port. Read here rather
    than imported: importing the layer in this process before a handler runs would create
    its logger with this process's environment instead of the functions'. The two are
    compared in tests/e2e/test_dev_command.py (the banner's names are the answers' `backend`)."""
    entries = [entry.strip() for entry in comfyui_base_url.split(",") if entry.strip()]
    backends = []
    for entry in entries:
        name, sep, url = entry.partition("=")
        if not sep or "://" in name:  # no name given (a URL's query may hold '=')
            name, url = "", entry
        url = url.strip().rstrip("/")
        if not name.strip():
            name = "default" if len(entries) == 1 else _name_for_url(url)
        backends.append((name.strip(), url))
    return backends


def _name_for_url(url: str) -> str:
    parts = urlsplit(url)
    host = re.sub(r"[^a-z0-9]+", "-", (parts.hostname or "").lower()).strip("-") or "comfyui"
    return (f"{host}-{parts.port}" if parts.port else host)[:40].rstrip("-")


def banner(stack: LocalStack) -> str:
    if stack.standins:
        delay = f"delay {stack.standin_delay}s"
        if len(stack.standins) == 1:
            comfyui = [f"stand-in at {stack.backends[0][1]} ({delay})"]
        else:
            comfyui = [f"{len(stack.standins)} stand-ins, a fleet ({delay}):",
                       *(f"  {name} at {url}" for name, url in stack.backends)]
    elif len(stack.backends) > 1:
        comfyui = [f"{len(stack.backends)} backends (COMFYUI_BASE_URL):",
                   *(f"  {name} at {url}" for name, url in stack.backends)]
    else:
        comfyui = [f"{stack.comfyui_base_url} (COMFYUI_BASE_URL)"]
    buckets = ", ".join(f"{name} ({lid})" for lid, name in stack.buckets.items()) or "none"
    api_key = " (x-api-key enforced)" if stack.api and stack.api.api_key else ""
    schedules = ", ".join(
        f"{schedule.function_id} every {every:g}s" for schedule, every in stack.scheduler.schedules
    ) if stack.scheduler else "off"
    return "\n".join([
        f"API:       {stack.api_url}{api_key}",
        f"ComfyUI:   {comfyui[0]}",
        *(f"           {line}" for line in comfyui[1:]),
        f"Buckets:   {buckets}",
        f"Moto:      {stack.moto_endpoint} (AWS_ENDPOINT_URL)",
        f"Lambda:    {stack.lambda_api.url if stack.lambda_api else '-'} (AWS_ENDPOINT_URL_LAMBDA)",
        f"Schedules: {schedules}",
        f"Triggers:  {stack.triggers.describe() if stack.triggers else 'off'}",
        f"Watcher:   {'pid ' + str(stack.watcher.pid) + ' (WatcherFunction, own process)' if stack.watcher else 'off'}",
        f"Try:       curl -s {stack.api_url}/api/workflows",
        "",
        "For the AWS CLI (v1 or v2), boto3 and `make invoke` in another terminal:",
        *(f"  export {name}={value}" for name, value in shell_environment(stack).items()),
        "",
        "Ctrl-C to stop.",
    ])


def shell_environment(stack: LocalStack) -> dict[str, str]:
    """What another terminal needs to reach this stack: dummy credentials, the region, the
    endpoints (every AWS service on moto, Lambda on the local Invoke API), and ComfyUI."""
    values = {**aws_environment(stack.moto_endpoint)}
    if stack.lambda_api is not None:
        values["AWS_ENDPOINT_URL_LAMBDA"] = stack.lambda_api.url
    # Every backend, as the functions get them: `make invoke` with these lines sees the same
    # fleet (and records the same backend names) as the stack's own functions.
    values["COMFYUI_BASE_URL"] = stack.comfyui_url
    return values


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devtools.dev", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "3000")))
    parser.add_argument("--moto-port", type=int, default=int(os.environ.get("MOTO_PORT", "0")))
    parser.add_argument("--template", default=str(DEFAULT_TEMPLATE))
    parser.add_argument("-v", "--verbose", action="store_true", default=os.environ.get("VERBOSE", "0") not in ("", "0"),
                        help="the functions' JSON logs and metrics too (VERBOSE=1)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # Quiet the per-request chatter of moto, botocore and the stand-in's sockets: the local
    # API's one line per request says what happened.
    for noisy in ("werkzeug", "botocore", "urllib3", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Powertools warns on every read-only invocation (no metric added); pytest filters it too.
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    try:
        standins = int(os.environ.get("COMFYUI_STANDINS") or 1)
        if standins < 1:
            raise ValueError
    except ValueError:
        print("dev: COMFYUI_STANDINS is the number of ComfyUI stand-ins to start, 1 or more", file=sys.stderr)
        return 2
    if standins > 1 and os.environ.get("COMFYUI_BASE_URL"):
        logging.getLogger("dev").warning("COMFYUI_BASE_URL is set: no stand-in is started (COMFYUI_STANDINS ignored)")
    stop = threading.Event()
    # SIGTERM (docker stop, kill) ends the run like Ctrl-C does.
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with LocalStack(
            port=args.port,
            comfyui_base_url=os.environ.get("COMFYUI_BASE_URL") or None,
            standins=standins,
            standin_delay=float(os.environ.get("STANDIN_DELAY") or 1.0),
            template_path=args.template,
            moto_port=args.moto_port,
            schedule_every=float(os.environ["ARCHIVE_EVERY"]) if os.environ.get("ARCHIVE_EVERY") else None,
            # Read here only: library code (LocalStack, LocalApi) takes it as an argument.
            api_key=os.environ.get("LOCAL_API_KEY") or None,
            watch=os.environ.get("WATCHER", "1") != "0",
            retry_seconds=float(os.environ["SQS_RETRY_SECONDS"]) if os.environ.get("SQS_RETRY_SECONDS") else None,
            function_logs=args.verbose,
        ) as stack:
            print(banner(stack), flush=True)
            while not stop.wait(0.5):  # a timed wait keeps signal delivery prompt
                pass
            print("Stopping...", flush=True)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            print(f"dev: port {args.port} (PORT) or {args.moto_port or 'a free port'} (MOTO_PORT) is "
                  f"already in use: stop what holds it, or start with e.g. PORT={args.port + 1} make dev",
                  file=sys.stderr)
        else:
            print(f"dev: {error}", file=sys.stderr)
        return 1
    except TemplateError as error:  # e.g. the functions' environments conflict
        print(f"dev: {error}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
