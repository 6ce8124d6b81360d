"""functions/run_job: jobs from SQS, S3, EventBridge and direct invocation, each run like
POST /api/workflow/{name}, at most once per job id. S3, SQS, DynamoDB and EventBridge
from moto in-process; ComfyUI from recorded answers through FakeComfySession."""

from __future__ import annotations

import json
import socket
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from comfy_core import triggers
from comfy_core.config import get_settings
from comfy_core.errors import ComfyUIUnreachableError
from functions.run_job.app import lambda_handler
from tests.support.handlers import event, invoke
from tests.support.fake_comfy import FakeComfySession, use_session
from tests.support.jobs import (
    IDEMPOTENCY_TABLE,
    capture_events,
    create_idempotency_table,
    create_queue,
    drain,
    events_in,
)
from tests.support.lambda_context import FakeLambdaContext
from tests.support.recordings import recording

PROMPT_OK = (200, recording("prompt_success"))
BUCKET = "workflow-bucket"


class PartlyDownComfy(FakeComfySession):
    """ComfyUI that refuses the connection for jobs whose job_id starts with `down`
    (None: ComfyUI is back for everyone)."""

    down: str | None = "down"

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        response = super().request(method, url, **kwargs)
        job = (self.calls[-1]["json"] or {}).get("extra_data", {}).get("comfy_serverless", {})
        if method == "POST" and self.down and str(job.get("job_id", "")).startswith(self.down):
            raise requests.exceptions.ConnectionError("connection refused")
        return response


@pytest.fixture
def comfy(monkeypatch: pytest.MonkeyPatch) -> PartlyDownComfy:
    session = PartlyDownComfy({("POST", "/prompt"): PROMPT_OK})
    use_session(monkeypatch, session)
    return session


