"""Every function's real code, run with the temporary credentials of its own execution role,
against a moto server that enforces IAM. A permission the template forgets fails here, not
on AWS.

Roles come from SAM's own translation of template.yaml (tests/support/iam.py): inline
statements, expanded policy templates and the AWS managed policies SAM attaches, for the
default parameters and with each !If switch flipped. The switches that change a role
(HasComfyUIAuth, HasWebhookSecret, HasBackendsRegistry) each run every code path below; the
others are shown to change no role. The code is the real `lambda_handler` of each function
with the environment the template gives it; ComfyUI is the stand-in. With
HasBackendsRegistry it is a fleet of two stand-ins listed in an SSM registry (the second
with an auth secret under the registry's name), so every path also reads the registry, and
records or looks up each prompt's backend in the prompt-state table as a fleet does.

What moto 5.2.5 authorizes (verified; see tests/support/iam_moto.py):

- S3: action and resource, as AWS names them (GetObjectVersion for a GetObject with
  versionId, PutObject for every multipart step, GetObject for HEAD).
- SQS: action and queue ARN. STS AssumeRole: caller policy and trust policy.
- Presigned S3 requests (the upload PUT): moto reads only the Authorization header and
  crashes on them; the tier's server checks the query signature (key, signed headers, expiry)
  and then authorizes the signing role's session for the action, as S3 does.
- DynamoDB, EventBridge, SSM, Lambda: moto checks only the action, against resource ``*``,
  and names Invoke ``lambda:Invoke``; the tier's server supplies the table, bus, parameter
  and function ARN and the IAM action name, so these are checked by action and resource too.
- Not checked: Condition blocks (the ``s3:prefix`` condition on ListBucket is ignored);
  KMS (SSM SecureStrings use the AWS managed key, no kms:Decrypt involved); CloudWatch
  Logs and X-Ray, which the Lambda runtime calls, not the code (their managed policies are
  attached all the same); the calls the Lambda service makes with the role outside the code
  (the jobs-queue poller is replayed by the test, the on-failure destinations are not).
- Resource-based policies (the buckets' TLS-only policies) are not evaluated, and moto
  refuses a policy without ``Version`` where AWS reads it as 2008-10-17 (the tier adds it).
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import importlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
import requests
from botocore.exceptions import ClientError

from comfy_core.errors import StorageError
from devtools.comfyui_standin import ComfyUIStandIn, encode_pixels
from devtools.template import ACCOUNT_ID, REGION
from tests.support.handlers import ROOT, event
from tests.support.iam import (REGISTRY_PARAMETER, SECOND_BACKEND_TOKEN, SECRET_VALUES, SWITCHES, IamStack,
                                RoleRun, code_folders)
from tests.support.lambda_context import FakeLambdaContext
from tests.support.sam import api_routes, load_template
from tests.support.waiting import wait_for

FOLDERS = code_folders()
API_FUNCTIONS = sorted({name for _, _, name in api_routes(load_template())})
# Functions whose sample event makes no ComfyUI call (so no ComfyUI token read either).
NO_COMFYUI = {"DocsFunction", "ListWorkflowsFunction", "OpenApiFunction", "UploadsFunction"}
# Functions that find the prompt their sample names (unknown to ComfyUI) in a fleet: one
# GetItem of its recorded backend, then every backend asked.
LOCATES = {"TaskStatusFunction", "HistoryEntryFunction", "ImageFunction", "CancelTaskFunction"}
# ConvertFunction asks one backend (the first taking prompts) for its node definitions; every
# other ComfyUI-calling sample asks each backend, gpu-b with its own token.
ONE_BACKEND = {"ConvertFunction"}
SAMPLE_PROMPT_ID = "11111111-2222-3333-4444-555555555555"  # in the sample events; unknown to ComfyUI
POLL_SECONDS = 15  # a ceiling for the stand-in to finish a prompt (it takes milliseconds)


# -- running a function --------------------------------------------------------------------
def run(stack: IamStack, function_id: str, evt: Any,
        extra_env: dict[str, str] | None = None) -> tuple[Any, RoleRun]:
    """The function's lambda_handler on `evt` under its role: (its answer, moto's decisions)."""
    module = importlib.import_module(f"functions.{FOLDERS[function_id]}.app")
    context = FakeLambdaContext(function_name=function_id)
    role_run: RoleRun | None = None
    try:
        with stack.running_as(function_id, extra_env) as role_run:
            answer = module.lambda_handler(evt, context)
    except Exception as exc:
        if role_run is not None:  # a denial the code turned into its own error: name it
            exc.add_note(f"denied under {function_id}'s role: {role_run.denied()}")
        raise
    return answer, role_run


def body(answer: dict[str, Any]) -> Any:
    return json.loads(answer["body"])


def made(role_run: RoleRun, action: str, resource: str) -> bool:
    """The role was allowed `action` on a resource matching the glob `resource`."""
    return any(a == action and fnmatch.fnmatchcase(r, resource) for a, r in role_run.allowed_actions())


def assert_allowed(role_run: RoleRun, *expected: tuple[str, str]) -> None:
    """Nothing was denied, and each (action, resource glob) was asked for and allowed: a
    path that silently stopped calling AWS would prove nothing."""
    assert not role_run.denied(), f"{role_run.function_id} was denied: {role_run.denied()}"
    missing = [pair for pair in expected if not made(role_run, *pair)]
    made_instead = sorted(role_run.allowed_actions())
    assert not missing, f"{role_run.function_id} never made {missing}; it made {made_instead}"


def parameter_arn(name: str) -> str:
    return f"arn:aws:ssm:{REGION}:{ACCOUNT_ID}:parameter/{name}"


def comfyui_reads(stack: IamStack) -> list[tuple[str, str]]:
    """The SSM reads every ComfyUI-calling function makes: the token when HasComfyUIAuth is
    on, the fleet's registry when HasBackendsRegistry is."""
    names = [stack.parameters.get("ComfyUIAuthParameter"), stack.parameters.get("ComfyUIBackendsParameter")]
    return [("ssm:GetParameter", parameter_arn(name)) for name in names if name]


