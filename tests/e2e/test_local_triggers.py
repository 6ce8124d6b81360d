"""run_job's event triggers in the local stack, as a user drives them with the AWS CLI or
boto3: a message on the jobs queue, a job file put under jobs/, a `put-events` on the bus.
The real handler runs each time (through the stack's invoker); ComfyUI is the stand-in."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from devtools.dev import LocalStack
from tests.support.waiting import wait_for

CEILING = 60  # seconds; a stuck test fails after this, a working one returns at once
MAX_RECEIVES = 2


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    # Failed messages come back at once (not after the queue's 720 s), and move to the
    # dead-letter queue after two receives: the same code paths, in test time.
    with LocalStack(port=0, standin_delay=0.05, parameter_overrides={"JobMaxReceiveCount": str(MAX_RECEIVES)},
                    retry_seconds=0) as stack:
        yield stack


def queue_url(stack: LocalStack, logical_id: str) -> str:
    assert stack.template is not None
    return str(stack.template.ref(logical_id))


def known_to_comfyui(stack: LocalStack, job_id: str) -> bool:
    """Whether ComfyUI got a prompt from this job (its id travels in the prompt's extra_data)."""
    base = stack.standin.base_url
    return any(job_id in requests.get(f"{base}/{path}", timeout=10).text for path in ("queue", "history"))


def messages(stack: LocalStack, url: str) -> list[dict[str, Any]]:
    """Every message now visible on the queue (received and deleted)."""
    sqs, found = stack.client("sqs"), []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                       MessageAttributeNames=["All"]).get("Messages"):
        for message in batch:
            found.append(message)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return found


def job(workflow: str = "empty_save", **more: Any) -> dict[str, Any]:
    return {"workflow": workflow, "job_id": f"job-{uuid.uuid4()}", **more}


def test_a_queued_batch_runs_its_jobs_and_rejects_the_bad_one_to_the_dead_letter_queue(stack: LocalStack) -> None:
    good = job()
    stack.client("sqs").send_message_batch(QueueUrl=queue_url(stack, "JobsQueue"), Entries=[
        {"Id": "good", "MessageBody": json.dumps(good)},
        {"Id": "bad", "MessageBody": "{not json"},
    ])
    wait_for(lambda: known_to_comfyui(stack, good["job_id"]), CEILING, interval=0.1, what="the queued job")
    rejected = wait_for(lambda: messages(stack, queue_url(stack, "JobsDeadLetterQueue")), CEILING,
                        interval=0.1, what="the rejected job in the dead-letter queue")
    assert [message["Body"] for message in rejected] == ["{not json"]
    assert rejected[0]["MessageAttributes"]["reason"]["StringValue"] == "Job is not valid JSON"
    # Both were consumed: the good one ran, the bad one moved by the handler itself.
    assert messages(stack, queue_url(stack, "JobsQueue")) == []


def test_a_job_that_keeps_failing_moves_to_the_dead_letter_queue_after_the_receive_count(stack: LocalStack) -> None:
    # An input in an archive storage class cannot be read until restored: S3 trouble, which
    # the job retries (a batch item failure) instead of rejecting.
    image_bucket = stack.buckets["ImageBucket"]
    stack.client("s3").put_object(Bucket=image_bucket, Key="inputs/cold.png", Body=b"\x89PNG\r\n\x1a\n",
                                  StorageClass="GLACIER")
    failing = job("img2img_invert", image={"s3": f"s3://{image_bucket}/inputs/cold.png"})
    good = job()
    stack.client("sqs").send_message_batch(QueueUrl=queue_url(stack, "JobsQueue"), Entries=[
        {"Id": "failing", "MessageBody": json.dumps(failing)},
        {"Id": "good", "MessageBody": json.dumps(good)},
    ])
    moved = wait_for(lambda: messages(stack, queue_url(stack, "JobsDeadLetterQueue")), CEILING,
                     interval=0.1, what="the failing job in the dead-letter queue")
    # Moved by the queue's redrive policy, as sent: no rejection reason attached.
    assert [json.loads(message["Body"]) for message in moved] == [failing]
    assert "reason" not in (moved[0].get("MessageAttributes") or {})
    # Its batch neighbour was not held back or repeated by the failure.
    assert known_to_comfyui(stack, good["job_id"])
    assert not known_to_comfyui(stack, failing["job_id"])
    assert messages(stack, queue_url(stack, "JobsQueue")) == []


def test_a_job_file_runs_and_its_result_is_written_beside_it(stack: LocalStack) -> None:
    s3, bucket = stack.client("s3"), stack.buckets["WorkflowBucket"]
    name = f"jobs/{uuid.uuid4()}"
    s3.put_object(Bucket=bucket, Key=f"{name}.json", Body=json.dumps({"workflow": "empty_save"}).encode())

    def result() -> dict[str, Any] | None:
        try:
            return json.loads(s3.get_object(Bucket=bucket, Key=f"{name}.result.json")["Body"].read())
        except s3.exceptions.NoSuchKey:
            return None

    written = wait_for(result, CEILING, interval=0.1, what="the job's result file")
    assert written["job_key"] == f"{name}.json" and written["workflow"] == "empty_save"
    assert written["prompt_id"]
    # The job id is the object version the event named: the bucket is versioned as deployed.
    version = s3.head_object(Bucket=bucket, Key=f"{name}.json")["VersionId"]
    assert written["job_id"] == f"s3:{bucket}/{name}.json@{version}"


def test_put_events_runs_a_matching_job_and_ignores_an_event_the_rules_do_not_match(stack: LocalStack) -> None:
    ignored, matched = job(), job()
    stack.client("events").put_events(Entries=[
        {"Source": "shop.orders", "DetailType": "Order Placed", "Detail": json.dumps(ignored)},
        {"Source": "shop.orders", "DetailType": "Run ComfyUI Workflow", "Detail": json.dumps(matched)},
    ])
    wait_for(lambda: known_to_comfyui(stack, matched["job_id"]), CEILING, interval=0.1, what="the matched job")
    # Both were put at once and events are delivered in order: the other one had its chance.
    assert not known_to_comfyui(stack, ignored["job_id"])


def test_an_event_whose_job_keeps_failing_lands_in_the_on_failure_destination(stack: LocalStack) -> None:
    """An EventBridge job is an asynchronous invocation: retried MaximumRetryAttempts times,
    then Lambda's failure record goes to the EventInvokeConfig destination (the jobs DLQ)."""
    image_bucket = stack.buckets["ImageBucket"]
    stack.client("s3").put_object(Bucket=image_bucket, Key="inputs/frozen.png", Body=b"\x89PNG\r\n\x1a\n",
                                  StorageClass="GLACIER")
    failing = job("img2img_invert", image={"s3": f"s3://{image_bucket}/inputs/frozen.png"})
    stack.client("events").put_events(Entries=[
        {"Source": "shop.orders", "DetailType": "Run ComfyUI Workflow", "Detail": json.dumps(failing)},
    ])
    landed = wait_for(lambda: messages(stack, queue_url(stack, "JobsDeadLetterQueue")), CEILING,
                      interval=0.1, what="the failure record in the dead-letter queue")
    record = json.loads(landed[0]["Body"])
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3  # MaximumRetryAttempts: 2
    assert record["requestPayload"]["detail"] == failing
    assert record["responsePayload"]["errorType"] == "StorageError"