@pytest.fixture
def aws(s3: Any, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The stack's pieces: workflow bucket (from `s3`), idempotency table, jobs DLQ, and a
    queue receiving every event this API publishes."""
    create_idempotency_table()
    dlq = create_queue("jobs-dlq")
    published = capture_events({"source": ["comfy-serverless-api"]})
    monkeypatch.setenv("IDEMPOTENCY_TABLE", IDEMPOTENCY_TABLE)
    monkeypatch.setenv("JOBS_DLQ_URL", dlq)
    get_settings.cache_clear()
    return SimpleNamespace(s3=s3, dlq=dlq, published=published)


def posts(comfy: FakeComfySession) -> list[dict[str, Any]]:
    """Bodies of every POST /prompt sent (refused ones too)."""
    return [c["json"] for c in comfy.calls if c["method"] == "POST" and c["path"] == "/prompt"]


def sent_id(comfy: FakeComfySession) -> str:
    """The prompt_id the first POST /prompt carried (ComfyUI answers with the id it is sent)."""
    return posts(comfy)[0]["prompt_id"]


def recorded_job(body: dict[str, Any]) -> dict[str, Any]:
    return body["extra_data"]["comfy_serverless"]


def sqs_event(*messages: tuple[str, Any]) -> dict[str, Any]:
    """An SQS batch from (message_id, body) pairs, records shaped like the sample's."""
    template = event("run_job_sqs")["Records"][0]
    records = []
    for message_id, body in messages:
        text = body if isinstance(body, str) else json.dumps(body)
        records.append({**template, "messageId": message_id, "body": text})
    return {"Records": records}


def run(evt: Any) -> Any:
    return lambda_handler(evt, FakeLambdaContext())


# -- SQS -------------------------------------------------------------------------------
def test_sample_sqs_batch_runs_each_job_like_the_api(aws, comfy):
    assert run(event("run_job_sqs")) == {"batchItemFailures": []}
    first, second = posts(comfy)
    assert first["prompt"]["6"]["inputs"]["value"] == "a lighthouse at dawn"  # simple format
    assert second["prompt"]["1"]["inputs"]["width"] == 128  # advanced format
    assert recorded_job(first) == {"workflow": "text_label", "job_id": "order-1001", "trigger": "sqs"}
    # No job_id: the message id keys it, so a redelivery of this message still runs once.
    assert recorded_job(second)["job_id"] == "sqs:2e1424d4-f796-459a-8184-9c92662be6da"


def test_partial_batch_failure_retries_only_comfyui_trouble(aws, comfy):
    batch = sqs_event(
        ("m-ok", {"workflow": "text_label", "prompt": "fine"}),
        ("m-invalid", {"workflow": "no_such_flow", "prompt": "x"}),
        ("m-down", {"workflow": "text_label", "job_id": "down-1", "prompt": "y"}),
    )
    assert run(batch) == {"batchItemFailures": [{"itemIdentifier": "m-down"}]}

    (rejected,) = drain(aws.dlq)  # the invalid job, as sent, with its reason
    assert json.loads(rejected["body"]) == {"workflow": "no_such_flow", "prompt": "x"}
    assert rejected["attributes"]["reason"]["StringValue"] == "Workflow 'no_such_flow' not found"
    assert rejected["attributes"]["status_code"]["StringValue"] == "404"
    assert [recorded_job(p)["job_id"] for p in posts(comfy)] == ["sqs:m-ok", "down-1"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{not json", "Job is not valid JSON"),
        ("[1, 2]", "Job must be a JSON object"),
        ({"prompt": "no workflow"}, "Job needs 'workflow'"),
        ({"workflow": "text_label", "prompt": "x", "colour": "red"}, "colour"),
        ({"workflow": "text_label", "job_id": 42}, "'job_id' must be a string"),
        ({"workflow": "text_label", "webhook_url": "https://example.com/hook"}, "Webhooks are not enabled"),
    ],
)
def test_invalid_jobs_go_to_the_dead_letter_queue_and_are_not_retried(aws, comfy, body, reason):
    assert run(sqs_event(("m-1", body))) == {"batchItemFailures": []}
    (rejected,) = drain(aws.dlq)
    assert reason in rejected["attributes"]["reason"]["StringValue"]
    assert rejected["attributes"]["trigger"]["StringValue"] == "sqs"
    assert posts(comfy) == []


def test_comfyui_down_fails_the_rest_of_the_batch_without_waiting_again(aws, comfy):
    batch = sqs_event(*((f"m-{n}", {"workflow": "text_label", "job_id": f"down-{n}"}) for n in range(3)))
    failures = run(batch)["batchItemFailures"]
    assert [f["itemIdentifier"] for f in failures] == ["m-0", "m-1", "m-2"]
    assert len(posts(comfy)) == 1  # one connection attempt, not one per message
    assert drain(aws.dlq) == []


def test_same_message_delivered_twice_runs_once(aws, comfy):
    batch = sqs_event(("m-1", {"workflow": "text_label", "prompt": "once"}))
    assert run(batch) == {"batchItemFailures": []}
    assert run(batch) == {"batchItemFailures": []}
    assert len(posts(comfy)) == 1
    submitted = [e for e in events_in(aws.published) if e["detail-type"] == "ComfyUI Prompt Submitted"]
    assert len(submitted) == 1  # the duplicate announces nothing either


def test_a_message_redelivered_after_a_timed_out_submission_is_not_posted_again(aws, comfy):
    """The POST /prompt timed out (ComfyUI paused) but ComfyUI queued the prompt. SQS
    delivers the message again: the same job finds its prompt instead of running another."""
    batch = sqs_event(("m-1", {"workflow": "text_label", "prompt": "once"}))
    comfy.routes[("POST", "/prompt")] = requests.exceptions.ReadTimeout("ComfyUI paused")
    assert run(batch) == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}
    sent = posts(comfy)[-1]
    queued = [7, sent["prompt_id"], sent["prompt"], {"client_id": sent["client_id"], **sent["extra_data"]}, ["2"]]
    comfy.routes[("GET", "/queue")] = (200, {"queue_running": [], "queue_pending": [queued]})
    comfy.routes[("POST", "/prompt")] = PROMPT_OK
    assert run(batch) == {"batchItemFailures": []}
    assert len(posts(comfy)) == 1
    submitted = [e for e in events_in(aws.published) if e["detail-type"] == "ComfyUI Prompt Submitted"]
    assert [e["detail"]["prompt_id"] for e in submitted] == [sent["prompt_id"]]


def test_same_job_id_through_every_trigger_runs_once(aws, comfy):
    job = {"workflow": "text_label", "job_id": "order-7", "prompt": "once"}
    assert run(sqs_event(("m-1", job))) == {"batchItemFailures": []}
    first = run(event("run_job_eventbridge", detail=job))
    assert run(job) == first  # direct invocation: the first run's answer, not a new prompt
    assert len(posts(comfy)) == 1 and first["prompt_id"] == sent_id(comfy)


def test_job_id_reused_for_a_different_job_is_rejected(aws, comfy):
    run(sqs_event(("m-1", {"workflow": "text_label", "job_id": "order-8", "prompt": "a"})))
    run(sqs_event(("m-2", {"workflow": "text_label", "job_id": "order-8", "prompt": "b"})))
    (rejected,) = drain(aws.dlq)
    assert rejected["attributes"]["status_code"]["StringValue"] == "422"
    assert len(posts(comfy)) == 1