def second_backend_token(stack: IamStack) -> list[tuple[str, str]]:
    """The fleet's second backend's auth secret, read by a function that asks every backend."""
    return [("ssm:GetParameter", parameter_arn(SECOND_BACKEND_TOKEN))] if is_fleet(stack) else []


def is_fleet(stack: IamStack) -> bool:
    return bool(stack.parameters.get("ComfyUIBackendsParameter"))


def placement_lookup(stack: IamStack) -> list[tuple[str, str]]:
    """A fleet's lookup of a prompt's backend (one GetItem); one server makes none."""
    return [("dynamodb:GetItem", arn(stack, "PromptStateTable"))] if is_fleet(stack) else []


def placement_record(stack: IamStack) -> list[tuple[str, str]]:
    """A fleet's record of the backend a new prompt is sent to (one UpdateItem)."""
    return [("dynamodb:UpdateItem", arn(stack, "PromptStateTable"))] if is_fleet(stack) else []


def arn(stack: IamStack, logical_id: str) -> str:
    return stack.physical[logical_id]["Arn"]


def bus_arn(stack: IamStack) -> str:
    name = stack.environment("RunJobFunction")["EVENT_BUS_NAME"]
    return f"arn:aws:events:{REGION}:{ACCOUNT_ID}:event-bus/{name}"


def unique(job: dict[str, Any]) -> dict[str, Any]:
    """A sample job with a fresh job_id: each run submits instead of replaying a stored answer."""
    return {**job, "job_id": f"{job.get('job_id', 'job')}-{uuid.uuid4().hex[:8]}"}


# -- prompts in the stand-ins --------------------------------------------------------------
def wait_finished(stack: IamStack, prompt_id: str) -> None:
    """Until the ComfyUI that has the prompt (any of a fleet's) finished it."""
    def finished() -> bool:
        for url in stack.comfyui_urls():
            entry = requests.get(f"{url}/history/{prompt_id}", timeout=5).json()
            if entry.get(prompt_id, {}).get("status", {}).get("status_str") in ("success", "error"):
                return True
        return False

    wait_for(finished, POLL_SECONDS, interval=0.02, what=f"prompt {prompt_id} finished")


def forget(stack: IamStack, prompt_id: str) -> None:
    """ComfyUI drops the prompt from its history (as after a restart): answers must come
    from the archive."""
    for url in stack.comfyui_urls():
        requests.post(f"{url}/history", json={"delete": [prompt_id]}, timeout=5).raise_for_status()


@pytest.fixture
def finished_prompt(stack: IamStack) -> str:
    """A prompt submitted through POST /api/workflow (under its role) that ComfyUI finished."""
    answer, role_run = run(stack, "RunWorkflowFunction", event("run_workflow_advanced"))
    assert answer["statusCode"] == 200, answer
    assert_allowed(role_run, *placement_record(stack))
    prompt_id = body(answer)["prompt_id"]
    wait_finished(stack, prompt_id)
    return prompt_id


# -- API routes ----------------------------------------------------------------------------------
def sample_expectations(stack: IamStack, function_id: str) -> list[tuple[str, str]]:
    """What each sample event must make AWS do (beyond ComfyUI)."""
    workflows, images = arn(stack, "WorkflowBucket"), arn(stack, "ImageBucket")
    manifest = ("s3:GetObject", f"{images}/images/{SAMPLE_PROMPT_ID}/manifest.json")
    expected = {
        "ListWorkflowsFunction": [("s3:ListBucket", workflows)],
        "RunWorkflowFunction": [("s3:GetObject", f"{workflows}/workflows/text_label.json"),
                                ("events:PutEvents", bus_arn(stack))],
        # The sample's prompt is unknown to ComfyUI: answered from the (missing) manifest.
        "TaskStatusFunction": [manifest],
        "HistoryEntryFunction": [manifest],
        "ImageFunction": [manifest],
    }.get(function_id, [])
    if function_id == "RunWorkflowFunction":
        expected += placement_record(stack)
    if function_id in LOCATES:
        expected += placement_lookup(stack)
    if function_id in NO_COMFYUI:
        return expected
    return expected + comfyui_reads(stack) + ([] if function_id in ONE_BACKEND else second_backend_token(stack))


@pytest.mark.parametrize("function_id", API_FUNCTIONS)
def test_api_sample_event_runs_under_its_own_role(stack: IamStack, function_id: str) -> None:
    answer, role_run = run(stack, function_id, event(FOLDERS[function_id]))
    # 404: the sample prompt id is unknown here. A denied S3 read would be a 5xx.
    assert answer["statusCode"] in (200, 201, 404), answer
    assert_allowed(role_run, *sample_expectations(stack, function_id))


def test_advanced_sample_event_runs_under_its_role(stack: IamStack) -> None:
    answer, role_run = run(stack, "RunWorkflowFunction", event("run_workflow_advanced"))
    assert answer["statusCode"] == 200, answer
    assert_allowed(role_run, ("s3:GetObject", f"{arn(stack, 'WorkflowBucket')}/workflows/empty_save.json"))


def test_submission_with_an_idempotency_key_uses_only_its_table(stack: IamStack) -> None:
    sample = event("run_workflow")
    keyed = event("run_workflow", headers={**sample["headers"], "Idempotency-Key": f"iam-{uuid.uuid4()}"})
    first, first_run = run(stack, "RunWorkflowFunction", keyed)
    again, again_run = run(stack, "RunWorkflowFunction", keyed)
    assert first["statusCode"] == again["statusCode"] == 200, (first, again)
    assert body(first)["prompt_id"] == body(again)["prompt_id"]
    table = arn(stack, "IdempotencyTable")
    # A fleet first asks where a prompt of this key went (GetItem), then records it (UpdateItem).
    assert_allowed(first_run, ("dynamodb:PutItem", table), ("dynamodb:UpdateItem", table),
                   ("events:PutEvents", bus_arn(stack)), *placement_lookup(stack), *placement_record(stack))
    assert_allowed(again_run, ("dynamodb:PutItem", table))


@pytest.mark.parametrize("function_id", ["TaskStatusFunction", "ImageFunction"])
def test_a_finished_unarchived_prompt_asks_the_archiver(stack: IamStack, finished_prompt: str,
                                                        function_id: str) -> None:
    evt = event(FOLDERS[function_id], pathParameters={"prompt_id": finished_prompt})
    answer, role_run = run(stack, function_id, evt)
    assert answer["statusCode"] == 200, answer
    images = arn(stack, "ImageBucket")
    assert_allowed(role_run, ("s3:GetObject", f"{images}/images/{finished_prompt}/manifest.json"),
                   ("lambda:InvokeFunction", arn(stack, "ArchiverFunction")), *placement_lookup(stack))