def test_a_failed_run_is_not_remembered(aws, comfy):
    batch = sqs_event(("m-1", {"workflow": "text_label", "job_id": "down-9"}))
    assert run(batch)["batchItemFailures"] == [{"itemIdentifier": "m-1"}]
    comfy.down = None  # ComfyUI is back
    assert run(batch) == {"batchItemFailures": []}
    assert len(posts(comfy)) == 2


def test_without_an_idempotency_table_jobs_still_run(s3, comfy):
    # A local run without IDEMPOTENCY_TABLE: jobs run, only deduplication is off.
    batch = sqs_event(("m-1", {"workflow": "text_label"}))
    assert run(batch) == run(batch) == {"batchItemFailures": []}
    assert len(posts(comfy)) == 2


def test_rejected_job_is_retried_when_the_dead_letter_queue_is_unreachable(s3, comfy, monkeypatch):
    # Not lost: SQS delivers it again, and its redrive policy ends it in the DLQ.
    monkeypatch.setenv("JOBS_DLQ_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/missing")
    get_settings.cache_clear()
    answer = run(sqs_event(("m-1", {"workflow": "no_such_flow"})))
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}


# -- S3 --------------------------------------------------------------------------------
def put_job(s3: Any, key: str, body: Any) -> dict[str, Any]:
    """Put a job file in the workflow bucket, versioned as the template declares it; the
    sample S3 event for that put (it names the version, as S3's real event does)."""
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    put = s3.put_object(Bucket=BUCKET, Key=key, Body=body if isinstance(body, str) else json.dumps(body))
    evt = event("run_job_s3")
    evt["detail"]["object"].update({"key": key, "version-id": put["VersionId"]})
    return evt


def result_of(s3: Any, key: str) -> dict[str, Any]:
    return json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def test_job_file_runs_and_its_result_is_written_beside_it(aws, comfy):
    evt = put_job(aws.s3, "jobs/lighthouse.json", {"workflow": "text_label", "prompt": "a lighthouse"})
    answer = run(evt)
    assert answer["result_key"] == "jobs/lighthouse.result.json"
    result = result_of(aws.s3, "jobs/lighthouse.result.json")
    assert (result["status"], result["workflow"]) == ("success", "text_label")
    assert result["prompt_id"] == sent_id(comfy)
    version = evt["detail"]["object"]["version-id"]
    assert result["job_id"] == f"s3:workflow-bucket/jobs/lighthouse.json@{version}"
    assert posts(comfy)[0]["prompt"]["6"]["inputs"]["value"] == "a lighthouse"


def test_bad_job_file_gets_the_error_as_its_result(aws, comfy):
    run(put_job(aws.s3, "jobs/lighthouse.json", {"workflow": "no_such_flow"}))
    result = result_of(aws.s3, "jobs/lighthouse.result.json")
    assert (result["error"], result["status_code"]) == ("Workflow 'no_such_flow' not found", 404)
    assert posts(comfy) == [] and drain(aws.dlq) == []  # the result is the answer


def test_writing_the_result_does_not_run_anything(aws, comfy):
    evt = put_job(aws.s3, "jobs/lighthouse.result.json", {"workflow": "text_label"})
    assert run(evt)["status"] == "ignored"
    assert posts(comfy) == []
    assert [o["Key"] for o in aws.s3.list_objects_v2(Bucket=BUCKET, Prefix="jobs/")["Contents"]] == [
        "jobs/lighthouse.result.json"
    ]


def test_job_file_event_delivered_twice_runs_once(aws, comfy):
    evt = put_job(aws.s3, "jobs/lighthouse.json", {"workflow": "text_label"})
    run(evt)
    run(evt)
    assert len(posts(comfy)) == 1
    assert result_of(aws.s3, "jobs/lighthouse.result.json")["prompt_id"] == sent_id(comfy)


def test_job_file_with_comfyui_down_is_retried_and_writes_no_result(aws, comfy):
    evt = put_job(aws.s3, "jobs/lighthouse.json", {"workflow": "text_label", "job_id": "down-s3"})
    with pytest.raises(ComfyUIUnreachableError):
        run(evt)  # raised: Lambda retries the async invocation
    assert "Contents" not in aws.s3.list_objects_v2(Bucket=BUCKET, Prefix="jobs/lighthouse.result")