def test_a_dequeued_prompt_is_recorded_and_then_answered_cancelled(stack: IamStack,
                                                                   standin: ComfyUIStandIn) -> None:
    """DELETE /api/task writes the cancellation under CancelTaskFunction's role; task_status
    reads it under its own, once ComfyUI no longer knows the prompt. (Posted straight to the
    first ComfyUI: a fleet finds it there by asking every backend.)"""
    workflow = json.loads((ROOT / "workflows" / "empty_save.json").read_text())
    running, pending = str(uuid.uuid4()), str(uuid.uuid4())
    standin.delay = 30.0  # the first prompt holds ComfyUI, the second waits behind it
    try:
        for prompt_id in (running, pending):
            requests.post(f"{standin.base_url}/prompt", json={"prompt": workflow, "prompt_id": prompt_id},
                          timeout=5).raise_for_status()
        answer, canceller = run(stack, "CancelTaskFunction",
                                event(FOLDERS["CancelTaskFunction"], pathParameters={"prompt_id": pending}))
    finally:
        standin.delay = 0.0  # the running prompt ends at once
    assert answer["statusCode"] == 200 and body(answer)["status"] == "cancelled", answer
    table = arn(stack, "PromptStateTable")
    assert_allowed(canceller, ("dynamodb:UpdateItem", table), *comfyui_reads(stack), *placement_lookup(stack))
    answer, reader = run(stack, "TaskStatusFunction",
                         event(FOLDERS["TaskStatusFunction"], pathParameters={"prompt_id": pending}))
    assert body(answer)["status"] == "cancelled", answer
    assert_allowed(reader, ("dynamodb:GetItem", table))
    wait_finished(stack, running)


# -- the archiver, and the API reading what it wrote --------------------------------------------
def test_archiver_single_prompt_then_answers_from_the_archive(stack: IamStack, finished_prompt: str) -> None:
    images = arn(stack, "ImageBucket")
    # Without a backend named in the event, a fleet's archiver looks the prompt up (GetItem).
    result, role_run = run(stack, "ArchiverFunction", event("archiver_prompt", prompt_id=finished_prompt))
    assert result["status"] == "archived" and result["stored"] >= 1, result
    assert_allowed(role_run, ("s3:PutObject", f"{images}/images/{finished_prompt}/*"),
                   ("s3:PutObject", f"{images}/images/{finished_prompt}/manifest.json"),
                   ("events:PutEvents", bus_arn(stack)), *comfyui_reads(stack), *placement_lookup(stack))

    forget(stack, finished_prompt)
    for function_id in ("TaskStatusFunction", "ImageFunction", "HistoryEntryFunction"):
        evt = event(FOLDERS[function_id], pathParameters={"prompt_id": finished_prompt})
        answer, reader = run(stack, function_id, evt)
        assert answer["statusCode"] == 200, (function_id, answer)
        assert_allowed(reader, ("s3:GetObject", f"{images}/images/{finished_prompt}/manifest.json"),
                       *placement_lookup(stack))


def test_archiver_sweep_and_its_sample_events(stack: IamStack, finished_prompt: str) -> None:
    images = arn(stack, "ImageBucket")
    summary, role_run = run(stack, "ArchiverFunction", event("archiver_scheduled"))
    assert summary["status"] == "ok" and summary["prompts_archived"] >= 1, summary
    # A fleet's sweep covers every backend, then stamps those that answered (PutItem).
    seen = [("dynamodb:PutItem", arn(stack, "PromptStateTable"))] if is_fleet(stack) else []
    assert_allowed(role_run, ("s3:ListBucket", images),
                   ("s3:PutObject", f"{images}/images/{finished_prompt}/*"),
                   ("events:PutEvents", bus_arn(stack)), *comfyui_reads(stack), *second_backend_token(stack), *seen)
    if is_fleet(stack):
        assert set(summary["backends"]) == {"gpu-a", "gpu-b"}, summary

    again, _ = run(stack, "ArchiverFunction", event("archiver_prompt", prompt_id=finished_prompt))
    assert again["status"] == "already_archived", again
    sample, sample_run = run(stack, "ArchiverFunction", event("archiver_prompt"))
    assert sample["status"] == "not_finished", sample  # the sample's prompt is unknown here
    assert_allowed(sample_run)


# -- run_job from every trigger -----------------------------------------------------------------
def job_expectations(stack: IamStack, workflow: str) -> list[tuple[str, str]]:
    table = arn(stack, "IdempotencyTable")
    return [("s3:GetObject", f"{arn(stack, 'WorkflowBucket')}/workflows/{workflow}.json"),
            ("dynamodb:PutItem", table), ("dynamodb:UpdateItem", table),
            ("events:PutEvents", bus_arn(stack)), *comfyui_reads(stack),
            # A job is keyed by its job_id: a fleet looks up, then records, its backend.
            *placement_lookup(stack), *placement_record(stack), *second_backend_token(stack)]


def test_jobs_from_the_jobs_queue(stack: IamStack) -> None:
    """The sample's messages go through the real queue; the poll is what Lambda's event source
    mapping does with the function's role (SQSPollerPolicy), then the code runs the batch."""
    queue_url, queue_arn = stack.physical["JobsQueue"]["Ref"], arn(stack, "JobsQueue")
    sample = event("run_job_sqs")
    admin_sqs = stack.server.admin_client("sqs")
    for record in sample["Records"]:
        admin_sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(unique(json.loads(record["body"]))))

    module = importlib.import_module("functions.run_job.app")
    with stack.running_as("RunJobFunction") as role_run:
        sqs = boto3.client("sqs")
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
        records = [{**sample["Records"][0], "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"], "md5OfBody": m["MD5OfBody"], "eventSourceARN": queue_arn}
                   for m in messages]
        context = FakeLambdaContext(function_name="RunJobFunction")
        answer = module.lambda_handler({"Records": records}, context)
        failed = {item["itemIdentifier"] for item in answer["batchItemFailures"]}
        done = [m for m in messages if m["MessageId"] not in failed]
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(index), "ReceiptHandle": m["ReceiptHandle"]} for index, m in enumerate(done)])
    assert len(messages) == len(sample["Records"]) and answer == {"batchItemFailures": []}, answer
    assert_allowed(role_run, ("sqs:ReceiveMessage", queue_arn), ("sqs:DeleteMessageBatch", queue_arn),
                   *job_expectations(stack, "text_label"), *job_expectations(stack, "empty_save"))


def test_job_from_eventbridge(stack: IamStack) -> None:
    sample = event("run_job_eventbridge")
    answer, role_run = run(stack, "RunJobFunction", {**sample, "detail": unique(sample["detail"])})
    assert answer["status"] == "success", answer
    assert_allowed(role_run, *job_expectations(stack, "text_label"))


def test_job_by_direct_invoke(stack: IamStack) -> None:
    answer, role_run = run(stack, "RunJobFunction", unique(event("run_job_direct")))
    assert answer["status"] == "success", answer
    assert_allowed(role_run, *job_expectations(stack, "text_label"))