# -- EventBridge -------------------------------------------------------------------------
def test_run_request_event_runs_and_is_announced(aws, comfy):
    answer = run(event("run_job_eventbridge"))
    assert answer["status"] == "success" and answer["prompt_id"] == sent_id(comfy)
    (submitted,) = events_in(aws.published)
    assert submitted["detail-type"] == "ComfyUI Prompt Submitted"
    assert submitted["detail"] | {"client_id": None} == {
        "prompt_id": sent_id(comfy),
        "workflow": "text_label",
        "job_id": "order-1002",
        "status": "submitted",
        "trigger": "eventbridge",
        "number": 0,
        "client_id": None,
        "backend": "default",
    }


def test_invalid_run_request_goes_to_the_dead_letter_queue(aws, comfy):
    answer = run(event("run_job_eventbridge", detail={"workflow": "bad name!"}))
    assert answer["status_code"] == 400 and "Invalid workflow name" in answer["error"]
    (rejected,) = drain(aws.dlq)
    assert json.loads(rejected["body"]) == {"workflow": "bad name!"}
    assert rejected["attributes"]["trigger"]["StringValue"] == "eventbridge"


def test_run_request_with_comfyui_down_raises_for_lambda_to_retry(aws, comfy):
    with pytest.raises(ComfyUIUnreachableError):
        run(event("run_job_eventbridge", detail={"workflow": "text_label", "job_id": "down-eb"}))
    assert drain(aws.dlq) == []


# -- direct invocation -------------------------------------------------------------------
def test_direct_invocation_answers_like_the_http_api(aws, comfy):
    direct = run(event("run_job_direct"))
    status, http = invoke(
        "run_workflow",
        event("run_workflow", pathParameters={"workflow_name": "text_label"},
              body=json.dumps({"prompt": "a lighthouse at dawn"})),
    )
    assert status == 200
    sent_direct, sent_http = posts(comfy)
    assert (direct["prompt_id"], http["prompt_id"]) == (sent_direct["prompt_id"], sent_http["prompt_id"])
    own = {"client_id": None, "prompt_id": None}  # each submission has its own
    assert set(direct) == set(http) and direct | own == http | own
    assert sent_direct["prompt"] == sent_http["prompt"]


def test_direct_invocation_errors_come_in_the_api_envelope(aws, comfy):
    job = {"workflow": "no_such_flow", "prompt": "x"}
    status, http = invoke(
        "run_workflow",
        event("run_workflow", pathParameters={"workflow_name": "no_such_flow"},
              body=json.dumps({"prompt": "x"})),
    )
    assert run(job) == http == {"error": "Workflow 'no_such_flow' not found", "status_code": 404}
    assert status == 404 and drain(aws.dlq) == []  # the caller has the answer


def test_direct_invocation_with_comfyui_down_raises(aws, comfy):
    with pytest.raises(ComfyUIUnreachableError):
        run({"workflow": "text_label", "job_id": "down-direct"})


def test_http_submission_is_announced_too(aws, comfy):
    status, body = invoke("run_workflow", event("run_workflow"))
    assert status == 200
    (submitted,) = events_in(aws.published)
    assert submitted["detail-type"] == "ComfyUI Prompt Submitted"
    assert (submitted["detail"]["trigger"], submitted["detail"]["job_id"]) == ("api", None)
    assert submitted["detail"]["prompt_id"] == body["prompt_id"]


# -- webhook_url on acceptance -----------------------------------------------------------
@pytest.fixture
def webhooks_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET_PARAMETER", "comfy/webhook-secret")
    get_settings.cache_clear()

    def resolve(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        address = {"hooks.example.com": "93.184.215.14", "internal.example.com": "10.0.3.7"}[host]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)


def test_job_with_a_public_webhook_url_records_it_with_the_prompt(aws, comfy, webhooks_on):
    url = "https://hooks.example.com/comfy?token=abc"
    answer = run(sqs_event(("m-1", {"workflow": "text_label", "webhook_url": url})))
    assert answer == {"batchItemFailures": []}
    assert recorded_job(posts(comfy)[0])["webhook_url"] == url


def test_job_with_a_webhook_to_a_private_address_is_rejected(aws, comfy, webhooks_on):
    job = {"workflow": "text_label", "webhook_url": "https://internal.example.com/hook"}
    assert run(sqs_event(("m-1", job))) == {"batchItemFailures": []}
    (rejected,) = drain(aws.dlq)
    assert "private" in rejected["attributes"]["reason"]["StringValue"]
    assert posts(comfy) == []


@pytest.mark.parametrize("kind", ["sqs", "s3", "eventbridge", "direct"])
def test_each_sample_event_is_recognised_as_its_trigger(kind):
    assert triggers.event_kind(event(f"run_job_{kind}")) == kind