def put_job_file(stack: IamStack, job: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A job file put in the (versioned) workflow bucket, and the EventBridge event S3 sends
    for it: the sample with this bucket, key, size, etag and version-id."""
    bucket = stack.physical["WorkflowBucket"]["Ref"]
    key = f"{stack.environment('RunJobFunction')['JOB_PREFIX']}iam-{uuid.uuid4().hex[:12]}.json"
    data = json.dumps(job).encode()
    put = stack.server.admin_client("s3").put_object(Bucket=bucket, Key=key, Body=data)
    assert put.get("VersionId"), "the workflow bucket is versioned, as the template declares"
    sample = event("run_job_s3")
    detail = {**sample["detail"], "bucket": {"name": bucket}}
    detail["object"] = {**detail["object"], "key": key, "size": len(data), "etag": put["ETag"].strip('"'),
                        "version-id": put["VersionId"]}
    return {**sample, "resources": [f"arn:aws:s3:::{bucket}"], "detail": detail}, key


def test_job_file_in_the_versioned_workflow_bucket(stack: IamStack) -> None:
    """Defect 1: the job is read by version (s3:GetObjectVersion on the job prefix); with
    only s3:GetObject the read was denied and no result was ever written."""
    evt, key = put_job_file(stack, unique({"workflow": "text_label", "prompt": "a lighthouse at dawn"}))
    answer, role_run = run(stack, "RunJobFunction", evt)
    assert answer.get("status") == "success", answer
    workflows = arn(stack, "WorkflowBucket")
    result_key = key.removesuffix(".json") + ".result.json"
    assert_allowed(role_run, ("s3:GetObjectVersion", f"{workflows}/{key}"),
                   ("s3:PutObject", f"{workflows}/{result_key}"), *job_expectations(stack, "text_label"))
    bucket = stack.physical["WorkflowBucket"]["Ref"]
    stored = stack.server.admin_client("s3").get_object(Bucket=bucket, Key=result_key)
    assert json.loads(stored["Body"].read())["prompt_id"] == answer["prompt_id"]

    # The result file raises its own Object Created event: ignored, and nothing read for it.
    ignored, ignored_run = run(stack, "RunJobFunction", {**evt, "detail": {
        **evt["detail"], "object": {**evt["detail"]["object"], "key": result_key}}})
    assert ignored["status"] == "ignored" and ignored_run.decisions == []


def test_rejected_job_goes_to_the_dead_letter_queue(stack: IamStack) -> None:
    sample = event("run_job_eventbridge")
    job = unique({**sample["detail"], "workflow": "no_such_workflow"})
    answer, role_run = run(stack, "RunJobFunction", {**sample, "detail": job})
    assert answer["status_code"] == 404, answer
    dlq_url, dlq_arn = stack.physical["JobsDeadLetterQueue"]["Ref"], arn(stack, "JobsDeadLetterQueue")
    assert_allowed(role_run, ("sqs:SendMessage", dlq_arn))
    admin_sqs = stack.server.admin_client("sqs")
    bodies = [json.loads(m["Body"]) for m in admin_sqs.receive_message(
        QueueUrl=dlq_url, MaxNumberOfMessages=10).get("Messages", [])]
    assert job in bodies


# -- input images: presigned by one role, read (or deleted) by the others -------------------------
def image_bytes() -> bytes:
    """A small real PNG (8x8 grey)."""
    return encode_pixels(8, 8, "RGB", bytes(range(64)) * 3)


def presigned_upload(stack: IamStack, data: bytes, content_type: str = "image/png") -> tuple[str, RoleRun]:
    """POST /api/uploads under UploadsFunction's role, then the client's PUT with the URL it
    signed: the PUT is authorized as that role's session. The upload id, and the PUT's run."""
    evt = event("uploads", body=json.dumps({"filename": "photo.png", "content_type": content_type,
                                            "size": len(data)}))
    answer, signer = run(stack, "UploadsFunction", evt)
    assert answer["statusCode"] == 201, answer
    assert signer.decisions == []  # signing is local: no AWS call
    grant = body(answer)
    since = stack.server.log_size()
    put = requests.put(grant["upload_url"], data=data, headers=grant["headers"], timeout=10)
    assert put.status_code == 200, put.text
    signer.decisions = [d for d in stack.server.decisions(since) if d.principal == signer.principal]
    return grant["upload_id"], signer


def test_an_upload_is_written_with_the_uploads_role_and_read_by_the_runners(stack: IamStack) -> None:
    images = arn(stack, "ImageBucket")
    upload_id, put = presigned_upload(stack, image_bytes())
    assert_allowed(put, ("s3:PutObject", f"{images}/inputs/{upload_id}"))

    evt = event("run_workflow", pathParameters={"workflow_name": "img2img_invert"},
                body=json.dumps({"image": {"upload_id": upload_id}}))
    answer, role_run = run(stack, "RunWorkflowFunction", evt)
    assert answer["statusCode"] == 200, answer
    assert_allowed(role_run, ("s3:GetObject", f"{images}/inputs/{upload_id}"),
                   ("s3:GetObject", f"{arn(stack, 'WorkflowBucket')}/workflows/img2img_invert.json"),
                   *comfyui_reads(stack), *placement_record(stack))

    bucket = stack.physical["ImageBucket"]["Ref"]
    job = unique({"workflow": "img2img_invert", "image": {"s3": f"s3://{bucket}/inputs/{upload_id}"}})
    result, job_run = run(stack, "RunJobFunction", job)
    assert result["status"] == "success", result
    assert_allowed(job_run, ("s3:GetObject", f"{images}/inputs/{upload_id}"),
                   *job_expectations(stack, "img2img_invert"))


def test_the_presigned_put_holds_to_what_was_signed(stack: IamStack) -> None:
    """The URL signs the key, type and size: another size, another type or another key under
    the same signature is refused; only the signed request writes."""
    data = image_bytes()
    evt = event("uploads", body=json.dumps({"filename": "photo.png", "content_type": "image/png",
                                            "size": len(data)}))
    grant = body(run(stack, "UploadsFunction", evt)[0])
    url, headers = grant["upload_url"], grant["headers"]
    other_key = url.replace(grant["upload_id"], "0" * 32)
    refused = [requests.put(url, data=data + b"x", headers=headers, timeout=10),
               requests.put(url, data=data, headers={"Content-Type": "image/jpeg"}, timeout=10),
               requests.put(other_key, data=data, headers=headers, timeout=10)]
    assert [answer.status_code for answer in refused] == [403, 403, 403]
    admin_s3, bucket = stack.server.admin_client("s3"), stack.physical["ImageBucket"]["Ref"]
    listed = admin_s3.list_objects_v2(Bucket=bucket, Prefix=f"inputs/{grant['upload_id']}").get("KeyCount")
    assert listed == 0


def test_an_upload_that_is_no_image_is_deleted_under_the_run_role(stack: IamStack) -> None:
    images, bucket = arn(stack, "ImageBucket"), stack.physical["ImageBucket"]["Ref"]
    upload_id, _ = presigned_upload(stack, b"this is not an image\n")
    evt = event("run_workflow", pathParameters={"workflow_name": "img2img_invert"},
                body=json.dumps({"image": {"upload_id": upload_id}}))
    answer, role_run = run(stack, "RunWorkflowFunction", evt)
    assert answer["statusCode"] == 415, answer
    assert_allowed(role_run, ("s3:GetObject", f"{images}/inputs/{upload_id}"),
                   ("s3:DeleteObject", f"{images}/inputs/{upload_id}"))
    with pytest.raises(ClientError) as gone:
        stack.server.admin_client("s3").head_object(Bucket=bucket, Key=f"inputs/{upload_id}")
    assert gone.value.response["Error"]["Code"] == "404"


# -- webhooks: the secret is read by the archiver, under its role --------------------------------
class Receiver(ThreadingHTTPServer):
    def __init__(self, secret: str) -> None:
        super().__init__(("127.0.0.1", 0), _Receive)
        self.secret = secret
        self.verified: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/comfy"


class _Receive(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        text = self.rfile.read(int(self.headers["Content-Length"])).decode()
        timestamp = self.headers["X-Comfy-Timestamp"]
        signed = f"{timestamp}.{text}".encode()
        digest = hmac.new(self.server.secret.encode(), signed, hashlib.sha256).hexdigest()
        if hmac.compare_digest(f"v1={digest}", self.headers["X-Comfy-Signature"]):
            self.server.verified.append(json.loads(text))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(SECRET_VALUES[SWITCHES["HasWebhookSecret"]["WebhookSecretParameter"]])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_webhook_of_a_job_is_signed_with_the_secret_its_role_may_read(
    stacks: Callable[..., IamStack], receiver: Receiver
) -> None:
    stack = stacks("HasWebhookSecret")
    http_ok = {"WEBHOOK_ALLOW_HTTP": "true"}  # a plain-http receiver; the template never sets it
    job = unique({**event("run_job_direct"), "webhook_url": receiver.url})
    answer, _ = run(stack, "RunJobFunction", job, http_ok)
    assert answer["status"] == "success", answer
    wait_finished(stack, answer["prompt_id"])
    result, role_run = run(stack, "ArchiverFunction", {"prompt_id": answer["prompt_id"]}, http_ok)
    assert result["status"] == "archived", result
    secret = f"arn:aws:ssm:{REGION}:{ACCOUNT_ID}:parameter/{stack.parameters['WebhookSecretParameter']}"
    assert_allowed(role_run, ("ssm:GetParameter", secret))
    # Delivered before the archiver returned; the wait is only a ceiling.
    wait_for(lambda: receiver.verified, POLL_SECONDS, what="a verified delivery")
    assert [hook["prompt_id"] for hook in receiver.verified] == [answer["prompt_id"]]


# -- the tier can fail ---------------------------------------------------------------------------
def test_a_call_outside_the_role_is_denied(stacks: Callable[..., IamStack]) -> None:
    stack = stacks("default")
    bucket = stack.physical["WorkflowBucket"]["Ref"]
    with stack.running_as("ListWorkflowsFunction") as role_run:
        with pytest.raises(ClientError) as denied:
            boto3.client("s3").put_object(Bucket=bucket, Key="workflows/intruder.json", Body=b"{}")
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    assert [(d.action, d.allowed) for d in role_run.decisions] == [("s3:PutObject", False)]


def test_a_role_without_the_job_statement_cannot_read_the_job(stacks: Callable[..., IamStack]) -> None:
    """The real S3-job path under a role that reads workflows but not jobs (RunWorkflow's):
    the versioned read is denied, as it was for RunJob before defect 1 was fixed."""
    stack = stacks("default")
    evt, key = put_job_file(stack, unique({"workflow": "text_label"}))
    module = importlib.import_module("functions.run_job.app")
    with stack.running_as("RunWorkflowFunction") as role_run:
        with pytest.raises(StorageError):
            module.lambda_handler(evt, FakeLambdaContext(function_name="RunJobFunction"))
    assert [(d.action, d.resource, d.allowed) for d in role_run.denied()] == [
        ("s3:GetObjectVersion", f"{arn(stack, 'WorkflowBucket')}/{key}", False)]



# -- the fleet's registry ----------------------------------------------------------------------
def test_a_prompt_of_a_removed_backend_is_answered_lost(stacks: Callable[..., IamStack]) -> None:
    """A prompt recorded on a backend the registry no longer lists, sent past the grace
    period: task_status reads its item, asks every backend, reads when that backend was last
    seen (GetItem of `backend#...`) and answers the prompt lost."""
    stack = stacks("HasBackendsRegistry")
    prompt_id, sent = str(uuid.uuid4()), int(time.time()) - 3600
    stack.server.admin_client("dynamodb").put_item(TableName=stack.physical["PromptStateTable"]["Ref"], Item={
        "prompt_id": {"S": prompt_id}, "backend": {"S": "gpu-gone"}, "submitted_at": {"N": str(sent)},
        "expires_at": {"N": str(sent + 86400)}})
    answer, role_run = run(stack, "TaskStatusFunction",
                           event(FOLDERS["TaskStatusFunction"], pathParameters={"prompt_id": prompt_id}))
    assert answer["statusCode"] == 200 and body(answer)["error"]["type"] == "backend_gone", answer
    assert_allowed(role_run, *placement_lookup(stack), *comfyui_reads(stack), *second_backend_token(stack))


def test_a_role_without_the_registry_policy_is_denied_the_registry(stacks: Callable[..., IamStack]) -> None:
    """The real registry read (fleet.backends) under a role without BackendsRegistryReadPolicy
    (the default stack's: no registry in its template) is denied; the code goes on with
    ComfyUIBaseUrl's server."""
    stacks("HasBackendsRegistry")  # the registry parameter exists in moto
    answer, role_run = run(stacks("default"), "TestComfyFunction", event(FOLDERS["TestComfyFunction"]),
                           {"COMFYUI_BACKENDS_PARAMETER": REGISTRY_PARAMETER})
    assert answer["statusCode"] == 200, answer
    assert [(d.action, d.resource) for d in role_run.denied()] == [
        ("ssm:GetParameter", parameter_arn(REGISTRY_PARAMETER))]


def test_the_registry_policy_reads_only_under_the_registry_name(stacks: Callable[..., IamStack]) -> None:
    """The registry and the secrets under its name, nothing beside them: not a parameter whose
    name merely starts with the registry's, not another secret of the stack."""
    stack = stacks("HasBackendsRegistry")
    outside = [f"/{REGISTRY_PARAMETER}-other", f"/{SWITCHES['HasWebhookSecret']['WebhookSecretParameter']}"]
    with stack.running_as("TestComfyFunction") as role_run:
        ssm = boto3.client("ssm")
        ssm.get_parameter(Name=f"/{REGISTRY_PARAMETER}")
        ssm.get_parameter(Name=f"/{SECOND_BACKEND_TOKEN}", WithDecryption=True)
        for name in outside:
            with pytest.raises(ClientError) as denied:
                ssm.get_parameter(Name=name, WithDecryption=True)
            # moto answers SSM's JSON protocol with S3's XML error: only the status is parsed.
            assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert [(d.resource, d.allowed) for d in role_run.decisions] == [
        (parameter_arn(REGISTRY_PARAMETER), True), (parameter_arn(SECOND_BACKEND_TOKEN), True),
        *[(parameter_arn(name.lstrip("/")), False) for name in outside]]
